"""Typed configuration loaded from YAML presets.

Presets keep the seed's key names (``hierarchical_features: {high_level_lookback, ...}``) so that
configs written for the original design load unchanged. Unknown keys are an error: a typo must
not silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hrm_core.core.errors import ConfigError
from hrm_core.core.vocabulary import RL_ALGORITHMS

DEFAULT_CONFIG = "configs/hrm_cpu_small.yaml"


def hrm_home() -> Path:
    """The state folder: ``$HRM_HOME`` or ``.hrm`` in the current directory."""
    return Path(os.environ.get("HRM_HOME", ".hrm")).resolve()


"""The preset a run uses when none is named: the CPU preset, sized for a laptop."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the bars come from."""

    source: Literal["sample", "csv", "parquet", "s3", "yfinance"] = "sample"
    path: str | None = None
    symbols: list[str] | None = None
    interval: str = "1d"
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _path_for_files(self) -> DataConfig:
        if self.source in ("csv", "parquet", "s3") and not self.path:
            raise ValueError(f"data.source '{self.source}' needs data.path (a file, folder or s3:// URI)")
        if self.source == "yfinance" and not self.symbols:
            raise ValueError("data.source 'yfinance' needs data.symbols, e.g. [SPY, QQQ]")
        return self


class ValidationConfig(_Strict):
    """Thresholds of the OHLCV validation suite."""

    max_quarantine_share: float = Field(0.01, ge=0.0, le=1.0)
    outlier_sigmas: float = Field(8.0, gt=0.0)
    gap_factor: float = Field(3.5, gt=1.0)


class HierarchicalFeaturesConfig(_Strict):
    """The seed's feature block: which indicators feed the strategic (H) and tactical (L) inputs."""

    high_level_lookback: int = Field(100, gt=0)
    low_level_lookback: int = Field(20, gt=0)
    strategic_indicators: list[str] = ["sma_50", "sma_200", "atr_20", "regime_indicator"]
    tactical_indicators: list[str] = ["rsi_14", "macd", "bb_squeeze", "momentum_5"]

    @model_validator(mode="after")
    def _known_indicators(self) -> HierarchicalFeaturesConfig:
        from hrm_core.core.feature_registry import INDICATORS

        for key in ("strategic_indicators", "tactical_indicators"):
            unknown = [name for name in getattr(self, key) if name not in INDICATORS]
            if unknown:
                raise ValueError(
                    f"hierarchical_features.{key}: unknown indicator {unknown[0]!r}; "
                    f"known: {', '.join(sorted(INDICATORS))}"
                )
        return self


class LabelConfig(_Strict):
    """Forward-return horizons (bars) for deep supervision, and the task-tag window."""

    horizons: list[int] = [1, 10, 50, 100]
    tag_horizon: int = Field(10, gt=1)

    @field_validator("horizons")
    @classmethod
    def _positive_sorted(cls, horizons: list[int]) -> list[int]:
        if not horizons or any(h <= 0 for h in horizons):
            raise ValueError("labels.horizons must be a non-empty list of positive bar counts")
        return sorted(set(horizons))


class SplitConfig(_Strict):
    """Walk-forward folds: the last ``test_fraction`` of time is cut into ``n_folds`` test blocks."""

    n_folds: int = Field(4, ge=1)
    test_fraction: float = Field(0.4, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    embargo_bars: int | None = Field(None, ge=0)


class ModelConfig(_Strict):
    """The HRM itself, with the seed's key names. ``gradient``: ``one_step`` (the paper's O(1)
    memory approximation), ``last_cycle`` (backpropagate through the last full H cycle) or
    ``full`` (through every cycle; for ablations and the memory comparison). ``architecture``
    swaps the H/L core for a baseline of about equal size trained the same way: ``flat`` (one
    transformer pass) or ``gru`` (one recurrence); ``hmtr`` / ``hmtr_gru`` is the H-MTR, a master
    over one worker head per task on the HRM (or GRU) backbone (``rl/hmtr.py``)."""

    architecture: Literal["hrm", "flat", "gru", "hmtr", "hmtr_gru"] = "hrm"
    H_cycles: int = Field(2, ge=1)
    L_cycles: int = Field(2, ge=1)
    H_layers: int = Field(2, ge=1)
    L_layers: int = Field(2, ge=1)
    hidden_size: int = Field(64, ge=8)
    num_heads: int = Field(4, ge=1)
    expansion: float = Field(2.0, gt=0)
    h_pool: int = Field(10, ge=1)
    halt_max_steps: int = Field(4, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0.0, le=1.0)
    gradient: Literal["one_step", "last_cycle", "full"] = "one_step"
    h_update_interval: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must split into num_heads ({self.num_heads}) "
                "heads of even size, e.g. hidden_size 64 with num_heads 4"
            )
        return self


