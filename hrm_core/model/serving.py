"""The served model: a registered version's weights and spec in, one row of decision columns per
sample out.

Format, chosen on measurements (README, "Serving"): the weights as ``weights.npz`` (numpy arrays
named as in the state dict, read with ``allow_pickle=False``) and ``spec.json`` (architecture,
config, cycles, features). The torch.export program it replaces unrolled every ACT segment and
cycle (6,548 nodes) and took 20 s to deserialise; these files load in milliseconds and the HRM
decides through its numba kernels (``compiled.py``) without importing torch. Other architectures
(the baselines, the H-MTR) are rebuilt from the config and decide through the eager agent.

A decision is what the streaming agent makes on a fresh bar: H starts afresh, ACT halts on the Q
head within ``halt_max_steps`` segments, the tilt reads the tilt held, and the target exposure
(the benchmark's exposure at the bar plus the bounded tilt) goes through the no-trade band from the
exposure held. Every column is a trained output or follows from one; a model registered with its
tilt gate off (no skill shown on validation) answers the benchmark.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hrm_core.core.config import HRMConfig, PolicyConfig
from hrm_core.core.vocabulary import REGIMES
from hrm_core.model.compiled import LOG_VOLATILITY, REGIME_0, TILT_LOGIT, UP_LOGIT, CompiledHRM, HRMShape
from hrm_core.model.exposure import action_of, decide_exposure, direction_confidence

OUTPUT_COLUMNS = (
    "action",
    "tilt",
    "target_exposure",
    "position",
    "confidence",
    "p_up",
    "market_risk",
    *(f"regime_{name}" for name in REGIMES),
    "segments",
)
INPUT_NAMES = ("strategic", "tactical", "cap", "held", "benchmark")
PARALLEL_BATCH = 64
"""The smallest part of a batch worth a thread of its own (a decision is ~1.5-3 ms of kernels)."""
WEIGHTS_FILE, SPEC_FILE = "weights.npz", "spec.json"


def save_served(folder: Path, model: Any, config: Any) -> tuple[Path, Path]:
    """Write a trained ``TraderBase`` (with its ``HRMConfig``) as the served files; returns their
    paths. Only arrays and JSON are written, so loading them can run no code."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().cpu().float().numpy() for name, t in model.state_dict().items()}
    np.savez(folder / WEIGHTS_FILE, **weights)
    spec = {
        "architecture": config.model.architecture,
        "config": config.model_dump(mode="json"),
        "feature_names": [list(names) for names in model.feature_names],
        "cycles": [model.H_cycles, model.L_cycles],
    }
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    return folder / WEIGHTS_FILE, folder / SPEC_FILE


