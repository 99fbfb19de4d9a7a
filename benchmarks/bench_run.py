"""``make run``'s wall time by step: ``hrm-trading run`` (the whole graph on the sample data, the
CPU preset) in a fresh temporary home, then each Dagster step's time from the run's event log.

    python benchmarks/bench_run.py [--config configs/hrm_cpu_small.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/hrm_cpu_small.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hrm-bench-run-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "HRM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
        command = [sys.executable, "-m", "pipelines.cli", "run", "--config", args.config]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
        total = time.perf_counter() - start
        os.environ.update(env)
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_run_records()
            steps = []
            for record in sorted(runs, key=lambda r: r.create_timestamp.timestamp()):
                job = record.dagster_run.job_name
                for stat in instance.get_run_step_stats(record.dagster_run.run_id):
                    if stat.start_time and stat.end_time:
                        steps.append((job, stat.step_key, stat.start_time, stat.end_time - stat.start_time))
    steps.sort(key=lambda s: s[2])
    print(f"hrm-trading run ({args.config}, sample data, fresh home): {total:.0f} s wall, by step:")
    print(f"{'job':<14} {'step':<52} {'seconds':>8} {'share':>6}")
    for job, key, _, seconds in steps:
        print(f"{job:<14} {key:<52} {seconds:>8.1f} {seconds / total:>6.1%}")
    in_steps = sum(s[3] for s in steps)
    outside = total - in_steps
    print(f"{'':<14} {'outside steps (start-up, Dagster, CLI)':<52} {outside:>8.1f} {outside / total:>6.1%}")
    print(
        json.dumps({"total": total, "steps": [{"job": j, "step": k, "seconds": s} for j, k, _, s in steps]})
    )


if __name__ == "__main__":
    main()
