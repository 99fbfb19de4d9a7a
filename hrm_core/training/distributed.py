"""Data-parallel training with ``torch.distributed``: several processes (``torchrun``), one slice of
every global batch each, gradients summed, identical weights everywhere.

Why not ``DistributedDataParallel``: the HRM's forward pass is several ``segment`` calls per
backward (deep supervision, ACT), which DDP's hooks on ``forward`` do not see. Instead every
process draws the same global batch (same seed), keeps its slice, computes its part of the
global loss (``losses.batch_mean`` divides by counts totalled over processes) and the gradients
are summed in one ``all_reduce`` per step. So N processes train to the same weights as one
process with the same global batch, up to float summation order. Gloo on CPU, NCCL on GPU.

``launch`` runs a training job under ``torchrun`` and gives back its result; rank 0 alone writes
checkpoints, so a rerun of a killed job resumes from rank 0's last one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hrm_core.core.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.core.config import HRMConfig
from hrm_core.core.errors import ConfigError, HRMError
from hrm_core.core.ewc import EWC
from hrm_core.dataset.market import MarketData


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (from the variables ``torchrun`` sets)."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Distributed | None:
        """The job ``torchrun`` launched this process into, or None when it runs alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the process group: NCCL for CUDA (one GPU per local rank), gloo on CPU."""
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def batch_slice(self, batch: int) -> slice:
        """This rank's contiguous slice of a global batch of ``batch`` chunks."""
        if batch % self.world_size:
            example = self.world_size * max(1, batch // self.world_size)
            raise ConfigError(
                f"training.batch_chunks {batch} does not split over {self.world_size} processes; "
                f"use a multiple of the number of processes, e.g. batch_chunks: {example}"
            )
        size = batch // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def total(self, count: torch.Tensor) -> torch.Tensor:
        """``count`` summed over every process (no gradient flows through counts)."""
        total = count.detach().clone()
        dist.all_reduce(total)
        return total

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum every gradient over the processes, in one flat all-reduce. A parameter without a
        gradient (a head the stage does not train) keeps none, so the optimiser skips it (a zero
        gradient would still apply weight decay) as it does in one process."""
        parameters = [p for p in parameters if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in parameters])
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Rank 0's weights everywhere (they are seeded alike; this makes it certain)."""
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


# --- a training job that crosses the process boundary -------------------------------------------
DATA_FILE, JOB_FILE, RESULT_FILE = "data.npz", "job.pt", "result.pt"


def save_data(data: MarketData, path: Path) -> None:
    """MarketData as plain arrays (``np.load`` without pickles) and JSON."""
    arrays = {
        f.name: getattr(data, f.name) for f in fields(data) if isinstance(getattr(data, f.name), np.ndarray)
    }
    meta = {k: v for k, v in asdict(data).items() if k not in arrays}
    arrays["ts"] = arrays["ts"].astype("datetime64[ns]").astype(np.int64)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load_data(path: Path) -> MarketData:
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "meta"}
        meta = json.loads(str(saved["meta"]))
    arrays["ts"] = arrays["ts"].astype("datetime64[ns]")
    meta["strategic_names"], meta["tactical_names"] = (
        tuple(meta["strategic_names"]),
        tuple(meta["tactical_names"]),
    )
    meta["normalization"] = {k: tuple(v) for k, v in meta["normalization"].items()}
    return MarketData(**meta, **arrays)


def launch(
    job_dir: Path,
    processes: int,
    config: HRMConfig,
    data: MarketData,
    model_state: dict[str, torch.Tensor] | None,
    ewc: EWC | None,
    checkpoint_dir: Path,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Train ``config``'s curriculum on ``data`` in ``processes`` processes under ``torchrun``;
    return the trained weights and the history. A failed or killed rank stops the job and raises
    an error that says which rank and that a rerun resumes from ``checkpoint_dir``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    save_data(data, job_dir / DATA_FILE)
    save_checkpoint(
        job_dir / JOB_FILE,
        {
            "config": config.model_dump(mode="json"),
            "model": model_state,
            "ewc": {"anchor": ewc.anchor, "fisher": ewc.fisher, "strength": ewc.strength} if ewc else None,
            "checkpoint_dir": str(checkpoint_dir),
        },
    )
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    threads = max(1, (os.cpu_count() or 1) // processes)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        "--max-restarts=0", "-m", "hrm_core.training.ddp_worker", str(job_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HRM_THREADS": str(threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    (job_dir / "torchrun.log").write_text(done.stderr)
    if done.returncode != 0 or not (job_dir / RESULT_FILE).exists():
        raise HRMError(
            f"distributed training ({processes} processes) failed: {failed_rank(done.stderr)}; "
            f"rerun to resume from the last checkpoint in {checkpoint_dir} (log: {job_dir / 'torchrun.log'})"
        )
    result = load_checkpoint(job_dir / RESULT_FILE)
    return result["model"], json.loads(result["history"])


def failed_rank(log: str) -> str:
    """Which rank failed first and how, from the "Root Cause" block of torchrun's report."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "Root Cause" in line), None)
    if start is None:
        return lines[-1].strip() if lines else "torchrun printed nothing"
    fields = {}
    for line in lines[start + 1 : start + 12]:
        key, _, value = line.partition(":")
        if value and key.strip() in ("rank", "exitcode", "traceback"):
            fields[key.strip()] = value.strip()
    return (
        f"rank {fields.get('rank', '?')} ended with exit code {fields.get('exitcode', '?')}"
        f" ({fields.get('traceback', 'no traceback')})"
    )
