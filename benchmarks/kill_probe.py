"""Kill a real ``hrm-trading run`` with SIGKILL at every step of ``full_job`` (as the step starts,
and ``--delay`` seconds into it) and check, after each kill, what the README guarantees: the next
command restores the warehouse, the snapshots and ``data.dvc`` exactly; no staging table is left;
every registered version has its tags; no MLflow run stays RUNNING; and a rerun succeeds.
Prints kills survived of kills tried, per step.

    python benchmarks/kill_probe.py [--delay 1.0] [--steps raw_ohlcv,hrm_stage_1_basic]

Uses a tiny model config (the one the tests use) in a temporary home; takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipelines.definitions import defs  # noqa: E402

STEPS = tuple(
    key.to_user_string()
    for key in defs.resolve_asset_graph().toposorted_asset_keys
    if key in defs.resolve_job_def("full_job").asset_layer.selected_asset_keys
)
"""Every step of ``full_job`` (its assets; the checks run inside them), in order."""


def tiny_config(folder: Path) -> Path:
    from hrm_core.core.config import read_preset

    path = folder / "tiny.yaml"
    preset = read_preset(REPO / "configs" / "hrm_smoke.yaml")
    path.write_text(yaml.safe_dump(preset))
    return path


def cli(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HRM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "HRM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def state(home: Path) -> dict:
    """What a killed run must not change: table row counts and names, and the data pointer."""
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    tables = [
        r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()
    ]
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in sorted(tables)}
    con.close()
    return {"tables": counts, "data.dvc": (home / "data.dvc").read_text()}


def registry_problems(home: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    problems = [
        f"version {v.version} lacks {sorted({'checkpoint_uri', 'lineage_key'} - set(v.tags))}"
        for v in client.search_model_versions("name = 'hrm-trader'")
        if not {"checkpoint_uri", "lineage_key"} <= set(v.tags)
    ]
    experiment = client.get_experiment_by_name("hrm-trading")
    if experiment is not None:
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        problems += [f"MLflow run {r.info.run_id} still RUNNING" for r in running]
    return problems


def started(home: Path, step: str) -> bool:
    return any(f'Started execution of step "{step}"' in p.read_text() for p in (home / "logs").glob("*.log"))


def probe(home: Path, config: Path, step: str, delay: float) -> tuple[bool, str]:
    """One kill at ``step``; returns whether every guarantee held, and why not."""
    before = state(home)
    shutil.rmtree(home / "logs", ignore_errors=True)
    run = cli(home, "run", "--config", str(config))
    deadline = time.monotonic() + 600
    while not started(home, step):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            return False, f"the run ended before {step} started"
        time.sleep(0.05)
    time.sleep(delay)
    run.send_signal(signal.SIGKILL)
    run.wait()
    status = cli(home, "status")  # the first command to find the home free cleans up after the kill
    status.communicate()
    after = state(home)
    if after != before:
        return False, f"state differs after the kill: {before} vs {after}"
    if (home / ".before-run").exists():
        return False, "the killed run's copy was not restored"
    problems = registry_problems(home)
    if problems:
        return False, "; ".join(problems)
    rerun = cli(home, "run", "--config", str(config))
    _, err = rerun.communicate()
    if rerun.returncode != 0:
        return False, f"rerun failed: {err.strip().splitlines()[-1:]}"
    return True, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds into the step before the kill")
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        config = tiny_config(Path(folder))
        first = cli(home, "run", "--config", str(config))
        _, err = first.communicate()
        assert first.returncode == 0, err
        results = {}
        for step in args.steps.split(","):
            for delay in (0.0, args.delay):
                ok, why = probe(home, config, step, delay)
                results[(step, delay)] = ok
                print(f"{step:>22} +{delay:.1f} s: {'survived' if ok else 'FAILED: ' + why}", flush=True)
        survived = sum(results.values())
        print(f"\nkills survived: {survived} of {len(results)}")


if __name__ == "__main__":
    main()
