"""The promotion policy: whether a candidate's out-of-sample backtest earns it the production
alias. Pure logic on ``performance_summary`` rows, so it is tested without a registry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hrm_core.core.config import PromotionConfig
from hrm_core.sim.metrics import format_metric


@dataclass
class PromotionDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide_promotion(
    candidate: dict[str, float],
    incumbent: dict[str, float],
    incumbent_name: str,
    policy: PromotionConfig,
    failed_checks: list[str],
    across_folds: dict[str, float] | None = None,
    benchmark: dict[str, float] | None = None,
) -> PromotionDecision:
    """Promote only when every rule holds: no failed blocking check, a Sharpe at least the
    benchmark policy's on the same bars (a model that trades the benchmark ties it), a Sharpe above
    the incumbent's when the incumbent is a production model, a max drawdown no deeper than the
    incumbent's by more than the margin, and PSR ≥ the minimum; with ``policy.evaluation ==
    "all_folds"`` also ``across_folds`` (the evaluation's paired HRM − benchmark Sharpe difference:
    mean, ci_low, ci_high, folds, clustered by fold) with its interval not below 0. ``benchmark``
    defaults to the incumbent (the benchmark itself when there is no production model). Each rule
    adds a reason, passed or not, so the decision explains itself."""
    rules = []
    rules.append(
        (
            not failed_checks,
            f"blocking checks: {'failed ' + ', '.join(failed_checks) if failed_checks else 'all passed'}",
        )
    )
    sharpe = _number(candidate, "sharpe")
    if benchmark is not None:
        floor = _number(benchmark, "sharpe")
        shown = format_metric("sharpe", sharpe), format_metric("sharpe", floor)
        rules.append((sharpe >= floor, f"Sharpe {shown[0]} vs the benchmark {shown[1]}"))
    rival = _number(incumbent, "sharpe")
    shown = format_metric("sharpe", sharpe), format_metric("sharpe", rival)
    beats = sharpe > rival if benchmark is not None else sharpe >= rival
    rules.append((beats, f"Sharpe {shown[0]} vs {incumbent_name} {shown[1]}"))
    drawdown, rival_drawdown = _number(candidate, "max_drawdown"), _number(incumbent, "max_drawdown")
    rules.append(
        (
            drawdown >= rival_drawdown - policy.max_drawdown_margin,
            f"max drawdown {format_metric('max_drawdown', drawdown)} vs {incumbent_name} "
            f"{format_metric('max_drawdown', rival_drawdown)} "
            f"(margin {policy.max_drawdown_margin})",
        )
    )
    psr = _number(candidate, "psr")
    rules.append((psr >= policy.min_psr, f"PSR {format_metric('psr', psr)} (minimum {policy.min_psr})"))
    if policy.evaluation == "all_folds":
        if across_folds is None:
            rules.append((False, "no evaluation of this configuration: run `hrm-trading evaluate`"))
        else:
            low = across_folds["ci_low"]
            rules.append(
                (
                    not math.isnan(low) and low >= 0,
                    f"across the evaluation, Sharpe − benchmark {across_folds['mean']:+.3f} "
                    f"[{low:+.3f}, {across_folds['ci_high']:+.3f}] over {across_folds['folds']} folds "
                    f"({across_folds['pairs']} fold × seed pairs)",
                )
            )
    reasons = [("pass: " if ok else "FAIL: ") + text for ok, text in rules]
    return PromotionDecision(promote=all(ok for ok, _ in rules), reasons=reasons)


def _number(summary: dict[str, float], key: str) -> float:
    """A metric, with an undefined one (NaN, e.g. the Sharpe of a strategy that never trades)
    read as the worst value so that it can never win a comparison."""
    value = summary.get(key)
    return -math.inf if value is None or math.isnan(value) else float(value)
