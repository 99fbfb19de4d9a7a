"""What the production engines buy on this machine, each against its reference in the same run:

- the evaluation grid (4 folds x 2 seeds, the tests' tiny model with 160 episodes a stage, models
  hrm): cells one at a time (``--workers 1``) against cells in parallel processes (``--workers
  2``), each in its own HRM_HOME, wall time of the whole ``hrm-trading evaluate`` (the data job
  and the report included in both);
- data-parallel training of the CPU preset's model (basic and full stages, 40 steps each, batch 8
  chunks of 128 bars): 1 process against 2 under torchrun (gloo), the same global batch, one torch
  thread per process; wall time (torchrun's start included), steps/s and the weight difference.

On 2 cores the point is correctness; on a GPU node each process drives its own GPU (NCCL) and the
step time falls with the number of GPUs as long as the per-GPU batch stays large enough.

    python benchmarks/bench_production.py [--skip-grid]
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

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hrm_core.core.config import load_config, read_preset  # noqa: E402
from hrm_core.dataset.scenarios import planted_regime_market  # noqa: E402
from hrm_core.training.trainer import fit  # noqa: E402


def grid(workers: int, config: Path) -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HRM_HOME": home, "DAGSTER_HOME": f"{home}/dagster"}
        command = [
            str(Path(sys.executable).parent / "hrm-trading"), "evaluate", "--config", str(config),
            "--folds", "all", "--seeds", "2", "--models", "hrm", "--workers", str(workers),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, cwd=REPO)
        return time.perf_counter() - started


def ddp(processes: int, steps: int) -> tuple[float, int, dict]:
    config = load_config(
        REPO / "configs" / "hrm_cpu_small.yaml",
        hierarchical_features={"high_level_lookback": 20, "low_level_lookback": 10},
        training={
            "processes": processes,
            "patience": 1000,
            "eval_every": 1000,
            "curriculum": [
                {"name": "basic", "H_cycles": 1, "L_cycles": 3, "episodes": steps * 8},
                {"name": "full", "H_cycles": 2, "L_cycles": 3, "act": True, "episodes": steps * 8},
            ],
        },
    )
    market = planted_regime_market(2000, seed=3)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = fit(config, market, folder, progress=False)
        seconds = time.perf_counter() - started
    return seconds, len(result.history), result.model.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per stage")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {"cores": os.cpu_count()}
    one, steps, weights_one = ddp(1, args.steps)
    two, _, weights_two = ddp(2, args.steps)
    diff = max(float((weights_one[k] - v).abs().max()) for k, v in weights_two.items())
    out["ddp"] = {
        "steps": steps,
        "1_process_s": round(one, 1),
        "2_processes_s": round(two, 1),
        "1_process_steps_per_s": round(steps / one, 2),
        "2_processes_steps_per_s": round(steps / two, 2),
        "max_weight_difference": diff,
    }
    print(json.dumps(out["ddp"]), flush=True)
    if not args.skip_grid:
        preset = read_preset(REPO / "configs" / "hrm_smoke.yaml")
        for stage in preset["training"]["curriculum"]:
            stage["episodes"] = 160
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "tiny.yaml"
            config.write_text(yaml.safe_dump(preset))
            serial, parallel = grid(1, config), grid(2, config)
        out["grid"] = {"cells": 8, "serial_s": round(serial, 1), "parallel_2_workers_s": round(parallel, 1)}
        print(json.dumps(out["grid"]), flush=True)


if __name__ == "__main__":
    main()
