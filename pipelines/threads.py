"""How many torch threads a process uses: ``$HRM_THREADS``, or the cores shared out among the
``hrm-trading`` processes running on this machine.

Torch starts one thread per core in every process; three runs at once on two cores then spend
most of their time fighting over them (each took 8-10x longer than alone). Each process
registers itself in a folder of pid files, and takes its share of the cores when it starts.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path


def _registry() -> Path:
    folder = Path(tempfile.gettempdir()) / f"hrm-trading-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return folder


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (signal 0 probes, sends nothing; a
    zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def share_of_cores(cores: int | None = None) -> int:
    """Register this process and return its share of the cores (at least 1)."""
    cores = cores or os.cpu_count() or 1
    folder = _registry()
    me = folder / str(os.getpid())
    me.touch()
    atexit.register(me.unlink, missing_ok=True)
    live = 0
    for entry in folder.iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            live += 1
        else:
            entry.unlink(missing_ok=True)
    return max(1, cores // max(1, live))


def size_threads() -> int:
    """Set torch's thread count (and ``OMP_NUM_THREADS`` for children) for this process."""
    import torch

    wanted = os.environ.get("HRM_THREADS")
    threads = int(wanted) if wanted and wanted.isdigit() and int(wanted) > 0 else share_of_cores()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
