"""The curriculum trainer: stages of growing H×L cycles, deep supervision, ACT, early stopping,
checkpoints that resume a killed run where it stopped, and bit-identical seeded runs on CPU.

Each stage (``training.curriculum``) warm-starts from the previous one's best weights with a fresh
AdamW (betas 0.9, 0.95), linear warm-up then cosine decay, and gradient clipping; weight decay
applies to the weight matrices only (norm gains, biases, the hold weight and the initial states are
exempt). Every ``eval_every`` steps the model is judged on every validation bar (non-overlapping
chunks, no exploration) by its active net Sharpe against the benchmark, smoothed over evaluations
(``selection.py``); the stage's start weights are a candidate too, evaluations inside the learning
rate's warm-up are not; a stage stops after ``patience`` evaluations without improvement and keeps
its best weights. After the last stage the tilt is deployed only if validation shows it pays
(``selection.decide_tilt``); otherwise the model trades the benchmark.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hrm_core.core.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.core.config import HRMConfig, StageConfig
from hrm_core.core.errors import ConfigError, HRMError
from hrm_core.core.ewc import EWC
from hrm_core.dataset.market import MarketData
from hrm_core.dataset.windows import Chunks, WindowSampler
from hrm_core.model.act import run_segments
from hrm_core.model.build import build_model_for
from hrm_core.model.trader import TraderBase
from hrm_core.training.distributed import Distributed, launch
from hrm_core.training.losses import act_loss, active_returns, whole_batch
from hrm_core.training.selection import TiltGate, decide_tilt, per_period_sharpe, tiling_starts


def pick_device(preference: str) -> torch.device:
    """CUDA when present (or asked for), else CPU. Asking for CUDA where there is none is an error
    that says so, not a failure deep inside torch."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "training.device is 'cuda' but torch sees no CUDA device on this machine; "
            "use device: auto (CUDA when present, else CPU) or device: cpu"
        )
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def build_model(config: HRMConfig, data: MarketData) -> TraderBase:
    """The configured architecture (``model.architecture``) sized for ``data``'s features."""
    return build_model_for(config, data.strategic_names, data.tactical_names)


def save_trained_model(
    path: str | Path, model: TraderBase, config: HRMConfig, data: MarketData, fold: int
) -> None:
    """A trained model with everything needed to use it again: weights, config, the features it
    reads, the normalisation it was trained with, its fold and its current cycles."""
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": config.model_dump(mode="json"),
            "feature_names": [list(data.strategic_names), list(data.tactical_names)],
            "normalization": {name: list(stats) for name, stats in data.normalization.items()},
            "fold": fold,
            "cycles": [model.H_cycles, model.L_cycles],
        },
    )


def load_trained_model(path: str | Path) -> tuple[TraderBase, HRMConfig, dict[str, Any]]:
    """The model saved by ``save_trained_model``, its config, and the rest of what was saved."""
    saved = load_checkpoint(path)
    config = HRMConfig.model_validate(saved["config"])
    model = build_model_for(config, *saved["feature_names"])
    model.load_state_dict(saved["model"])
    model.set_cycles(*saved["cycles"])
    return model, config, saved


@dataclass
class TrainResult:
    model: TraderBase
    history: list[dict[str, Any]] = field(default_factory=list)
    gate: TiltGate | None = None  # whether the tilt is deployed, and the validation evidence


def validation_trials(history: list[dict[str, Any]]) -> list[float]:
    """Every evaluation's annualised validation active Sharpe: the candidates selection tried."""
    return [h["val_active_sharpe"] for h in history if "val_active_sharpe" in h]


def gate_tilt(
    result: TrainResult, config: HRMConfig, data: MarketData, prior_trials: list[float] | None = None
) -> TrainResult:
    """Decide and set the trained model's tilt gate on its validation evidence; ``prior_trials``:
    the trials of earlier stages trained elsewhere (the pipeline trains a stage per asset)."""
    model = result.model
    model.heads.set_tilt(True)
    stage = config.training.curriculum[-1]
    device = next(model.parameters()).device
    sampler = WindowSampler(data, config, device)
    starts = tiling_starts(sampler.chunk_starts("validation"), config.training.chunk_bars)
    active = np.zeros(0)
    if len(starts):
        model.eval()
        segments = config.model.halt_max_steps if stage.act else config.training.deep_supervision_segments
        with torch.no_grad():
            chunks = sampler.chunks(starts)
            run = run_segments(model, chunks.inputs, segments, stage.act, 0.0)
            active = active_returns(run, chunks, model.heads, config).cpu().numpy()
    gate = decide_tilt(active, [*(prior_trials or []), *validation_trials(result.history)], config)
    model.heads.set_tilt(gate.deployed)
    return TrainResult(model, result.history, gate)


