"""Selecting and deploying on evidence against the benchmark.

Checkpoints are judged on the validation part tiled by non-overlapping chunks (every validation
bar once, not a sample of chunks whose noise would hide the cost of churn), by the active net
Sharpe ratio against the benchmark, smoothed over evaluations (an exponential average) so one
lucky evaluation does not pick the weights.

After training, the tilt is deployed only when the final model's validation active Sharpe clears
the best Sharpe expected from the trials tried (``stats.expected_max_sharpe`` over every
evaluation's Sharpe: the selection's own multiple testing) by ``policy.min_tilt_evidence``
standard errors (Lo 2002). Otherwise the model's ``tilt_gate`` is set to 0 and it trades the
benchmark, which the run summary, the registry's tags and ``predict`` say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hrm_core.core.config import HRMConfig
from hrm_core.core.stats import expected_max_sharpe, sharpe_standard_error


def tiling_starts(starts: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping chunk starts, in order, from every valid start: each bar in one chunk."""
    chosen, next_free = [], -1
    for start in starts:
        if start >= next_free:
            chosen.append(start)
            next_free = start + length
    return np.asarray(chosen, dtype=np.int64)


def per_period_sharpe(returns: np.ndarray) -> float:
    """Mean over deviation (ddof 1); 0 for a path with no variation (the benchmark itself)."""
    std = returns.std(ddof=1) if returns.size > 1 else 0.0
    return float(returns.mean() / std) if std > 1e-12 else 0.0


@dataclass
class TiltGate:
    """The deployment decision and its evidence; Sharpe ratios annualised."""

    deployed: bool
    validation_active_sharpe: float
    threshold: float  # the deflated best-of-trials Sharpe plus min_tilt_evidence standard errors
    standard_error: float
    trials: int
    bars: int
    reason: str

    def as_tags(self) -> dict[str, str]:
        return {f"tilt.{name}": str(value) for name, value in asdict(self).items()}


def decide_tilt(active: np.ndarray, trials_sharpe: Sequence[float], config: HRMConfig) -> TiltGate:
    """Whether the tilt earned its deployment on validation active returns ``active`` (per bar),
    given every evaluation's annualised validation active Sharpe ``trials_sharpe``."""
    root = math.sqrt(config.trading.periods_per_year)
    active = np.asarray(active, dtype=float).ravel()
    if active.size < 2:
        reason = "no validation bars: nothing shows the tilt pays, so it trades the benchmark"
        return TiltGate(False, 0.0, math.inf, math.inf, len(trials_sharpe), int(active.size), reason)
    sharpe = per_period_sharpe(active)
    error = sharpe_standard_error(sharpe, active.size)
    deflated = expected_max_sharpe([t / root for t in trials_sharpe])
    threshold = float(deflated + config.policy.min_tilt_evidence * error)
    deployed = bool(sharpe > 0 and sharpe >= threshold)
    verdict = "clears" if deployed else "does not clear"
    reason = (
        f"validation active Sharpe {sharpe * root:+.2f} {verdict} {threshold * root:.2f} "
        f"(best of {len(trials_sharpe)} trials expected {deflated * root:.2f} "
        f"+ {config.policy.min_tilt_evidence:g} × SE {error * root:.2f}, {active.size} bars)"
    )
    if not deployed:
        reason += ": the tilt is off and the model trades the benchmark"
    trials = len(trials_sharpe)
    return TiltGate(deployed, sharpe * root, threshold * root, error * root, trials, int(active.size), reason)
