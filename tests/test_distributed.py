"""Data-parallel training under ``torchrun`` (gloo on CPU): two processes train to the same weights
as one process with the same global batch, a killed rank stops the job with an error that names
it, and a rerun resumes from rank 0's checkpoint to the same weights."""

import threading
import time

import psutil
import pytest
import torch

from hrm_core.core.checkpoint import load_checkpoint
from hrm_core.core.errors import ConfigError, HRMError
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.training.distributed import Distributed
from hrm_core.training.trainer import fit
from tests.test_training import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market():
    return planted_regime_market(2000, seed=3)


@pytest.fixture(scope="module")
def one_process(market, tmp_path_factory):
    """The curriculum (deep supervision, then ACT with exploration) trained in one process, its
    tilt gated on validation as ``fit`` gates every run."""
    return fit(tiny_config(), market, tmp_path_factory.mktemp("one"), progress=False)


def assert_close_weights(a, b) -> None:
    for key, value in a.state_dict().items():
        assert torch.allclose(value, b.state_dict()[key], atol=1e-6, rtol=1e-5), key


def test_two_processes_train_to_the_weights_of_one_with_the_same_global_batch(market, one_process, tmp_path):
    config = tiny_config(processes=2)
    two = fit(config, market, tmp_path, progress=False)
    assert_close_weights(one_process.model, two.model)
    assert [h["stage"] for h in two.history] == [h["stage"] for h in one_process.history]
    for mine, theirs in zip(two.history, one_process.history, strict=True):  # whole-batch numbers
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["segments"] == pytest.approx(theirs["segments"])
    assert (tmp_path / "last.pt").exists()  # rank 0's checkpoint


def _kill_rank_1_after_a_checkpoint(checkpoint, killed: list) -> None:
    """Wait for rank 0's first mid-stage checkpoint, then SIGKILL the rank-1 worker."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not killed:
        if checkpoint.exists():
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "ddp_worker" in " ".join(proc.cmdline()) and proc.environ().get("RANK") == "1":
                        proc.kill()
                        killed.append(proc.pid)
                except psutil.Error:
                    continue
        time.sleep(0.05)


def test_a_killed_rank_stops_the_job_with_a_clear_error_and_a_rerun_resumes(market, one_process, tmp_path):
    config = tiny_config(processes=2)
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_rank_1_after_a_checkpoint, args=(tmp_path / "last.pt", killed))
    watcher.start()
    failed = r"distributed training \(2 processes\) failed: rank 1 .*exit code -9 .*SIGKILL.*rerun to resume"
    with pytest.raises(HRMError, match=failed):
        fit(config, market, tmp_path, progress=False)
    watcher.join()
    assert killed, "the rank-1 worker was never seen"
    saved = load_checkpoint(tmp_path / "last.pt")
    assert (saved["stage"], saved["step"]) != (0, 0)
    resumed = fit(config, market, tmp_path, progress=False)
    assert_close_weights(one_process.model, resumed.model)


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(ConfigError, match="batch_chunks 5 does not split over 2 processes"):
        Distributed(rank=0, world_size=2, local_rank=0).batch_slice(5)