def fit(
    config: HRMConfig,
    data: MarketData,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    model: TraderBase | None = None,
    ewc: EWC | None = None,
    prior_trials: list[float] | None = None,
) -> TrainResult:
    """Train ``config``'s curriculum here, or in ``training.processes`` data-parallel processes
    under ``torchrun`` (same weights, up to float summation order), then gate its tilt on the
    validation evidence (``gate_tilt``). Either way a killed run resumes from ``checkpoint_dir``
    (without one, processes share a temporary folder)."""
    processes = config.training.processes
    if processes == 1:
        return gate_tilt(
            Trainer(config, data, checkpoint_dir, progress, model, ewc).fit(), config, data, prior_trials
        )
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="hrm-torchrun-") as folder:
            return fit(config, data, folder, progress, model, ewc, prior_trials)
    start = model.state_dict() if model is not None else None
    job = Path(checkpoint_dir) / "torchrun"
    state, history = launch(job, processes, config, data, start, ewc, Path(checkpoint_dir))
    trained = build_model(config, data)
    trained.load_state_dict(state)
    last = config.training.curriculum[-1]
    trained.set_cycles(last.H_cycles, last.L_cycles)
    return gate_tilt(TrainResult(trained, history), config, data, prior_trials)


def stage_steps(stage: StageConfig, batch_chunks: int) -> int:
    """Optimiser steps of a curriculum stage: its episodes in batches of ``batch_chunks``."""
    return math.ceil(stage.episodes / batch_chunks)


