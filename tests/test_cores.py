"""Training jobs on one machine share its cores: each takes a disjoint slice, cores / jobs training now."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
from threadpoolctl import threadpool_info

from helpers import project_config, tiny_problem, wait_for
from mnist_np.errors import ConfigError
from mnist_np.training import cores, loop


@pytest.fixture
def own_registry(tmp_path, monkeypatch):
    """A temporary directory of this test's own, for this process and the ones it starts."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(cores.CORES_ENV, raising=False)
    return tmp_path


def other_job() -> subprocess.Popen:
    """Another process registered as training, until it is killed."""
    code = "import time; from mnist_np.training import cores\nwith cores.Share(): time.sleep(600)"
    return subprocess.Popen([sys.executable, "-c", code])


def test_slices_are_equal_disjoint_and_round_robin_when_cores_run_out():
    allowed = [0, 1, 2, 3]
    assert cores.slice_for(allowed, [7], 7) == [0, 1, 2, 3]
    assert [cores.slice_for(allowed, [5, 9], p) for p in (5, 9)] == [[0, 1], [2, 3]]
    assert [cores.slice_for(allowed, [1, 2, 3], p) for p in (1, 2, 3)] == [[0], [1], [2]]
    assert [cores.slice_for([0, 1], [1, 2, 3], p) for p in (1, 2, 3)] == [[0], [1], [0]]


def test_a_second_job_halves_the_share_and_a_killed_one_stops_counting(own_registry):
    before = os.sched_getaffinity(0)
    n = len(before)
    with cores.Share() as share:
        assert share.take() == n and os.sched_getaffinity(0) == before
        job = other_job()
        try:
            wait_for(lambda: len(cores.training_jobs()) == 2, timeout=30, what="the second job to register")
            taken = share.take()
            assert taken == max(1, n // 2) and len(os.sched_getaffinity(0)) == taken  # pinned to its slice
        finally:
            job.kill()  # no cleanup of its own: the registry must notice the pid is gone
            job.wait()
        assert share.take() == n and cores.training_jobs() == [os.getpid()]
    assert os.sched_getaffinity(0) == before and not list(cores.registry().iterdir())


def test_the_share_can_be_fixed_and_a_bad_value_is_named(own_registry, monkeypatch):
    monkeypatch.setenv(cores.CORES_ENV, "3")
    with cores.Share() as share:
        assert share.take() == 3
        monkeypatch.setenv(cores.CORES_ENV, "two")
        with pytest.raises(ConfigError, match="MNIST_NP_CORES='two' is invalid"):
            share.take()


def test_training_takes_its_share_of_blas_threads(own_registry, monkeypatch):
    seen = []
    monkeypatch.setenv(cores.CORES_ENV, "1")
    x, y = tiny_problem()
    cfg = project_config("model.hidden_size=256", "train.batch_size=128", "train.epochs=2")

    def record(stats):
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

    before = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    loop.fit(x[:150], y[:150], x[150:], y[150:], cfg.model, cfg.train, on_epoch=record, progress=False)
    assert seen == [{1}, {1}]  # big products, but a share of one core
    assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == before
    assert loop.blas_threads(256, 128, 4) == 4 and loop.blas_threads(10, 32, 4) == 1


def test_a_sweep_jobs_share_covers_its_training(own_registry):
    with cores.share() as job:
        with cores.share() as training:  # what fit() enters inside a sweep job
            assert training is job and cores.training_jobs() == [os.getpid()]
        assert cores.training_jobs() == [os.getpid()]  # still registered until the job ends
    assert cores.training_jobs() == []