class TradingConfig(_Strict):
    """Execution and risk settings shared by the training loss, the environments and backtests.
    The policy's target exposure is capped by the sizing rule and moved through a no-trade band
    (``model/exposure.py``). ``exit_rules: atr`` puts a stop at ``risk_multiplier`` and a target at
    ``reward_multiplier`` ATRs on every entry: fixed rules, not learned, so they are off by
    default, and when on, buy-and-hold is also reported under them."""

    risk_multiplier: float = Field(1.5, gt=0)
    reward_multiplier: float = Field(2.0, gt=0)
    exit_rules: Literal["none", "atr"] = "none"
    position_sizing_method: Literal["fixed_fraction", "volatility_adjusted"] = "fixed_fraction"
    max_position_size: float = Field(1.0, gt=0)
    risk_per_trade: float = Field(0.01, gt=0)
    no_trade_band: float = Field(0.05, ge=0)
    commission: float = Field(0.0005, ge=0)
    fixed_fee: float = Field(0.0, ge=0)
    slippage: float = Field(0.0002, ge=0)
    borrow_rate: float = Field(0.0, ge=0)
    initial_capital: float = Field(100_000.0, gt=0)
    periods_per_year: float = Field(252.0, gt=0)


class PolicyConfig(_Strict):
    """The policy is a benchmark a user could simply hold plus a learned, bounded tilt
    (``model/exposure.py``): target = clip(benchmark + max_tilt · tilt, ±cap), tilt in [−1, 1].
    ``benchmark``: ``volatility_targeted`` (long, scaled to ``target_volatility`` over the last
    ``volatility_window`` returns, capped at ``max_position_size``; Moreira and Muir), ``buy_and_hold``
    (long ``max_position_size``) or ``flat`` (absolute-return use, e.g. FX). The tilt head starts at
    zero, so an untrained model is exactly the benchmark; a tilt is deployed only when validation
    shows it pays (``min_tilt_evidence`` standard errors of the validation active Sharpe, deflated
    for the candidates tried)."""

    benchmark: Literal["volatility_targeted", "buy_and_hold", "flat"] = "volatility_targeted"
    max_tilt: float = Field(1.0, gt=0)
    target_volatility: float = Field(0.15, gt=0)
    volatility_window: int = Field(20, ge=2)
    min_tilt_evidence: float = Field(1.0, ge=0)


class LossWeights(_Strict):
    """L = −active·A + risk_aversion/2·V + turnover·T + tilt_l2·K + outcome·L_outcome + q·L_Q, with A
    and V the annualised mean and variance of the active net return against the benchmark pooled
    over the batch, T the turnover of the raw targets and K the mean squared tilt
    (``training/losses.py``). The trading weights are ten times their optimum's ratios (1, 2, 0.25,
    0.01) so that the trading loss, not the Q loss, steers the shared backbone (a planted edge's test
    Sharpe went from 0.1–1.8 to 1.7–2.0 over two seeds, ``benchmarks/bench_learning.py``); the
    raw-target turnover is charged at a quarter of the cost rate, since at the full rate it doubled
    every executed cost."""

    active: float = Field(10.0, ge=0)
    risk_aversion: float = Field(20.0, ge=0)
    turnover: float = Field(2.5, ge=0)
    tilt_l2: float = Field(0.1, ge=0)
    outcome: float = Field(0.1, ge=0)
    q: float = Field(0.5, ge=0)


