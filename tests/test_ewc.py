"""EWC: retraining on new data with the penalty keeps the loss on the old data lower than plain
fine-tuning does, and the penalty is zero at the anchor."""

import copy
import dataclasses

import numpy as np
import torch

from hrm_core.core.config import load_config
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.training.ewc import ewc_from
from hrm_core.training.trainer import Trainer

CONFIG = load_config(
    "configs/hrm_cpu_small.yaml",
    hierarchical_features={"high_level_lookback": 20, "low_level_lookback": 10},
    model={"hidden_size": 16, "num_heads": 2, "h_pool": 5},
    # no benchmark to lean on: at the cap (a benchmark near 1 plus a long tilt) the clip would hide
    # the old edge's gradient from the Fisher information
    policy={"benchmark": "flat", "max_tilt": 1.0},
    training={
        "chunk_bars": 64,
        "batch_chunks": 8,
        "learning_rate": 0.01,
        "eval_every": 1000,
        "patience": 100,
        "ewc_strength": 200.0,
        "curriculum": [{"name": "basic", "H_cycles": 1, "L_cycles": 2, "episodes": 240}],
    },
)


def drifting(seed: int, drift: float):
    """A generated market whose prices also drift by ``drift`` per bar: an edge learned in a few
    steps (be long, or short), so that old and new data want opposite positions."""
    market = planted_regime_market(3000, seed=seed)
    growth = np.exp(drift * np.arange(len(market)))
    return dataclasses.replace(
        market, **{k: getattr(market, k) * growth for k in ("open", "high", "low", "close")}
    )


def test_ewc_keeps_the_loss_on_old_data_lower_than_plain_fine_tuning():
    old, new = drifting(1, 0.003), drifting(2, -0.003)
    base = Trainer(CONFIG, old, progress=False).fit().model
    old_loss = Trainer(CONFIG, old, progress=False, model=copy.deepcopy(base))
    stage = CONFIG.training.curriculum[0]

    ewc = ewc_from(base, old, CONFIG)
    assert float(ewc.penalty(base).detach()) == 0.0
    plain = Trainer(CONFIG, new, progress=False, model=copy.deepcopy(base)).fit().model
    kept = Trainer(CONFIG, new, progress=False, model=copy.deepcopy(base), ewc=ewc).fit().model

    def loss_on_old(model) -> float:
        old_loss.model.load_state_dict(model.state_dict())
        return old_loss.validate(stage)[0]

    before, after_plain, after_ewc = loss_on_old(base), loss_on_old(plain), loss_on_old(kept)
    assert after_plain > before  # plain fine-tuning forgets the old edge
    assert after_ewc < after_plain - 0.5 * (after_plain - before)  # at least half the forgetting kept

    def moved(m):
        return sum((p - q).pow(2).sum() for p, q in zip(m.parameters(), base.parameters(), strict=True))

    assert moved(kept) < moved(plain)
    assert torch.isfinite(torch.tensor(after_ewc))
