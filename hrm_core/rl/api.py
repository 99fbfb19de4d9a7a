"""``finetune``: RL after the supervised curriculum, by algorithm name — what the pipeline's
``rl_finetune`` asset, ``hrm-trading train --algo`` and the evaluation harness call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData
from hrm_core.model.build import build_model_for
from hrm_core.model.trader import TraderBase
from hrm_core.rl.finetune import RLTrainer
from hrm_core.rl.hmtr import train_hmtr
from hrm_core.rl.policy import TraderPolicy


def finetune(
    model: TraderBase,
    data: MarketData,
    config: HRMConfig,
    algorithm: str | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[TraderBase, dict[str, list[dict[str, Any]]]]:
    """RL on ``data``'s training part from ``model`` (``rl.start: supervised``) or from fresh weights
    of its architecture (``scratch``); ``algorithm`` (default ``rl.algorithm``) is ``ppo``, ``grpo``,
    ``hybrid_grpo`` or ``hmtr``. The H-MTR's backbone starts as ``model``'s (the HRM's H and L, its
    embeddings and outcome heads), then trains its workers and master (``rl/hmtr.py``). Returns the
    fine-tuned trading model, its tilt on, and the history of each phase; the outcome heads and the
    tilt's deployment are the trainer's to settle afterwards (``training.trainer.after_rl``)."""
    name = algorithm or config.rl.algorithm
    names = model.feature_names or (data.strategic_names, data.tactical_names)
    model.heads.set_tilt(True)  # RL learns the tilt whether or not supervised training deployed it
    if name == "hmtr":
        backbone = "hmtr_gru" if config.model.architecture in ("gru", "hmtr_gru") else "hmtr"
        config = config.model_copy(
            update={"model": config.model.model_copy(update={"architecture": backbone})}
        )
        hmtr = build_model_for(config, *names)
        if config.rl.start == "supervised":
            hmtr.load_state_dict(model.state_dict(), strict=False)  # backbone and heads; new master/workers
        hmtr.set_cycles(model.H_cycles, model.L_cycles)
        result = train_hmtr(hmtr, data, config, checkpoint_dir=checkpoint_dir, progress=progress)
        return result.model, result.history
    if config.rl.start == "scratch":
        cycles = (model.H_cycles, model.L_cycles)
        model = build_model_for(config, *names)
        model.set_cycles(*cycles)
    result = RLTrainer(TraderPolicy(model, config), data, config, name, checkpoint_dir, progress).fit()
    return model, {name: result.history}