class StageConfig(_Strict):
    """One curriculum phase: its cycles, whether ACT halting is learned, and its budget. The name
    becomes part of the stage's asset name (``hrm_stage_1_basic``)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    H_cycles: int = Field(ge=1)
    L_cycles: int = Field(ge=1)
    act: bool = False
    episodes: int = Field(ge=1)


class TrainingConfig(_Strict):
    """Trainer settings. An episode is one chunk of ``chunk_bars`` consecutive decisions."""

    deep_supervision_segments: int = Field(4, ge=1)
    loss_weights: LossWeights = LossWeights()
    outcome_horizon: int = Field(10, ge=2)  # bars of realised path behind p_up, volatility, regime
    chunk_bars: int = Field(128, ge=8)
    batch_chunks: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(25, ge=1)
    patience: int = Field(4, ge=1)
    selection_ema: float = Field(
        0.5, gt=0, le=1
    )  # weight of the newest validation Sharpe in the smoothed score
    checkpoint_every: int = Field(50, ge=1)
    checkpoint_seconds: float = Field(60.0, gt=0)  # also checkpoint this often: slow stages resume too
    fold: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    processes: int = Field(
        1, ge=1
    )  # data-parallel processes per stage (torchrun; batch_chunks splits over them)
    bf16: bool = True
    task_mix: dict[str, float] = {"trend": 0.4, "mean_reversion": 0.3, "breakout": 0.2, "adverse": 0.1}
    min_task_chunks: int = Field(50, ge=0)
    synthetic_bars: int = Field(2000, ge=300)
    ewc_strength: float = Field(200.0, ge=0)  # retraining from production: EWC weight (Fisher of mean 1)
    curriculum: list[StageConfig] = Field(
        default=[
            StageConfig(name="basic", H_cycles=1, L_cycles=3, episodes=400),
            StageConfig(name="advanced", H_cycles=2, L_cycles=5, episodes=400),
            StageConfig(name="full", H_cycles=3, L_cycles=7, act=True, episodes=400),
        ],
        min_length=1,
    )

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> TrainingConfig:
        if self.batch_chunks % self.processes:
            example = self.processes * max(1, self.batch_chunks // self.processes)
            raise ValueError(
                f"training.batch_chunks {self.batch_chunks} does not split over {self.processes} processes; "
                f"use a multiple, e.g. batch_chunks: {example}"
            )
        return self

    @field_validator("task_mix")
    @classmethod
    def _known_tasks(cls, mix: dict[str, float]) -> dict[str, float]:
        from hrm_core.core.vocabulary import TASKS

        known = set(TASKS)
        unknown = set(mix) - known
        if unknown or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"training.task_mix: non-negative weights for {sorted(known)}, e.g. trend: 0.4")
        return mix


class PromotionConfig(_Strict):
    """When a candidate replaces the production model (out-of-sample, same fold, net of costs):
    its Sharpe beats production's (buy-and-hold's when there is none), its max drawdown is at most
    ``max_drawdown_margin`` deeper, and its PSR is at least ``min_psr``. With ``evaluation:
    all_folds`` the configuration must also beat buy-and-hold across the latest evaluation of the
    same configuration (``hrm-trading evaluate``): the paired Sharpe difference's 95 % interval
    above 0 over every fold and seed, not one fold."""

    min_psr: float = Field(0.5, ge=0.0, le=1.0)
    max_drawdown_margin: float = Field(0.05, ge=0.0)
    evaluation: Literal["fold", "all_folds"] = "fold"


class MonitoringConfig(_Strict):
    """Drift monitoring: the last ``drift_window_bars`` bars per symbol against the production
    model's training features; the check fails when more than ``max_drift_share`` of the model's
    features drift."""

    drift_window_bars: int = Field(250, ge=20)
    max_drift_share: float = Field(0.5, ge=0.0, le=1.0)


class EvaluationConfig(_Strict):
    """``hrm-trading evaluate``: which models every (fold, seed) cell trains, how many seeds per
    fold, and whether promotion needs the candidate to win across that evaluation."""

    models: list[
        Literal[("hrm", "flat", "gru", "hrm_no_act", "hrm_last_cycle", "hrm_blind", *RL_ALGORITHMS)]
    ] = [
        "hrm",
        "flat",
        "gru",
    ]
    seeds: int = Field(3, ge=1)


class RLConfig(_Strict):
    """Reinforcement-learning fine-tuning (``hrm_core/rl/``) on the vector env. An *update* collects
    ``n_envs`` × ``rollout_bars`` decisions, then runs ``epochs`` passes of ``minibatches`` over
    them. The policy is a Gaussian over the model's signal (target exposure / cap), its mean the
    model's own signal, so the deterministic policy served and backtested is what RL trained.
    ``start``: from the supervised curriculum's model or from fresh weights. ``reward``: ``pnl``
    (net simple return), ``differential_sharpe`` (Moody & Saffell) or ``hierarchical`` (the seed's:
    tactical entry/exit quality each bar, strategic risk-adjusted return less drawdown every
    ``strategic_interval`` bars). GRPO groups ``group_size`` rollouts from one start bar;
    ``kl_coef`` weighs the KL to the reference (the starting) policy. H-MTR pre-trains each
    worker for ``worker_updates`` on its task, with EWC (``ewc_strength``) across task phases."""

    enabled: bool = False  # the pipeline's optional rl_finetune asset
    algorithm: Literal[RL_ALGORITHMS] = "ppo"
    start: Literal["supervised", "scratch"] = "supervised"
    reward: Literal["pnl", "differential_sharpe", "hierarchical"] = "pnl"
    updates: int = Field(100, ge=1)
    n_envs: int = Field(32, ge=2)
    rollout_bars: int = Field(64, ge=2)
    epochs: int = Field(4, ge=1)
    minibatches: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    anneal_lr: bool = True
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    value_coef: float = Field(0.5, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    kl_coef: float = Field(0.05, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    init_std: float = Field(0.3, gt=0)
    group_size: int = Field(8, ge=2)
    reward_scale: float = Field(100.0, gt=0)  # returns are ~1e-2: scaled so values and advantages are O(1)
    strategic_interval: int = Field(10, ge=1)
    drawdown_penalty: float = Field(1.0, ge=0)
    differential_sharpe_eta: float = Field(0.01, gt=0, lt=1)
    worker_updates: int = Field(40, ge=1)
    ewc_strength: float = Field(50.0, ge=0)
    checkpoint_every: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _groups_fill_envs(self) -> RLConfig:
        if self.n_envs % self.group_size:
            raise ValueError(
                f"rl.n_envs ({self.n_envs}) must be a multiple of rl.group_size ({self.group_size}), "
                "e.g. n_envs 32 with group_size 8: GRPO runs n_envs / group_size groups"
            )
        return self


class HRMConfig(_Strict):
    """The whole project configuration."""

    seed: int = 42
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    hierarchical_features: HierarchicalFeaturesConfig = HierarchicalFeaturesConfig()
    labels: LabelConfig = LabelConfig()
    splits: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    trading: TradingConfig = TradingConfig()
    policy: PolicyConfig = PolicyConfig()
    training: TrainingConfig = TrainingConfig()
    promotion: PromotionConfig = PromotionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    rl: RLConfig = RLConfig()

    @model_validator(mode="after")
    def _embargo_covers_labels(self) -> HRMConfig:
        longest = max(self.labels.horizons)
        if self.splits.embargo_bars is not None and self.splits.embargo_bars < longest:
            raise ValueError(
                f"splits.embargo_bars ({self.splits.embargo_bars}) must be at least the longest "
                f"label horizon ({longest})"
            )
        return self

    @property
    def embargo_bars(self) -> int:
        """Bars left out between train and the next part: at least the longest label horizon."""
        if self.splits.embargo_bars is not None:
            return self.splits.embargo_bars
        return max(self.labels.horizons) + 1


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with each section of ``overrides`` laid over it key by key (a value that is not a
    section replaces the base's)."""
    out = dict(base)
    for section, values in overrides.items():
        both = isinstance(values, dict) and isinstance(out.get(section), dict)
        out[section] = {**out[section], **values} if both else values
    return out


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML preset's sections as plain data. ``extends: other.yaml`` (relative to the preset's
    folder) starts from that preset and overrides its sections key by key."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, e.g. 'seed: 42'")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    return merged(read_preset(path.parent / str(base), (*_seen, path.resolve())), raw)


def load_config(path: str | Path | None = None, **overrides: dict) -> HRMConfig:
    """Load a YAML preset (or the defaults) and apply section overrides such as ``data={...}``."""
    raw = merged(read_preset(path) if path is not None else {}, overrides)
    try:
        return HRMConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{path or 'config'}: {where}: {first['msg']}") from exc
