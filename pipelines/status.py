"""``hrm-trading status`` and ``hrm-trading data restore|show``: what a home holds, and the exact
data any registered model version was trained on (its DVC raw snapshots; on Iceberg, its tables
read back by time travel)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from mlflow.exceptions import MlflowException

from assets.paper_loop import PAPER_DIR
from assets.resources import IcebergWarehouse
from hrm_core.core.errors import HRMError
from hrm_core.data.versioning import restore_data, snapshot_symbols


def home_status(home: Path, resources: dict, instance: dg.DagsterInstance) -> str:
    """Data version and symbols, warehouse rows, the latest run, registered versions with their
    aliases and lineage, and the last drift check."""
    lines = [f"HRM_HOME {home}"]
    pointer = home / "data.dvc"
    if pointer.exists():
        out = yaml.safe_load(pointer.read_text())["outs"][0]
        symbols = snapshot_symbols(home / "data")
        lines.append(f"data version (DVC md5) {out['md5']}: {len(symbols)} symbol(s) {', '.join(symbols)}")
    else:
        lines.append("data: none versioned yet (run `hrm-trading run`)")
    lines.append(_warehouse_line(resources["warehouse"]))
    runs = instance.get_runs(limit=1)
    if runs:
        run = runs[0]
        stats = instance.get_run_stats(run.run_id)
        started = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(stats.start_time)) if stats.start_time else "?"
        )
        lines.append(f"latest run {run.run_id[:8]}: {run.job_name} {run.status.value} (started {started})")
    lines += _registry_lines(resources["tracking"])
    event = instance.get_latest_materialization_event(dg.AssetKey("feature_drift_report"))
    if event is not None and event.asset_materialization is not None:
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        lines.append(
            f"last drift check: {meta.get('drifted_share', 0):.0%} of {meta.get('features')} features drifted"
            f" ({meta.get('reference')}); report {meta.get('report')}"
        )
    lines += _paper_lines(home)
    return "\n".join(lines)


def _paper_lines(home: Path) -> list[str]:
    """Each paper account: bars traded, the last one, equity, the versions that decided."""
    lines = []
    for database in sorted((home / PAPER_DIR).glob("*/warehouse.duckdb")):
        account = database.parent.name
        try:
            with duckdb.connect(str(database), read_only=True) as con:
                bars, last, equity = con.execute(
                    "SELECT count(DISTINCT ts), max(ts), sum(equity) FILTER (WHERE latest) FROM (SELECT ts, "
                    "equity, ts = max(ts) OVER (PARTITION BY symbol) AS latest FROM paper.positions)"
                ).fetchone()
                found = con.execute("SELECT DISTINCT version FROM paper.orders ORDER BY 1").fetchall()
        except duckdb.Error:
            lines.append(f"paper account {account}: in use by a running paper run")
            continue
        if not bars:
            lines.append(f"paper account {account}: no bar traded yet")
            continue
        lines.append(
            f"paper account {account}: {bars} bars to {str(last)[:10]}, equity {equity:,.2f}, "
            f"decided by version {', '.join(v for (v,) in found)} (`hrm-trading orders --account {account}`)"
        )
    return lines


def _warehouse_line(warehouse) -> str:
    if isinstance(warehouse, IcebergWarehouse):  # the manifests say it without reading any data
        clean = warehouse.iceberg().partition_rows("clean.ohlcv")
        counts = ", ".join(f"{s} {n}" for s, n in sorted(clean.items()) if n)
        return f"warehouse (Iceberg): clean bars {counts or 'none'}"
    path = Path(warehouse.database)
    if not path.exists():
        return "warehouse: none yet"
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException:
        return f"warehouse {path}: in use by a running run"
    try:
        rows = con.execute(
            "SELECT symbol, count(*) FROM clean.ohlcv GROUP BY symbol ORDER BY symbol"
        ).fetchall()
    except duckdb.CatalogException:
        rows = []
    finally:
        con.close()
    return f"warehouse {path}: clean bars " + (", ".join(f"{s} {n}" for s, n in rows) or "none")


def _registry_lines(tracking) -> list[str]:
    client = tracking.client()
    try:
        model = client.get_registered_model(tracking.model_name)
    except MlflowException:
        return ["registry: no model registered yet"]
    aliases = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = sorted(
        client.search_model_versions(f"name = '{tracking.model_name}'"), key=lambda v: int(v.version)
    )
    lines = [f"registry {tracking.model_name}: {len(versions)} version(s)"]
    for v in versions[-5:]:
        lines.append(
            f"  v{v.version} {'[' + ', '.join(aliases.get(str(v.version), [])) + ']':<22} "
            f"{v.tags.get('promotion.decision', 'undecided'):<9} data {v.tags.get('data_version', '?')[:12]} "
            f"config {v.tags.get('config_hash', '?')} commit {v.tags.get('git_commit', '?')[:8]}"
        )
    return lines


def _model_version(tracking, version: str):
    try:
        return tracking.client().get_model_version(tracking.model_name, str(version))
    except MlflowException as error:
        raise HRMError(f"--model-version {version}: no such version of {tracking.model_name}") from error


def show_model_data(resources: dict, version: str, table: str | None, symbol: str | None, rows: int) -> str:
    """What ``hrm-trader`` version ``version`` was trained on: on Iceberg, every table at the
    snapshot it recorded (rows per symbol), or the first ``rows`` rows of ``table``, read by time
    travel; on the local DuckDB file, its DVC data version."""
    tracking, warehouse = resources["tracking"], resources["warehouse"]
    tags = _model_version(tracking, version).tags
    name = f"{tracking.model_name} version {version}"
    if not isinstance(warehouse, IcebergWarehouse):
        if table:
            raise HRMError(
                "--table reads a table at a model version's snapshot: that is the production profile's "
                "Iceberg warehouse; locally the record is DVC's (`hrm-trading data restore`)"
            )
        return (
            f"{name} was trained on data version (DVC md5) {tags.get('data_version', 'unknown')}; "
            f"bring it back with `hrm-trading data restore --model-version {version}`"
        )
    recorded = tags.get("warehouse_snapshots")
    if not recorded:
        raise HRMError(f"{name} records no warehouse snapshots (tag warehouse_snapshots)")
    snapshots = json.loads(recorded)
    iceberg = warehouse.iceberg()
    if table:
        if table not in snapshots:
            raise HRMError(f"--table {table}: {name} recorded {', '.join(sorted(snapshots))}")
        frame = iceberg.read(table, snapshots[table], [symbol] if symbol else None).to_pandas()
        return f"{table} at snapshot {snapshots[table]} ({len(frame)} rows):\n{frame.head(rows).to_string()}"
    lines = [f"{name} was trained on these Iceberg snapshots (read back by time travel):"]
    for table_name, snapshot in sorted(snapshots.items()):
        counts = iceberg.partition_rows(table_name, snapshot) if snapshot is not None else {}
        shown = ", ".join(f"{part} {n}" for part, n in sorted(counts.items())) or "empty"
        lines.append(f"  {table_name:<28} snapshot {snapshot}: {shown}")
    return "\n".join(lines)


def restore_model_data(resources: dict, version: str, target: Path) -> Path:
    """Restore the raw data of ``hrm-trader`` version ``version`` from the DVC remote into
    ``target/data``; returns that folder."""
    tracking = resources["tracking"]
    mv = _model_version(tracking, version)
    md5 = mv.tags.get("data_version")
    if not md5 or md5 == "unknown":
        raise HRMError(
            f"{tracking.model_name} version {version} records no data version (tag data_version); "
            "only versions registered by this release can be restored"
        )
    return restore_data(md5, resources["dvc"].remote_url, target, resources["dvc"].endpoint_url)
