"""Random distortions of training images, new for every batch of every epoch (Simard, Steinkraus and
Platt 2003, "Best practices for convolutional neural networks applied to visual document analysis").

Each output pixel p (about the image centre) reads the input at the source point

    q = A p + t + alpha * (G N G^T)[p]

A is a random rotation x shear / scale, t a random shift, and the last term the paper's elastic
distortion: a field N of uniform noise in [-1, 1] per pixel and per axis, smoothed by a Gaussian
G of width sigma (zero outside the image) and scaled by alpha. The input is read by bilinear
interpolation; whatever falls outside the image reads as `fill` (blank paper).

Vectorised over blocks of images in float32, NumPy only. One thing is done differently
from the letter of the paper, for speed, without changing what is drawn: the smoothed field is
sampled in the Gaussian's eigenbasis. With G = V diag(lambda) V^T, G N G^T = V diag(lambda) C
diag(lambda) V^T where C = V^T N V has uncorrelated entries of N's variance (1/3), and all but the
k largest lambda (k = 8 of 28 at sigma 4) carry under 0.01% of the field's variance. Drawing the
k x k block of C (as normal: it sums 784 uniform values) costs 64 random numbers per field instead
of 784 plus two smoothing passes (tests/test_augment.py compares both).

The training loop gets its batches' images from a worker process (Worker) that gathers and
distorts them while the gradient steps run. A thread would not do: the BLAS calls of the steps hold
Python's GIL, and the distortion's NumPy calls each wait for it (measured at hidden 800: 2.9x a
plain epoch, against 1.55x with the process; docs/performance.md). All ranges at zero give the
images back unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import math
import mmap
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from threadpoolctl import threadpool_limits

from ..config import AugmentConfig
from ..errors import TrainingError

# Images distorted at once: the working arrays (a few hundred kB) stay in the CPU's cache; whole
# chunks of 2048 took 2.5 times as long (allocations of several MB, each paged in afresh).
BLOCK = 128
KEPT_VARIANCE = 0.9999  # of the elastic field, by the eigenvectors the field is drawn in
AHEAD = 3  # chunks the worker process distorts ahead of the training


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix G such that G @ f smooths a length-n signal f by a Gaussian of width `sigma`
    pixels, taking zero outside (scipy.ndimage.gaussian_filter1d with mode="constant", untruncated)."""
    d = np.arange(n, dtype=np.float64)
    return np.exp(-0.5 * ((d[:, None] - d[None, :]) / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def field_basis(n: int, sigma: float) -> np.ndarray:
    """(n, k) float32 matrix B = V_k diag(lambda_k): the k eigenvectors of the Gaussian that carry
    KEPT_VARIANCE of a smoothed field, scaled by their eigenvalues (a field is B C B^T)."""
    lam, vectors = np.linalg.eigh(gaussian_matrix(n, sigma))
    lam, vectors = lam[::-1], vectors[:, ::-1]  # largest first
    power = np.cumsum(lam**2) / np.sum(lam**2)
    k = min(n, int(np.searchsorted(power**2, KEPT_VARIANCE)) + 1)  # variance of B C B^T goes with power^2
    return (vectors[:, :k] * lam[:k]).astype(np.float32)


class Distorter:
    """Distorts (m, side*side) image rows in place with `cfg`'s ranges, drawing from `rng`.

    BLOCK images at a time, in work arrays made once: fresh arrays of this size come from the
    system each time (beyond malloc's threshold), and paging them in cost more than the arithmetic.
    """

    def __init__(self, cfg: AugmentConfig, side: int, fill: float, rng: np.random.Generator) -> None:
        self.cfg, self.side, self.rng = cfg, side, rng
        r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        self.centre = (side - 1) / 2
        # Output pixels about the centre, and a row of ones for the shift: source = M @ grid.
        self.grid = np.stack([r.ravel() - self.centre, c.ravel() - self.centre, np.ones(side * side)]).astype(
            np.float32
        )
        self.basis = field_basis(side, cfg.elastic_sigma) if cfg.elastic_alpha else None
        k, n, pixels = (0 if self.basis is None else self.basis.shape[1]), side, side * side
        stride = n + 3  # padded images: one pixel of fill before, two after
        self.padded = np.full((BLOCK, stride, stride), fill, np.float32)  # only the inside is ever written
        self.offsets = (np.arange(BLOCK, dtype=np.float32) * stride)[:, None]  # each image's first padded row
        self.source, self.whole = np.empty((2 * BLOCK, pixels), np.float32), np.empty((2 * BLOCK, pixels), np.float32)
        self.index = np.empty((BLOCK, pixels), np.intp)
        self.top, self.bottom, self.other = (np.empty((BLOCK, pixels), np.float32) for _ in range(3))
        self.coefficients = np.empty((2 * BLOCK * k, k), np.float32)
        self.half, self.half_t = np.empty((2 * BLOCK * k, n), np.float32), np.empty((2 * BLOCK, n, k), np.float32)

    def affine(self, m: int) -> np.ndarray:
        """(2m, 3) float32: per image, the rows and then the columns of [A | t] that map an output
        pixel (about the centre) to its source point in the padded image."""
        cfg, rng = self.cfg, self.rng
        angle = np.deg2rad(rng.uniform(-cfg.rotation, cfg.rotation, m))
        tan = np.tan(np.deg2rad(rng.uniform(-cfg.shear, cfg.shear, m)))
        scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale, m)
        shift = rng.uniform(-cfg.shift, cfg.shift, (2, m))
        cos, sin = np.cos(angle), np.sin(angle)
        # rotation @ shear (columns slide along rows), shrunk by the scale: the image grows by it.
        maps = np.empty((2, m, 3))
        maps[0, :, 0], maps[0, :, 1] = cos / scale, (cos * tan - sin) / scale
        maps[1, :, 0], maps[1, :, 1] = sin / scale, (sin * tan + cos) / scale
        maps[:, :, 2] = self.centre + 1 + shift  # + 1: the padding before the image
        return maps.reshape(2 * m, 3).astype(np.float32)

    def displacements(self, m: int, out: np.ndarray | None = None) -> np.ndarray:
        """(2m, side*side) float32 elastic displacements in pixels for m <= BLOCK images: each image's
        rows, then columns (see the module's docstring for how they are drawn). `out`: where to write them."""
        b, n, k = self.basis, self.side, self.basis.shape[1]
        c = self.rng.standard_normal(dtype=np.float32, out=self.coefficients[: 2 * m * k])
        c *= np.float32(self.cfg.elastic_alpha / math.sqrt(3))  # uniform [-1, 1] has variance 1/3
        half = np.matmul(c, b.T, out=self.half[: 2 * m * k])  # C B^T, (k, n) per field
        half_t = self.half_t[: 2 * m]
        np.copyto(half_t, half.reshape(2 * m, k, n).transpose(0, 2, 1))
        # B (C B^T) transposed, i.e. B C^T B^T: as likely as B C B^T, so no transposing back.
        out = np.empty((2 * m, n * n), np.float32) if out is None else out
        np.matmul(half_t.reshape(2 * m * n, k), b.T, out=out.reshape(2 * m * n, n))
        return out

    def __call__(self, images: np.ndarray) -> None:
        for start in range(0, len(images), BLOCK):
            self.distort(images[start : start + BLOCK])

    def distort(self, images: np.ndarray) -> None:
        m, n, stride = len(images), self.side, self.side + 3
        source, whole = self.source[: 2 * m], self.whole[: 2 * m]  # rows then columns of each image
        np.matmul(self.affine(m), self.grid, out=source)  # source points, in padded coordinates
        if self.basis is not None:
            source += self.displacements(m, out=whole)

        padded = self.padded[:m]
        padded[:, 1 : n + 1, 1 : n + 1] = images.reshape(m, n, n)
        # Clipped to [0, n + 1], a source point and its next neighbours are inside the padded image;
        # beyond the image, every distance reads the padding.
        np.clip(source, 0, n + 1, out=source)
        np.floor(source, out=whole)
        source -= whole  # the fraction towards the next pixel
        fr, fc = source[:m], source[m:]
        position = whole[:m]  # flat position in `padded`, exact in float32 (< 2^24)
        position += self.offsets[:m]
        position *= stride
        position += whole[m:]
        index = self.index[:m]
        np.copyto(index, position, casting="unsafe")

        # Bilinear: the pixel, its right, lower and diagonal neighbours (shifted views of `padded`).
        flat = padded.ravel()
        top, bottom, other = self.top[:m], self.bottom[:m], self.other[:m]
        flat.take(index, out=top, mode="clip")
        flat[1:].take(index, out=other, mode="clip")
        other -= top
        other *= fc
        top += other
        flat[stride:].take(index, out=bottom, mode="clip")
        flat[stride + 1 :].take(index, out=other, mode="clip")
        other -= bottom
        other *= fc
        bottom += other
        bottom -= top
        bottom *= fr
        top += bottom
        images[...] = top.reshape(images.shape)


class Worker:
    """Distorted copies of rows of the training images, made in a process of its own.

    `worker(chunks)` gives the rows of `images` at each index array of `chunks` (at most `rows`
    each), distorted; each chunk's distortions are drawn from a seed that `rng` gives it, so the
    same calls in the same order give the same images, however the processes are scheduled.

    The process is forked at once, before training starts its threads: it shares the images with
    the trainer (copy-on-write, no copy), and a spawned one would re-import the caller's main
    module. It writes each chunk into one of AHEAD + 2 slots of memory shared with the trainer,
    working up to AHEAD chunks ahead, so a chunk is usually ready when asked for and nothing is
    pickled but the indices. Use it as a context manager: leaving stops the process.
    """

    def __init__(
        self, images: np.ndarray, cfg: AugmentConfig, fill: float, rng: np.random.Generator, rows: int
    ) -> None:
        global _images, _distorter, _slots
        self.rng = rng
        size = (AHEAD + 2) * rows * images.shape[1]
        shared = mmap.mmap(-1, size * images.dtype.itemsize)  # anonymous, MAP_SHARED: the child writes here
        self.slots = np.frombuffer(shared, images.dtype, size).reshape(AHEAD + 2, rows, images.shape[1])
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker)
        _images, _slots = images, self.slots
        _distorter = Distorter(cfg, image_side(images.shape[1]), fill, np.random.default_rng())
        try:
            self.pid = self.pool.submit(os.getpid).result()  # fork now
        except BaseException:
            self.pool.shutdown(cancel_futures=True)
            raise
        finally:
            _images = _distorter = _slots = None  # the worker has them; the trainer needs no second reference

    def __call__(self, chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
        """The distorted rows of each index array in `chunks`, in order; each is valid until the next."""
        seeds = self.rng.integers(2**63, size=len(chunks))
        pending: collections.deque[tuple[int, int, Future]] = collections.deque()
        for k, (index, seed) in enumerate(zip(chunks, seeds)):
            slot = k % len(self.slots)  # last used by chunk k - AHEAD - 2, which the caller is done with
            pending.append((slot, len(index), self.pool.submit(_distort_into, slot, index, int(seed))))
            if len(pending) > AHEAD:
                yield self._ready(*pending.popleft())
        while pending:
            yield self._ready(*pending.popleft())

    def _ready(self, slot: int, m: int, future: Future) -> np.ndarray:
        try:
            future.result()
        except BrokenProcessPool as exc:
            raise TrainingError(
                "the process distorting the training images stopped (out of memory?); free memory and run "
                "again, or train without distortions (train.augment.enabled=false)"
            ) from exc
        return self.slots[slot, :m]

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:  # stopped (Ctrl-C, an error): its chunks are not wanted, so it is not waited for
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.pool.shutdown(cancel_futures=True)


# In the worker process: the training images, the shared slots and the distorter, set before the fork.
_images: np.ndarray | None = None
_slots: np.ndarray | None = None
_distorter: Distorter | None = None


def _start_worker() -> None:
    threadpool_limits(1)  # the field's small products: one core, leaving the rest to the training's BLAS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the trainer stops this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the trainer's handler (cli) unwinds a main thread it lacks


def _distort_into(slot: int, index: np.ndarray, seed: int) -> None:
    # On the trainer's cores as they are now: its share changes as jobs beside it start and end
    # (cores.Share), and this process, forked once, would keep the cores it was forked with.
    with contextlib.suppress(OSError):  # the trainer gone: the pool is being shut down
        os.sched_setaffinity(0, os.sched_getaffinity(os.getppid()))
    rows = _slots[slot, : len(index)]
    _images.take(index, axis=0, out=rows, mode="clip")  # indices from a permutation: no bounds check needed
    _distorter.rng = np.random.default_rng(seed)
    _distorter(rows)


def image_side(n_pixels: int) -> int:
    """The side of the square images whose rows have `n_pixels` values, or 0 if they are not square."""
    side = math.isqrt(n_pixels)
    return side if side * side == n_pixels else 0
