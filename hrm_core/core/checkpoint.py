"""Safe persistence: a checkpoint is a dict of tensors, numbers and strings (state dicts, the
config as plain data, step counters, RNG states), loaded with ``torch.load(weights_only=True)``.
A file that needs unpickling arbitrary objects is refused with a clear error."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from hrm_core.core.errors import HRMError


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a run killed mid-write keeps the previous one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise HRMError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HRMError(
            f"{path}: refused to load: the file holds pickled Python objects, not only tensors and plain "
            f"data (rule: checkpoints load with weights_only=True); re-save it as a state dict, e.g. "
            f"torch.save({{'model': model.state_dict()}}, path)"
        ) from exc
