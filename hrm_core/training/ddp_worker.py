"""One process of a distributed training job: ``torchrun ... -m hrm_core.training.ddp_worker JOB_DIR``.

``distributed.launch`` writes the job (data, config, start weights, EWC) into JOB_DIR; every rank
trains its slice of each batch, and rank 0 writes the result there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hrm_core.core.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.core.config import HRMConfig
from hrm_core.core.ewc import EWC
from hrm_core.training.distributed import DATA_FILE, JOB_FILE, RESULT_FILE, Distributed, load_data
from hrm_core.training.trainer import Trainer, build_model


def main(job_dir: Path) -> None:
    job = load_checkpoint(job_dir / JOB_FILE)
    config = HRMConfig.model_validate(job["config"])
    data = load_data(job_dir / DATA_FILE)
    model = None  # the Trainer builds a fresh one after seeding, as in one process
    if job["model"] is not None:
        model = build_model(config, data)
        model.load_state_dict(job["model"])
    ewc = EWC(**job["ewc"]) if job["ewc"] else None
    context = Distributed.from_env()
    trainer = Trainer(
        config, data, job["checkpoint_dir"], progress=False, model=model, ewc=ewc, distributed=context
    )
    result = trainer.fit()
    if context is None or context.is_main:
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        save_checkpoint(job_dir / RESULT_FILE, {"model": state, "history": json.dumps(result.history)})
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("HRM_THREADS", "1")))  # launch() shares the cores out
    main(Path(sys.argv[1]))
