"""Same bits on every machine: the train and evaluate stages, run as processes under different
simulated machines and loads, write byte-identical outputs with the portable numerics (the default),
and different ones natively, so the check can fail.

A simulated machine: another OpenBLAS kernel family forced (OPENBLAS_CORETYPE), more BLAS and
OpenMP threads, NumPy's SIMD dispatch cut down (NPY_DISABLE_CPU_FEATURES), a fixed core count; a
load: a second training job registering beside the run after its first epoch, which halves the
run's share of the cores (training/cores.py) in the middle of it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SOURCE, Watched, built_once, clean_env, composed, project_config
from mnist_np import numerics
from mnist_np.data import splits

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not numerics.portable_possible(), reason="needs AVX2 and FMA")]

# The augmented family, shortened for the suite, on a quarter of the data (the bits are a property
# of the code path, not of the data's size): 3 epochs, so that the load which starts after the first
# one is in force for the third, whenever the second took its share. It takes every step of the best
# configuration (standardized inputs, He initialisation, momentum, L2, a decaying step, early
# stopping) and adds the distortions, so it stands for the best one too. The default configuration's
# path is held to the committed dvc.lock under other kernels, threads and SIMD by
# test_pipeline_e2e.py's fresh clone.
SHORT = {"augmented": ("+experiment=augmented", "train.epochs=3", "model.hidden_size=256")}
SUBSET = 4  # a quarter of each split
# OpenBLAS kernels other than the portable Haswell ones that this CPU can run, and other than the
# second machine's Sandybridge: had the portable path not overridden them, the two would differ.
OTHER_KERNEL = "SkylakeX" if "avx512f" in numerics.cpu_flags() else "Zen"
# Two machines that differ in every respect the portable path fixes (kernels, threads, SIMD, the
# share of the cores): if they agree, the bits depend on none of them.
MACHINES = {
    "other kernels, more threads, less SIMD": {
        "OPENBLAS_CORETYPE": OTHER_KERNEL,
        "OPENBLAS_NUM_THREADS": "2",
        "OMP_NUM_THREADS": "2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "MNIST_NP_CORES": "2",
    },
    "Sandybridge kernels, share halved mid-run": {"OPENBLAS_CORETYPE": "Sandybridge", "LOADED": "1"},
}


@pytest.fixture(scope="session")
def processed(tmp_path_factory, worker_id, mnist_mirror) -> Path:
    """data/processed with standardized inputs (as the best configurations have them), each split cut
    to its first 1/SUBSET."""

    def build(root: Path) -> dict[str, Path]:
        prepared, stats = splits.prepare(mnist_mirror, project_config("data.standardize=true").data, SOURCE)
        cut = {name: splits.Split(s.x[: len(s.x) // SUBSET], s.y[: len(s.y) // SUBSET]) for name, s in prepared.items()}
        splits.save(root, cut, stats)
        return {"root": root}

    return Path(built_once(tmp_path_factory, worker_id, "processed", build)["root"])


def run_stages(
    tmp: Path, processed: Path, overrides: tuple[str, ...], machine: dict[str, str], evaluate: bool = True
) -> dict[str, str]:
    """Train (and `evaluate`) in processes of their own on `machine`; the SHA-256 of every output."""
    params, out = tmp / "params.yaml", tmp / "out"
    params.write_text(yaml.safe_dump(composed(*overrides)))
    env = {k: v for k, v in clean_env().items() if k != "MNIST_NP_CORES"}  # the user's shell, then the machine
    env |= {k: v for k, v in machine.items() if k != "LOADED"} | {"TMPDIR": str(tmp)}
    env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]  # the session's store, not the repository's
    args = ["--params", str(params), "--data", str(processed), "--models", str(out), "--reports", str(out)]
    train = Watched([sys.executable, str(REPO / "pipelines" / "train.py"), *args], REPO, env)
    if machine.get("LOADED"):  # a second job starts beside the run: its share of the cores halves
        train.wait_for_line("epoch 1/", timeout=300)
        with subprocess.Popen(["sleep", "600"]) as other:
            (tmp / f"mnist-np-training-{os.getuid()}" / str(other.pid)).touch()
            status, err = train.wait(timeout=600)
            other.kill()
    else:
        status, err = train.wait(timeout=600)
    assert status == 0, err
    if evaluate:
        done = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "evaluate.py"), *args], cwd=REPO, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("name", SHORT)
def test_every_machine_and_load_gives_the_same_bits(name, processed, tmp_path):
    overrides = SHORT[name]
    outputs = {}
    for i, (machine, env) in enumerate(MACHINES.items()):
        (tmp_path / str(i)).mkdir()
        outputs[machine] = run_stages(tmp_path / str(i), processed, overrides, env)
    first, second = outputs.values()
    assert set(first) == TRAIN_OUTPUTS | EVALUATE_OUTPUTS
    assert first == second, f"{name}: the two machines' outputs differ"


EVALUATE_OUTPUTS = {"metrics.json", "classification.json", "predictions.csv", "report.html"}
TRAIN_OUTPUTS = {"model.npz", "reading.json", "training.csv", "training.json"}


def test_native_numerics_differ_between_kernels_so_the_check_can_fail(processed, tmp_path):
    # One epoch of a narrower network: the kernels' rounding differs from the first products on.
    overrides = ("+experiment=best", "train.epochs=1", "model.hidden_size=64", "train.numerics=native")
    runs = []
    for i, kernel in enumerate(("Haswell", "Sandybridge")):
        (tmp_path / str(i)).mkdir()
        machine = {"OPENBLAS_CORETYPE": kernel}
        runs.append(run_stages(tmp_path / str(i), processed, overrides, machine, evaluate=False))
    assert runs[0]["model.npz"] != runs[1]["model.npz"]
    assert runs[0]["training.csv"] != runs[1]["training.csv"]
