"""HRM benchmarks: training throughput and peak memory per curriculum stage; streaming decision
latency (p50 / p99 per bar, batch 1) of the compiled agent against the eager one (the reference),
at 1 and 2 threads, with H refreshed every bar and every ``h_update_interval`` bars, and a flat
transformer of equal parameter count beside them. With CUDA present, the GPU preset's training
throughput in bf16 as well.

    python benchmarks/bench_model.py [--config configs/hrm_cpu_small.yaml] [--steps 20] [--bars 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from memory import PeakRSS

from hrm_core.core.config import HRMConfig, StageConfig, load_config
from hrm_core.dataset.market import MarketData
from hrm_core.dataset.windows import WindowSampler
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.flat import FlatTrader
from hrm_core.model.trader import TraderShape
from hrm_core.training.trainer import Trainer, build_model
from hrm_core.workflows.train import prepare_market_data


def flat_model(config: HRMConfig, data: MarketData) -> FlatTrader:
    hf = config.hierarchical_features
    shape = TraderShape(
        data.strategic.shape[1], data.tactical.shape[1], hf.high_level_lookback, hf.low_level_lookback
    )
    return FlatTrader(config.model, shape)


def training_throughput(
    config: HRMConfig, data: MarketData, stage: StageConfig, steps: int, flat: bool
) -> dict:
    """Decisions per second through ``steps`` optimiser steps of ``stage`` (no early stopping)."""
    episodes = steps * config.training.batch_chunks
    config = config.model_copy(
        update={
            "training": config.training.model_copy(
                update={
                    "curriculum": [stage.model_copy(update={"episodes": episodes})],
                    "eval_every": 10**9,
                    "patience": 10**9,
                }
            )
        }
    )
    trainer = Trainer(config, data, progress=False, model=flat_model(config, data) if flat else None)
    with PeakRSS() as memory:
        start = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - start
    decisions = episodes * config.training.chunk_bars
    return {
        "model": "flat" if flat else "hrm",
        "stage": stage.name,
        "cycles": f"{stage.H_cycles}x{stage.L_cycles}" + (" ACT" if stage.act else ""),
        "decisions_per_s": decisions / seconds,
        "peak_rss_gib": memory.peak / 2**30,
        "mean_segments": float(np.mean([h["segments"] for h in result.history])),
        "device": str(trainer.device),
    }


def decision_latency(
    config: HRMConfig,
    data: MarketData,
    bars: int,
    interval: int,
    flat: bool,
    segments: int,
    compiled: bool,
    threads: int,
) -> dict:
    """Per-bar latency of the streaming agent (batch 1, up to ``segments`` ACT segments). The model
    is untrained, so its Q head never halts early: every bar runs all segments (the worst case)."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(threads)
    config = config.model_copy(
        update={
            "model": config.model.model_copy(
                update={"halt_max_steps": segments, "h_update_interval": interval}
            )
        }
    )
    model = flat_model(config, data) if flat else build_model(config, data)
    model.eval()
    stage = config.training.curriculum[-1]
    model.set_cycles(stage.H_cycles, stage.L_cycles)
    agent = HRMTradingAgent(model, config, act=True, compiled=compiled)
    sampler = WindowSampler(data, config, torch.device("cpu"))
    rows = data.decision_rows("test", config.hierarchical_features.high_level_lookback)[:bars]
    held = torch.zeros(1)
    times, used = [], []
    for t in rows:
        row = torch.tensor([t])
        inputs = sampler.windows(row)
        start = time.perf_counter()
        decision = agent.decide(inputs, sampler.cap[row], held, sampler.benchmark[row])
        times.append(time.perf_counter() - start)
        used.append(int(decision.segments))
        held = decision.position  # the account holds what the agent decided, as when serving
    ms = np.array(times[10:]) * 1000  # the first bars warm up the allocator
    return {
        "model": "flat" if flat else "hrm",
        "path": "compiled" if agent.compiled is not None else "eager",
        "threads": threads,
        "h_update_interval": interval,
        "segments": float(np.mean(used)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/hrm_cpu_small.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--bars", type=int, default=300)
    parser.add_argument("--halt-max-steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config(
        args.config, training={"device": "cpu"}, model={"halt_max_steps": args.halt_max_steps}
    )
    data = prepare_market_data(config)
    results = {"training": [], "latency": []}

    print(f"training throughput, {args.config}, {args.steps} steps per stage, CPU, 2 threads")
    print(f"{'model':<6} {'stage':<10} {'cycles':<10} {'decisions/s':>12} {'peak RSS':>10} {'segments':>9}")
    runs = [(stage, False) for stage in config.training.curriculum] + [(config.training.curriculum[0], True)]
    for stage, flat in runs:
        r = training_throughput(config, data, stage, args.steps, flat)
        results["training"].append(r)
        print(
            f"{r['model']:<6} {r['stage']:<10} {r['cycles']:<10} {r['decisions_per_s']:>12,.0f} "
            f"{r['peak_rss_gib']:>8.2f} GiB {r['mean_segments']:>9.2f}"
        )

    print(f"\nstreaming decision latency, last stage's cycles, halt_max_steps {config.model.halt_max_steps}")
    print(
        f"{'model':<6} {'path':<9} {'threads':>7} {'H every':>8} {'max segments':>13} {'segments':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    most = config.model.halt_max_steps
    cases = [(1, False, most, compiled, threads) for compiled in (True, False) for threads in (1, 2)]
    cases += [
        (10, False, most, True, 1),
        (10, False, 1, True, 1),
        (1, True, 1, False, 1),
        (1, True, 1, False, 2),
    ]
    for interval, flat, segments, compiled, threads in cases:
        r = decision_latency(config, data, args.bars, interval, flat, segments, compiled, threads)
        results["latency"].append(r)
        print(
            f"{r['model']:<6} {r['path']:<9} {threads:>7} {interval:>8} {segments:>13} {r['segments']:>9.2f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )

    if torch.cuda.is_available():
        gpu = load_config("configs/hrm_gpu.yaml", training={"device": "cuda"})
        gpu_data = prepare_market_data(gpu)
        print("\nGPU preset, bf16 autocast")
        for stage in gpu.training.curriculum:
            r = training_throughput(gpu, gpu_data, stage, args.steps, flat=False)
            results.setdefault("gpu", []).append(r)
            print(f"hrm    {r['stage']:<10} {r['cycles']:<10} {r['decisions_per_s']:>12,.0f} decisions/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
