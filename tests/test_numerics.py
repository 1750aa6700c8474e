"""The numerics a process is set up with (numerics.py), in fresh interpreters: what importing the
package does to the environment, on this CPU and on one without AVX2 (its /proc/cpuinfo read back
without the flag), and what the run's tags say."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, clean_env
from mnist_np import numerics

pytestmark = pytest.mark.skipif(not numerics.portable_possible(), reason="needs an x86-64 CPU with AVX2 and FMA")

REPORT = """
import json, os, mnist_np
from mnist_np import numerics
print(json.dumps({"active": numerics.active(), "env": dict(os.environ), "tags": numerics.describe()}))
"""
NO_AVX2 = """
import pathlib
real = pathlib.Path.read_text
pathlib.Path.read_text = lambda self, *a, **k: (
    real(self, *a, **k).replace(" avx2", "") if str(self) == "/proc/cpuinfo" else real(self, *a, **k)
)
"""


def fresh(code: str, env: dict[str, str] | None = None, **user: str) -> tuple[dict, str]:
    """Run `code` in a new interpreter with `env`, else the user's shell plus `user`."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=env or clean_env(**user), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_portable_by_default_whatever_the_user_set():
    user = {"OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "2", "NPY_DISABLE_CPU_FEATURES": "X86_V4"}
    report, err = fresh(REPORT, **user)
    assert report["active"] == "portable" and err == ""
    assert {k: report["env"][k] for k in numerics.PORTABLE_ENV} == numerics.PORTABLE_ENV
    assert report["env"][numerics.MODE_ENV] == "portable"
    tags = report["tags"]
    assert tags["numerics.mode"] == "portable" and tags["numerics.numpy_simd"] == "X86_V3"
    assert tags["numerics.blas.scipy"].endswith("Haswell kernels, 1 thread") and tags["numerics.cpu"]
    # A native process started from it gets the user's own settings back.
    native, _ = fresh(REPORT, {**report["env"], "MNIST_NP_NUMERICS": "native"})
    assert native["active"] == "native" and native["tags"]["numerics.mode"] == "native"
    assert {k: native["env"].get(k) for k in user} == user
    assert "Sandybridge kernels" in native["tags"]["numerics.blas.scipy"]


def test_a_cpu_without_avx2_says_so_in_one_line_and_runs_natively():
    report, err = fresh(NO_AVX2 + REPORT)
    assert err.strip() == numerics.PORTABLE_UNAVAILABLE
    assert report["env"][numerics.MODE_ENV] == "native" and report["active"] == "native"
    assert "OPENBLAS_CORETYPE" not in report["env"]


def test_a_bad_mode_is_one_line():
    done = subprocess.run(
        [sys.executable, "pipelines/train.py", "--help"],
        env=clean_env(MNIST_NP_NUMERICS="fast"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stderr == (
        "error: MNIST_NP_NUMERICS='fast' is invalid: use one of portable, native, or unset it\n"
    )