def after_rl(model: TraderBase, config: HRMConfig, data: MarketData, steps: int | None = None) -> TrainResult:
    """What RL fine-tuning leaves to do: retrain the outcome, regime and Q heads on the moved
    backbone (RL's update trains the tilt alone, so served confidence, risk, regimes and halting
    would describe the supervised model), then gate the RL policy's tilt on validation like any
    trained model. The backbone and the tilt head stay as RL left them. ``steps`` defaults to the
    curriculum's longest stage's (100 at the CPU preset, as before): heads on a frozen backbone
    need no more than the whole model got in any stage, and a fixed 100 was 50× a tiny budget's
    stage, most of a tiny evaluation cell's time."""
    heads = model.heads
    trained = [p for head in (heads.outcome, heads.regime, heads.q) for p in head.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    stage = config.training.curriculum[-1]
    if steps is None:
        steps = max(stage_steps(s, config.training.batch_chunks) for s in config.training.curriculum)
    device = next(model.parameters()).device
    sampler = WindowSampler(data, config, device)
    starts = sampler.chunk_starts("train")
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(trained, lr=config.training.learning_rate, weight_decay=0.0)
    segments = config.model.halt_max_steps if stage.act else config.training.deep_supervision_segments
    model.train()
    for _ in range(steps if len(starts) else 0):
        chunks = sampler.sample(starts, config.training.batch_chunks, rng)
        run = run_segments(model, chunks.inputs, segments, stage.act, config.model.halt_exploration_prob)
        loss, _ = act_loss(run, chunks, config, stage.act, heads)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return gate_tilt(TrainResult(model), config, data)


@dataclass
class _State:
    """Everything a resumed run needs besides the weights and optimiser."""

    stage: int = 0
    step: int = 0
    best_score: float = -math.inf  # the best smoothed validation active Sharpe of this stage
    smoothed: float | None = None
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        config: HRMConfig,
        data: MarketData,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        model: TraderBase | None = None,
        ewc: EWC | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        """``distributed``: this process's place in a ``torchrun`` job (``distributed.py``); every
        rank then trains its slice of each global batch, and rank 0 alone writes checkpoints."""
        self.config = config
        self.ewc = ewc
        self.training = config.training
        self.device = pick_device(self.training.device)
        self.data = data
        self.distributed = distributed
        if distributed is not None:  # first: on CUDA it picks this rank's GPU
            distributed.start(self.device)
        main = distributed is None or distributed.is_main
        self.progress = progress and main
        self.checkpoint_path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
        self.writes_checkpoints = self.checkpoint_path is not None and main
        torch.manual_seed(config.seed)
        self.model = (model or build_model(config, data)).to(self.device)
        self.model.heads.set_tilt(True)  # a warm start from a gated model learns its tilt again
        self.batch_slice = slice(None)
        self.share = whole_batch
        if distributed is not None:
            distributed.broadcast_parameters(self.model)
            self.batch_slice = distributed.batch_slice(self.training.batch_chunks)
            self.share = distributed.total
        self.sampler = WindowSampler(data, config, self.device)
        self.train_starts = self.sampler.chunk_starts("train")
        if not len(self.train_starts):
            raise HRMError(
                f"training data: no chunk of {self.training.chunk_bars} consecutive training decisions; "
                "lower training.chunk_bars or the lookbacks, or use more data"
            )
        chosen = tiling_starts(self.sampler.chunk_starts("validation"), self.training.chunk_bars)
        self.validation = self.sampler.chunks(chosen) if len(chosen) else None
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.autocast = self.device.type == "cuda" and self.training.bf16
        self.best_state: dict[str, torch.Tensor] | None = None
        self._resume_optimizer: dict | None = None
        self._saved_at = time.monotonic()

    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Run (or resume) the curriculum. ``stop_after_steps`` ends early after that many optimiser
        steps in this call, as a kill would (for tests of resuming)."""
        state = self._resume()
        steps_this_call = 0
        for index in range(state.stage, len(self.training.curriculum)):
            stage = self.training.curriculum[index]
            self.model.set_cycles(stage.H_cycles, stage.L_cycles)
            optimizer = self._optimizer()
            if state.step and self._resume_optimizer is not None:
                optimizer.load_state_dict(self._resume_optimizer)
            self._resume_optimizer = None
            total = self._stage_steps(stage)
            if self.best_state is None:
                self.best_state = copy.deepcopy(self.model.state_dict())
                if self.validation is not None:  # the stage's start is a candidate too
                    state.best_score = self.validate(stage)[1]
            bar = tqdm(total=total, initial=state.step, desc=f"stage {stage.name}", disable=not self.progress)
            while state.step < total and (
                self.validation is None or state.bad_evals < self.training.patience
            ):
                logged = self._train_step(stage, optimizer, state.step)
                state.step += 1
                steps_this_call += 1
                bar.update(1)
                bar.set_postfix(loss=f"{logged['loss']:.3f}", segments=f"{logged['segments']:.2f}")
                evaluate = state.step % self.training.eval_every == 0 or state.step == total
                if evaluate and self.validation is not None:
                    logged["val_loss"], logged["val_active_sharpe"] = self.validate(stage)
                    newest = self.training.selection_ema
                    previous = logged["val_active_sharpe"] if state.smoothed is None else state.smoothed
                    state.smoothed = newest * logged["val_active_sharpe"] + (1 - newest) * previous
                    logged["val_score"] = state.smoothed
                    candidate = state.step > self.training.warmup_steps  # warm-up: not judged at all
                    if candidate and state.smoothed > state.best_score:
                        state.best_score, state.bad_evals = state.smoothed, 0
                        self.best_state = copy.deepcopy(self.model.state_dict())
                    elif candidate:
                        state.bad_evals += 1
                state.history.append({"stage": stage.name, "step": state.step, **logged})
                due = time.monotonic() - self._saved_at >= self.training.checkpoint_seconds
                if state.step % self.training.checkpoint_every == 0 or due:
                    self._save(state, optimizer)
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    bar.close()
                    self._save(state, optimizer)
                    return TrainResult(self.model, state.history)
            bar.close()
            if self.validation is not None:
                self.model.load_state_dict(self.best_state)
            self.best_state = None
            state = _State(stage=index + 1, history=state.history)
            self._save(state, None)
        return TrainResult(self.model, state.history)

    def _stage_steps(self, stage: StageConfig) -> int:
        return stage_steps(stage, self.training.batch_chunks)

    def _segments(self, stage: StageConfig) -> int:
        return self.config.model.halt_max_steps if stage.act else self.training.deep_supervision_segments

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with weight decay on the weight matrices only: decaying norm gains, biases or the
        hold weight would pull them towards 0, not towards a simpler model."""
        decayed = [p for p in self.model.parameters() if p.dim() >= 2]
        exempt = [p for p in self.model.parameters() if p.dim() < 2]
        return torch.optim.AdamW(
            [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}],
            lr=self.training.learning_rate,
            betas=(0.9, 0.95),
            weight_decay=self.training.weight_decay,
        )

    def _learning_rate(self, stage: StageConfig, step: int) -> float:
        """Linear warm-up, then cosine decay to 10 % at the end of the stage."""
        total, warmup = self._stage_steps(stage), self.training.warmup_steps
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            factor = 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
        return self.training.learning_rate * factor

    def _forward(
        self, stage: StageConfig, chunks: Chunks, explore: bool, share=whole_batch
    ) -> tuple[torch.Tensor, dict]:
        split = {}
        if share is not whole_batch:  # a slice of a batch split over processes (see run_segments)
            bars = self.training.chunk_bars
            rows = slice(self.batch_slice.start * bars, self.batch_slice.stop * bars)
            split = {
                "all_halted": lambda halted: bool(share((~halted).sum().float()) == 0),
                "exploration_rows": (self.training.batch_chunks * bars, rows),
            }
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            run = run_segments(
                self.model,
                chunks.inputs,
                self._segments(stage),
                stage.act,
                self.config.model.halt_exploration_prob if explore else 0.0,
                generator=self.generator,
                **split,
            )
        return act_loss(run, chunks, self.config, stage.act, self.model.heads, share)

    def _train_step(
        self, stage: StageConfig, optimizer: torch.optim.Optimizer, step: int
    ) -> dict[str, float]:
        self.model.train()
        lr = self._learning_rate(stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chunks = self.sampler.sample(
            self.train_starts, self.training.batch_chunks, self.rng, self.batch_slice
        )
        loss, logged = self._forward(stage, chunks, explore=True, share=self.share)
        if self.ewc is not None:
            penalty = self.ewc.penalty(self.model)
            world = self.distributed.world_size if self.distributed else 1
            loss = loss + penalty / world  # the processes' gradients are summed
            logged["ewc"] = float(penalty.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed is not None:
            self.distributed.sum_gradients(list(self.model.parameters()))
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.training.grad_clip)
        optimizer.step()
        return {**logged, "grad_norm": float(norm), "lr": lr}

    @torch.no_grad()
    def validate(self, stage: StageConfig) -> tuple[float, float]:
        """Loss and annualised active net Sharpe on every validation bar (deterministic, no
        exploration)."""
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            run = run_segments(self.model, self.validation.inputs, self._segments(stage), stage.act, 0.0)
        _, logged = act_loss(run, self.validation, self.config, stage.act, self.model.heads)
        active = active_returns(run, self.validation, self.model.heads, self.config).cpu().numpy().ravel()
        sharpe = per_period_sharpe(active) * math.sqrt(self.config.trading.periods_per_year)
        return logged["loss"], sharpe

    def _save(self, state: _State, optimizer: torch.optim.Optimizer | None) -> None:
        if not self.writes_checkpoints:
            return
        self._saved_at = time.monotonic()
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "best_model": self.best_state,
                "optimizer": optimizer.state_dict() if optimizer else None,
                "config": self.config.model_dump(mode="json"),
                "stage": state.stage,
                "step": state.step,
                "best_score": state.best_score,
                "smoothed": state.smoothed,
                "bad_evals": state.bad_evals,
                "history": state.history,
                "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "numpy_rng": self.rng.bit_generator.state,
            },
        )

    def _resume(self) -> _State:
        if not self.checkpoint_path or not self.checkpoint_path.exists():
            return _State()
        saved = load_checkpoint(self.checkpoint_path, map_location=self.device)
        self.model.load_state_dict(saved["model"])
        self._resume_optimizer = saved["optimizer"]
        self.best_state = saved["best_model"]
        torch.set_rng_state(saved["torch_rng"])
        self.generator.set_state(saved["generator"])
        self.rng.bit_generator.state = saved["numpy_rng"]
        return _State(
            saved["stage"],
            saved["step"],
            saved["best_score"],
            saved["smoothed"],
            saved["bad_evals"],
            saved["history"],
        )
