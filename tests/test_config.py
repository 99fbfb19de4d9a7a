"""Config presets: the seed's keys load as written, unknown keys and bad values are errors."""

from pathlib import Path

import pytest

from hrm_core.core.config import load_config
from hrm_core.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_cpu_preset_loads_with_the_seeds_feature_keys():
    config = load_config(REPO / "configs" / "hrm_cpu_small.yaml")
    hf = config.hierarchical_features
    assert (hf.high_level_lookback, hf.low_level_lookback) == (100, 20)
    assert hf.strategic_indicators == ["sma_50", "sma_200", "atr_20", "regime_indicator"]
    assert hf.tactical_indicators == ["rsi_14", "macd", "bb_squeeze", "momentum_5"]
    assert config.embargo_bars == 101


def test_gpu_preset_is_the_seeds_model_and_curriculum():
    config = load_config(REPO / "configs" / "hrm_gpu.yaml")
    m = config.model
    assert (m.hidden_size, m.num_heads, m.H_layers, m.L_layers) == (256, 8, 4, 3)
    assert [(s.H_cycles, s.L_cycles, s.act, s.episodes) for s in config.training.curriculum] == [
        (1, 3, False, 1000),
        (2, 5, False, 2000),
        (3, 7, True, 3000),
    ]
    assert config.training.bf16 and config.training.device == "auto"
    assert (config.trading.risk_multiplier, config.trading.reward_multiplier) == (1.5, 2.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {hidden_size: 30, num_heads: 4}", "even size"),
        ("model: {H_cylces: 2}", "H_cylces"),
        ("training: {task_mix: {momentum: 1.0}}", "task_mix"),
        ("hierarchical_features: {high_level_lookbak: 5}", "high_level_lookbak"),
        ("hierarchical_features: {tactical_indicators: [rsi_99]}", "unknown indicator 'rsi_99'"),
        ("data: {source: csv}", "needs data.path"),
        ("splits: {embargo_bars: 3}", "at least the longest label horizon"),
        ("- just a list", "top level must be a mapping"),
    ],
)
def test_bad_configs_are_errors_that_name_the_file(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_a_preset_extends_another_section_by_section(tmp_path):
    smoke = load_config(REPO / "configs" / "hrm_smoke.yaml")
    cpu = load_config(REPO / "configs" / "hrm_cpu_small.yaml")
    assert smoke.model.hidden_size == 16 and smoke.model.num_heads == 2
    assert smoke.model.H_layers == cpu.model.H_layers  # a key the smoke preset leaves alone
    assert smoke.trading == cpu.trading  # a section it leaves alone
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "c.yaml")
