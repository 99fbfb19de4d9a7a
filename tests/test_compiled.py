"""The numba fast path decides as the eager HRM does: same head outputs, same halting, same carry,
and the streaming agent's decisions through it equal the eager agent's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_core.core.config import HRMConfig, ModelConfig, load_config
from hrm_core.core.feature_registry import model_features
from hrm_core.model.act import run_segments
from hrm_core.model.agent import HRMTradingAgent, outputs_of
from hrm_core.model.build import build_model_for
from hrm_core.model.compiled import CompiledHRM, _exp
from hrm_core.model.hrm import HRMTrader
from hrm_core.model.trader import Carry, MarketInputs, TraderShape

HIGH, LOW, N_STRATEGIC, N_TACTICAL = 45, 12, 5, 6  # 45 bars pool to 5 tokens of 10, zero-padded
SHAPE = TraderShape(N_STRATEGIC, N_TACTICAL, HIGH, LOW)


def random_hrm(layers: int = 1) -> HRMTrader:
    """An HRM whose heads all read the state, and whose Q head halts some samples early."""
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, num_heads=4, H_layers=layers, L_layers=layers, h_pool=10)
    model = HRMTrader(config, SHAPE).eval()
    with torch.no_grad():
        for name, p in model.heads.named_parameters():
            if name != "hold":  # the linear heads; the hold weight is set where a test needs it
                p.normal_(0.0, 0.5)
    model.set_cycles(2, 3)
    return model


def windows(batch: int, seed: int) -> MarketInputs:
    g = torch.Generator().manual_seed(seed)
    return MarketInputs(
        strategic=torch.randn(batch, HIGH, N_STRATEGIC, generator=g),
        tactical=torch.randn(batch, LOW, N_TACTICAL, generator=g),
    )


def test_the_vectorised_exponential_is_accurate_to_float32_over_the_range_used():
    x = np.linspace(-87.0, 87.0, 100_001, dtype=np.float32)
    y = x.copy()
    _exp(y)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(y - exact) / exact) < 1e-6


@pytest.mark.parametrize("layers, act", [(1, True), (2, True), (1, False)])
def test_the_kernels_compute_the_eager_segments_halting_and_carry(layers, act):
    model = random_hrm(layers)
    inputs = windows(batch=16, seed=layers)
    with torch.no_grad():
        run = run_segments(model, inputs, 6, act)
    raw, steps, z_H = CompiledHRM.from_model(model).run(
        inputs.strategic.numpy(), inputs.tactical.numpy(), 6, act
    )
    assert steps.tolist() == run.steps.tolist()
    if act:
        assert len(set(steps.tolist())) > 1  # samples halted at different segments
    out = outputs_of(raw)
    for name in ("tilt_logit", "up_logit", "log_volatility", "regime_logits", "q_halt", "q_continue"):
        torch.testing.assert_close(getattr(out, name), getattr(run.final, name), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(z_H), run.carry.z_H, atol=2e-5, rtol=1e-4)
    dropped, dropped_steps, _ = CompiledHRM.from_model(model).run(
        inputs.strategic.numpy(), inputs.tactical.numpy(), 6, act, keep_carry=False
    )  # serving's way: a halted sample is not computed further
    assert np.array_equal(dropped, raw) and np.array_equal(dropped_steps, steps)


PRESETS = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_the_kernels_equal_the_eager_model_at_every_stage_of_every_shape_preset(preset):
    """The kernels are a second, hand-written forward (needed: eager torch takes ~86 ms a decision
    at batch 1 on CPU, and the served model decides without torch), so each preset's own model —
    its widths, layers, lookbacks and features, at each curriculum stage's cycles and its
    ``halt_max_steps`` — must decide as the eager model does."""
    config = load_config(preset)
    hf = config.hierarchical_features
    features = model_features(hf.strategic_indicators, hf.tactical_indicators)
    names = (tuple(features["strategic"]), tuple(features["tactical"]))
    torch.manual_seed(0)
    model = build_model_for(config, *names).eval()
    with torch.no_grad():
        for name, p in model.heads.named_parameters():
            if name != "hold":
                p.normal_(0.0, 0.5)  # heads that read the state, and a Q head that halts some samples
    g = torch.Generator().manual_seed(1)
    inputs = MarketInputs(
        strategic=torch.randn(3, hf.high_level_lookback, len(names[0]), generator=g),
        tactical=torch.randn(3, hf.low_level_lookback, len(names[1]), generator=g),
    )
    for stage in config.training.curriculum:
        model.set_cycles(stage.H_cycles, stage.L_cycles)
        segments = config.model.halt_max_steps
        with torch.no_grad():
            run = run_segments(model, inputs, segments, act=True)
        raw, steps, z_H = CompiledHRM.from_model(model).run(
            inputs.strategic.numpy(), inputs.tactical.numpy(), segments, True
        )
        assert steps.tolist() == run.steps.tolist(), stage.name
        out = outputs_of(raw)
        for name in ("tilt_logit", "up_logit", "log_volatility", "regime_logits", "q_halt", "q_continue"):
            torch.testing.assert_close(getattr(out, name), getattr(run.final, name), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(z_H), run.carry.z_H, atol=1e-5, rtol=1e-4)


def test_the_kernels_keep_h_fixed_between_refreshes_as_the_eager_segment_does():
    model = random_hrm()
    inputs = windows(batch=4, seed=3)
    z_H = torch.randn(4, model.h_tokens, 32)
    carry = Carry(z_H=z_H, z_L=model.initial_carry(4).z_L)
    with torch.no_grad():
        run = run_segments(model, inputs, 3, act=False, carry=carry, update_H=False)
    raw, _, kept = CompiledHRM.from_model(model).run(
        inputs.strategic.numpy(), inputs.tactical.numpy(), 3, False, z_H=z_H.numpy(), update_H=False
    )
    torch.testing.assert_close(torch.from_numpy(kept), z_H)
    torch.testing.assert_close(outputs_of(raw).tilt_logit, run.final.tilt_logit, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("interval", [1, 3])
def test_the_compiled_agent_streams_the_eager_agents_decisions(interval):
    model = random_hrm()
    config = HRMConfig(
        model={"hidden_size": 32, "num_heads": 4, "halt_max_steps": 4, "h_update_interval": interval}
    )
    fast, eager = (
        HRMTradingAgent(model, config, act=True),
        HRMTradingAgent(model, config, act=True, compiled=False),
    )
    assert fast.compiled is not None and eager.compiled is None
    held_fast = held_eager = torch.zeros(2)
    cap, benchmark = torch.tensor([1.0, 0.5]), torch.tensor([0.7, 0.3])
    with torch.no_grad():
        model.heads.hold.fill_(1.0)
    for bar in range(8):
        inputs = windows(batch=2, seed=10 + bar)
        a, b = (
            fast.decide(inputs, cap, held_fast, benchmark),
            eager.decide(inputs, cap, held_eager, benchmark),
        )
        assert a.action_index.tolist() == b.action_index.tolist()
        assert a.segments.tolist() == b.segments.tolist()
        torch.testing.assert_close(a.position, b.position, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.confidence, b.confidence, atol=2e-5, rtol=1e-4)
        held_fast, held_eager = a.position, b.position


def test_windows_gathered_from_the_strided_view_equal_indexing_rows():
    from hrm_core.dataset.market import gather_windows, window_view

    features = torch.randn(300, 7)
    rows = torch.tensor([99, 100, 250, 299, 150])
    expected = features[rows[:, None] + torch.arange(-99, 1)]
    torch.testing.assert_close(gather_windows(window_view(features, 100), rows), expected, rtol=0, atol=0)
    with pytest.raises(IndexError):  # a window reaching before the first row is refused, not wrapped
        gather_windows(window_view(features, 100), torch.tensor([98]))


def test_the_setup_step_compiles_every_kernel_family_without_error():
    """`make setup` runs ``hrm_core.workflows.warm``: a break there would stop every fresh clone."""
    from hrm_core.workflows.warm import warm

    assert set(warm()) == {"features", "engine", "served model"}