class ServedModel:
    """Decisions from the served files: ``decide(strategic, tactical, cap, held, benchmark)``."""

    def __init__(self, spec: dict, weights: dict[str, np.ndarray]) -> None:
        self.spec = spec
        config = spec["config"]
        self.segments = config["model"]["halt_max_steps"]
        self.band = config["trading"]["no_trade_band"]
        self.policy = PolicyConfig.model_validate(config.get("policy", {}))
        self.hold_weight = np.float32(weights["heads.hold"])
        self.tilt_gate = np.float32(weights["heads.tilt_gate"])
        hf = config["hierarchical_features"]
        self.lookbacks = (hf["high_level_lookback"], hf["low_level_lookback"])
        self.features = tuple(len(names) for names in spec["feature_names"])
        if spec["architecture"] == "hrm":
            model = config["model"]
            shape = HRMShape(
                hidden_size=model["hidden_size"],
                num_heads=model["num_heads"],
                h_pool=model["h_pool"],
                high_level_lookback=hf["high_level_lookback"],
                low_level_lookback=hf["low_level_lookback"],
                H_cycles=spec["cycles"][0],
                L_cycles=spec["cycles"][1],
            )
            self.compiled, self.agent = CompiledHRM(weights, shape), None
        else:
            self.compiled, self.agent = None, _eager_agent(spec, weights)

    @classmethod
    def load(cls, weights: Path, spec: Path) -> ServedModel:
        with np.load(weights, allow_pickle=False) as arrays:
            state = {name: arrays[name] for name in arrays.files}
        return cls(json.loads(spec.read_text()), state)

    @property
    def tilt_on(self) -> bool:
        """Whether this version trades its tilt (validation showed skill) or the benchmark."""
        return bool(self.tilt_gate)

    def check_inputs(
        self,
        strategic: np.ndarray,
        tactical: np.ndarray,
        cap: np.ndarray,
        held: np.ndarray,
        benchmark: np.ndarray,
    ) -> None:
        """Refuse inputs of the wrong shape or with non-finite values, naming what was expected."""
        (high, low), (n_strategic, n_tactical) = self.lookbacks, self.features
        expected = {
            "strategic": (high, n_strategic),
            "tactical": (low, n_tactical),
            "cap": (),
            "held": (),
            "benchmark": (),
        }
        batch = strategic.shape[0] if strategic.ndim else 0
        for name, array in zip(INPUT_NAMES, (strategic, tactical, cap, held, benchmark), strict=True):
            want = (batch, *expected[name])
            if array.shape != want or batch == 0:
                raise ValueError(f"{name}: expected shape {list(want)} (batch, ...), got {list(array.shape)}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name}: holds a NaN or an infinity")

    def decide(
        self,
        strategic: np.ndarray,
        tactical: np.ndarray,
        cap: np.ndarray,
        held: np.ndarray,
        benchmark: np.ndarray,
    ) -> np.ndarray:
        """strategic [B, high, Fs], tactical [B, low, Ft], cap [B] (the sizing cap), held [B] (the
        exposure held), benchmark [B] (the benchmark's exposure at the bar,
        ``exposure.benchmark_exposure``) -> [B, len(OUTPUT_COLUMNS)] float32; ``action`` indexes
        ``ACTIONS``."""
        arrays = [
            np.ascontiguousarray(a, dtype=np.float32) for a in (strategic, tactical, cap, held, benchmark)
        ]
        self.check_inputs(*arrays)
        strategic, tactical, cap, held, benchmark = arrays
        raw, steps = self.heads(strategic, tactical)
        return self.decide_from_heads(raw, steps, cap, held, benchmark)

    def heads(
        self, strategic: np.ndarray, tactical: np.ndarray, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The network's part of a decision: raw head outputs [B, len(HEAD_OUTPUTS)] and segments
        used [B]. It reads the market windows only (the position held enters after the network),
        so a server computes it once per bar and reuses it for every position asked about.
        ``threads`` > 1 splits a large batch (a universe's snapshot) into that many parts decided at
        once: the kernels release the GIL, and each sample's decision is its own."""
        strategic = np.ascontiguousarray(strategic, dtype=np.float32)
        tactical = np.ascontiguousarray(tactical, dtype=np.float32)
        if self.compiled is None:
            return self.agent(strategic, tactical)
        parts = min(threads, len(strategic) // PARALLEL_BATCH)
        if parts <= 1:
            raw, steps, _ = self.compiled.run(strategic, tactical, self.segments, act=True, keep_carry=False)
            return raw, steps
        splits = np.array_split(np.arange(len(strategic)), parts)
        with ThreadPoolExecutor(parts) as pool:
            done = list(pool.map(lambda rows: self.heads(strategic[rows], tactical[rows]), splits))
        return np.concatenate([raw for raw, _ in done]), np.concatenate([steps for _, steps in done])

    def decide_from_heads(
        self, raw: np.ndarray, steps: np.ndarray, cap: np.ndarray, held: np.ndarray, benchmark: np.ndarray
    ) -> np.ndarray:
        """The decision columns from ``heads``' outputs and the account: cap, held and benchmark
        [B] (float32, as ``decide`` takes them)."""
        cap, held, benchmark = (np.ascontiguousarray(a, dtype=np.float32) for a in (cap, held, benchmark))
        tilt, target, position = decide_exposure(
            raw[:, TILT_LOGIT], held, benchmark, cap, self.hold_weight, self.tilt_gate, self.policy, self.band
        )
        return decision_columns(raw, steps, held, tilt, target, position)


@dataclass(frozen=True)
class LoadedVersion:
    """One registered version, ready to decide, and the metadata it was logged with (normalisation,
    feature names, trading rules)."""

    name: str
    alias: str
    version: str
    model: ServedModel
    meta: dict

    @property
    def label(self) -> str:
        return f"{self.name}@{self.alias}"

    @cached_property
    def config(self) -> HRMConfig:
        """The config the version was trained with: its features, lookbacks, policy and costs."""
        return HRMConfig.model_validate(self.model.spec["config"])


def decision_columns(
    raw: np.ndarray,
    steps: np.ndarray,
    held: np.ndarray,
    tilt: np.ndarray,
    target: np.ndarray,
    position: np.ndarray,
) -> np.ndarray:
    """``OUTPUT_COLUMNS`` from the heads' raw outputs (``compiled.HEAD_OUTPUTS``) and the decided
    exposure (``exposure.decide_exposure``, as the agent decides it): the action that moves there,
    and the heads' probabilities."""
    p_up = 1.0 / (1.0 + np.exp(-raw[:, UP_LOGIT]))
    logits = raw[:, REGIME_0 : REGIME_0 + len(REGIMES)]
    regimes = np.exp(logits - logits.max(axis=1, keepdims=True))
    regimes /= regimes.sum(axis=1, keepdims=True)
    columns = [
        action_of(position, held),
        tilt,
        target,
        position,
        direction_confidence(position, p_up),
        p_up,
        np.exp(raw[:, LOG_VOLATILITY]),
        *regimes.T,
        steps,
    ]
    return np.stack(columns, axis=-1).astype(np.float32)


def _eager_agent(spec: dict, weights: dict[str, np.ndarray]):
    """For architectures without kernels: the model rebuilt from its config, deciding through the
    eager agent. Returns a function of (strategic, tactical) -> (raw head outputs, steps)."""
    import torch

    from hrm_core.model.agent import HRMTradingAgent
    from hrm_core.model.build import build_model_for
    from hrm_core.model.trader import MarketInputs

    config = HRMConfig.model_validate(spec["config"])
    model = build_model_for(config, *spec["feature_names"])
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
    model.set_cycles(*spec["cycles"])
    model.eval()

    def decide(strategic: np.ndarray, tactical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        agent = HRMTradingAgent(model, config, act=True, compiled=False)  # H afresh, as served
        inputs = MarketInputs(torch.from_numpy(strategic), torch.from_numpy(tactical))
        batch = strategic.shape[0]
        decision = agent.decide(inputs, torch.ones(batch), torch.zeros(batch), torch.zeros(batch))
        out = decision.outputs
        raw = torch.cat(
            [
                torch.stack([out.tilt_logit, out.up_logit, out.log_volatility], dim=-1),
                out.regime_logits,
                torch.stack([out.q_halt, out.q_continue], dim=-1),
            ],
            dim=-1,
        )
        return raw.numpy(), decision.segments.numpy()

    return decide
