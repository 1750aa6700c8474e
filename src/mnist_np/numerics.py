"""Which arithmetic a process does: the portable path (the default) or the CPU's native one.

The same seed gives the same bits only if every floating-point operation runs the same code in the
same order. Three things on the way choose code by the machine they find (measured on 2 cores,
docs/reproducibility.md):
- OpenBLAS picks its kernels by CPU family (Haswell, SkylakeX, Zen, ...): each sums a product in
  its own order, so the weights differ from the first step on;
- OpenBLAS splits a product between its threads differently for 1 and 2 threads, and that changes
  the sums too (gemm at 128 x 784 x 800: different bits), so results followed the share of the
  cores a job got;
- NumPy dispatches its float64 sin/cos/tan/exp/log (the distortions' angles, the evaluation's
  logarithms) to AVX-512 code where the CPU has it.

The portable path fixes all three before NumPy loads: OpenBLAS's Haswell kernels (every x86-64 CPU
with AVX2 and FMA runs them), one BLAS thread, and NumPy's dispatch capped at x86-64-v3 (AVX2). On a
CPU without AVX2 it cannot run: one line says so and the process goes on natively. The native path
leaves the machine's choice alone (faster on big networks, same results only on the same machine
under the same load). `train.numerics` chooses; a process started with the other one runs itself
again (`require`). This module must not import NumPy at its top: `configure` runs before NumPy loads.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

MODE_ENV = "MNIST_NP_NUMERICS"
MODES = ("portable", "native")
PORTABLE_KERNEL = "Haswell"  # OpenBLAS's kernels for AVX2 + FMA: the newest family every x86-64-v3 CPU runs
# x86-64-v3's instructions as /proc/cpuinfo names them (abm is LZCNT): what the Haswell kernels and
# NumPy's X86_V3 code need.
PORTABLE_FLAGS = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}
# NumPy's dispatch targets above x86-64-v3 (NumPy 2.4 names them X86_V4, AVX512_ICL, AVX512_SPR; older
# releases AVX512F, AVX512_SKX, ...). Names a NumPy does not know are ignored.
ABOVE_V3 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL"
# What NumPy may dispatch to on the portable path (X86_V3 in NumPy 2.4; its parts in older releases).
PORTABLE_DISPATCH = {"X86_V3", "AVX", "F16C", "FMA3", "AVX2", "SSE3", "SSSE3", "SSE41", "POPCNT", "SSE42"}
PORTABLE_ENV = {
    "OPENBLAS_CORETYPE": PORTABLE_KERNEL,
    "OPENBLAS_NUM_THREADS": "1",
    "NPY_DISABLE_CPU_FEATURES": ABOVE_V3,
}
PORTABLE_UNAVAILABLE = (
    "warning: this CPU cannot run the portable numerics (x86-64 with AVX2 and FMA); running natively, so "
    "results will differ from the committed ones in the last bits"
)


def _cpuinfo(field: str) -> str:
    """The first value of `field` in /proc/cpuinfo ("" where there is none, or no /proc)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in lines if line.startswith(field)), "")


def cpu_flags() -> set[str]:
    return set(_cpuinfo("flags").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def portable_possible() -> bool:
    return platform.machine() in ("x86_64", "AMD64") and cpu_flags() >= PORTABLE_FLAGS


def requested() -> str:
    """The mode this process was asked for: $MNIST_NP_NUMERICS, else portable. A bad value ends the
    process with one line (this runs as the package is imported, before any entry point can report)."""
    mode = os.environ.get(MODE_ENV) or "portable"
    if mode not in MODES:
        print(f"error: {MODE_ENV}={mode!r} is invalid: use one of {', '.join(MODES)}, or unset it", file=sys.stderr)
        raise SystemExit(2)
    return mode


_active: str | None = None  # what configure() set up for this process; None: NumPy came first
SAVED = "MNIST_NP_USER_"  # prefix under which the user's own settings wait for a native process


def configure() -> None:
    """Set up the requested numerics for this process and the processes it starts. Called when the
    package is imported; it can only take effect while NumPy is not loaded yet."""
    global _active
    if "numpy" in sys.modules or _active is not None:
        return
    mode = requested()
    if mode == "portable" and not portable_possible():
        print(PORTABLE_UNAVAILABLE, file=sys.stderr)
        mode = "native"
    for key, value in PORTABLE_ENV.items():
        if mode == "portable":  # the user's own settings must not change results: kept aside ("" = unset)
            os.environ.setdefault(SAVED + key, os.environ.get(key, ""))
            os.environ[key] = value
        elif SAVED + key in os.environ:  # set aside by this process before a restart, or by a parent
            saved = os.environ.pop(SAVED + key)
            if saved:
                os.environ[key] = saved
            else:
                os.environ.pop(key, None)
    os.environ[MODE_ENV] = mode
    _active = mode


def active() -> str:
    """The numerics this process computes with, judged from the loaded libraries themselves."""
    libraries = blas_libraries()
    kernels = all(lib.get("architecture") == PORTABLE_KERNEL and lib["num_threads"] == 1 for lib in libraries)
    return "portable" if libraries and kernels and numpy_dispatch() <= PORTABLE_DISPATCH else "native"


def require(mode: str) -> None:
    """Make sure this process computes with `mode` (train.numerics), before any work. A command that
    started with the other mode runs itself again with the right one; a process that cannot (NumPy
    was loaded before this package, as in a test runner or a Ray worker) gets one line saying how."""
    if (mode == "portable" and not portable_possible()) or active() == mode:
        return  # (configure() has said that the portable path cannot run here)
    if _active is not None and sys.argv and Path(sys.argv[0]).is_file():
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[MODE_ENV] = mode
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    from .errors import ConfigError

    raise ConfigError(
        f"train.numerics={mode}, but this process computes {active()} and cannot start itself again (NumPy "
        f"was loaded before mnist_np, or it is no script); start it with {MODE_ENV}={mode}"
    )


def blas_libraries() -> list[dict]:
    """Both BLAS libraries: NumPy's, and SciPy's, which the training kernel calls."""
    import scipy.linalg.blas  # noqa: F401  (loads SciPy's OpenBLAS, so that it is listed)
    from threadpoolctl import threadpool_info

    return [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]


def numpy_dispatch() -> set[str]:
    """NumPy's dispatch targets in use on this CPU (beyond its baseline)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return {name for name in __cpu_dispatch__ if __cpu_features__.get(name)}


def describe() -> dict[str, str]:
    """What made this process's numbers, for a run's tags: the mode, the CPU, each BLAS library
    with the kernels and threads it uses, NumPy's dispatch, the versions."""
    import numpy as np
    import scipy

    tags = {
        "numerics.mode": active(),  # what the libraries do, whatever was asked for
        "numerics.cpu": cpu_model(),
        "numerics.numpy": np.__version__,
        "numerics.scipy": scipy.__version__,
        "numerics.numpy_simd": " ".join(sorted(numpy_dispatch())) or "baseline",
    }
    for lib in blas_libraries():
        owner = "numpy" if "numpy" in lib["filepath"] else "scipy" if "scipy" in lib["filepath"] else lib["prefix"]
        tags[f"numerics.blas.{owner}"] = (
            f"{lib['internal_api']} {lib['version']}, {lib.get('architecture', '?')} kernels, "
            f"{lib['num_threads']} thread{'s' if lib['num_threads'] != 1 else ''}"
        )
    return tags
