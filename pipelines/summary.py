"""What a run says when it ends: the facts of a Dagster run's materialisations as the CLI's summary
lines and ``summary.json``, the first failure as one message, and the evaluation's table."""

from __future__ import annotations

import json
from pathlib import Path

STAGE_PREFIX = "hrm_stage_"


def training_stages(meta: dict[str, dict]) -> list[str]:
    """The training stages a run materialised, in order: the curriculum's (``hrm_stage_<n>_<name>``,
    as many as it has) and then ``rl_finetune``."""
    stages = sorted((n for n in meta if n.startswith(STAGE_PREFIX)), key=lambda n: int(n.split("_")[2]))
    return stages + (["rl_finetune"] if "rl_finetune" in meta else [])


def run_metadata(result) -> dict[str, dict]:
    """Each materialised asset's metadata values, by asset name."""
    return {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def write_run_summary(result, path: Path) -> Path:
    """The run's facts as JSON: data, training stages, registry, backtest and drift."""
    meta = run_metadata(result)
    backtest = meta.get("backtest_report", {})
    facts = {
        "data_version": meta.get("dataset_version", {}).get("data_version"),
        "rows": meta.get("clean_ohlcv", {}).get("counts"),
        "stages": {name: meta[name] for name in training_stages(meta) if "steps" in meta[name]},
        "registered_model": meta.get("candidate_model"),
        "promotion": meta.get("promotion_decision"),
        "tilt": next(
            (
                {"deployed": meta[n]["tilt"] == "deployed", "evidence": meta[n]["tilt_evidence"]}
                for n in reversed(training_stages(meta))
                if "tilt" in meta[n]
            ),
            None,
        ),
        "backtest": json.loads(Path(backtest["summary_json"]).read_text()) if backtest else None,
        "reports": {
            "backtest": backtest.get("report"),
            "drift": meta.get("feature_drift_report", {}).get("report"),
        },
        "drift": meta.get("feature_drift_report"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts, indent=2, default=str))
    return path


def format_summary(result) -> str:
    """Rows per symbol, data version, fold dates, training, registry, backtest and drift."""
    meta = run_metadata(result)
    lines = ["", "== summary =="]
    clean = meta.get("clean_ohlcv", {})
    for symbol, c in (clean.get("counts") or {}).items():
        lines.append(
            f"{symbol:>10}: {c['rows_in']} rows in, {c['rows_clean']} clean, "
            f"{c['rows_quarantined']} quarantined" + (f" {c['rules']}" if c["rules"] else "")
        )
    if "dataset_version" in meta:
        lines.append(f"data version (DVC md5): {meta['dataset_version']['data_version']}")
    if "hierarchical_features" in meta:
        f = meta["hierarchical_features"]
        lines.append(f"features: {f['feature_count']} columns × {f['rows']} rows in features.hierarchical")
    if "training_labels" in meta:
        lines.append(f"labels: {meta['training_labels']['task_counts']}")
    for i, fold in enumerate((meta.get("walk_forward_splits") or {}).get("fold_dates", [])):
        lines.append(
            f"fold {i}: train {fold['train'][0][:10]}→{fold['train'][1][:10]}, "
            f"validation {fold['validation'][0][:10]}→{fold['validation'][1][:10]}, "
            f"test {fold['test'][0][:10]}→{fold['test'][1][:10]}"
        )
    for name in training_stages(meta):
        if "steps" in meta[name]:  # rl_finetune with RL off trained nothing
            m = meta[name]
            best = m.get("best_val_active_sharpe")
            best = "none" if best is None else f"{best:+.2f}"
            lines.append(
                f"{name}: {m['steps']} steps in {m['seconds']} s, loss {m['final_loss']:.4f}, "
                f"best validation active Sharpe {best}, mean ACT segments {m['mean_segments']:.2f}"
                + (
                    " (reused: trained before with the same data, config and commit)"
                    if m.get("reused")
                    else ""
                )
            )
    final_stage = next((meta[n] for n in reversed(training_stages(meta)) if "tilt" in meta[n]), None)
    if final_stage is not None:
        lines.append(f"policy: benchmark + tilt, tilt {final_stage['tilt']} — {final_stage['tilt_evidence']}")
    if "backtest_report" in meta:
        lines += [
            f"out of sample {meta['backtest_report']['test_period']}, net of costs (equal-weight portfolio):",
            meta["backtest_report"]["out_of_sample"],
        ]
    if "candidate_model" in meta:
        c = meta["candidate_model"]
        verb = "already registered (same lineage):" if c.get("reused") else "registered"
        lines.append(f"{verb} {c['registered_model']} version {c['version']} (alias {c['aliases']})")
    if "promotion_decision" in meta:
        p = meta["promotion_decision"]
        production = p["production_version"]
        lines.append(
            f"promotion: {p['decision']} against {p['compared_with']}; "
            + (f"production is version {production}" if production else "no production version yet")
            + ": "
            + "; ".join(p["reasons"])
        )
    if "feature_drift_report" in meta:
        d = meta["feature_drift_report"]
        verdict = "passed" if d["drifted_share"] <= d["threshold"] else "FAILED"
        lines.append(
            f"feature drift check {verdict}: {d['drifted_share']:.0%} of {d['features']} features drifted "
            f"(limit {d['threshold']:.0%}; reference {d['reference']})"
        )
        if verdict == "FAILED":
            lines.append(
                "  the recent bars' features no longer look like the data the model was trained on; its "
                "decisions there are less trustworthy. Retrain on recent data (`hrm-trading run`), or turn "
                "on drift_retrain_sensor in the UI to retrain when this happens"
            )
        lines.append(f"drift report: {d['report']}")
    if "backtest_report" in meta:
        lines.append(f"backtest report: {meta['backtest_report']['report']}")
    return "\n".join(lines)


def failure_message(result) -> str:
    """The user-facing message of the first failed step or blocking check."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                details = {k: v.value for k, v in evaluation.metadata.items()}
                return f"blocking check '{evaluation.check_name}' failed: {details}"
    for event in result.all_events:
        if event.is_step_failure:
            info = event.step_failure_data.error
            while info.cause is not None:
                info = info.cause
            return info.message.strip()
    return "unknown failure (see the run in the Dagster UI)"


def format_evaluation(summary: dict, seconds: float) -> str:
    lines = [f"\nout of sample, net of costs, each fold's own test block ({seconds:.0f} s):"]
    for model, m in summary["models"].items():
        lines.append(
            f"{model:>22}: Sharpe {m['sharpe_mean']:+.2f} ± {m['sharpe_std']:.2f}  "
            f"active {m['active_sharpe_mean']:+.2f}  "
            f"exposure {m['exposure_mean']:.2f}  turnover {m['turnover_mean']:.3f}  "
            f"costs {m['costs_mean']:.3f}  DSR {m['dsr_mean']:.2f}  ({m['cells']} cells)"
        )
    lines.append("paired Sharpe differences, 95 % interval clustered by fold (t over the fold means):")
    for pair, d in summary["paired_sharpe_difference"].items():
        lines.append(
            f"{pair:>30}: {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] "
            f"({d['folds']} folds, {d['pairs']} pairs)"
        )
    lines.append("active Sharpe against the benchmark, 95 % interval clustered by fold:")
    for model, d in summary["active_sharpe"].items():
        lines.append(f"{model:>30}: {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]")
    spa = summary.get("spa_vs_benchmark")
    if spa:
        lines.append(
            f"SPA test, H0 no model beats the benchmark: p = {spa['consistent']:.3f} "
            f"({len(spa['models'])} models, {spa['bars']} bars)"
        )
    return "\n".join(lines)


def format_paper(con, account: str, config) -> str:
    """A paper account's record in a few lines: its equity, and its metrics beside the benchmark's
    on the same bars (out of sample, net of costs)."""
    from hrm_core.workflows.paper import equity_curve, performance

    curve = equity_curve(con)
    if curve.empty:
        return f"paper account {account!r}: no bar traded yet"
    versions = [v for (v,) in con.execute("SELECT DISTINCT version FROM paper.orders ORDER BY 1").fetchall()]
    lines = [
        f"paper account {account!r}: {len(curve)} bars, "
        f"{curve.index[0]:%Y-%m-%d} .. {curve.index[-1]:%Y-%m-%d}, "
        f"equity {curve['portfolio'].iloc[-1]:,.2f} (decided by version {', '.join(versions) or '-'})"
    ]
    summary = performance(con, config)
    if summary:
        lines.append(f"  {'':<10} {'return':>8} {'sharpe':>7} {'max dd':>8}   (net of costs, out of sample)")
        for name in ("paper", "benchmark"):
            m = summary[name]
            lines.append(
                f"  {name:<10} {m['total_return']:>+8.2%} {m['sharpe']:>7.2f} {m['max_drawdown']:>8.2%}"
            )
        paper = summary["paper"]
        lines.append(
            f"  turnover {paper['turnover']:.4f} of equity per bar, costs {paper['costs']:.2%} of capital"
        )
    return "\n".join(lines)
