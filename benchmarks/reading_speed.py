"""Benchmark: photos read per second by mnist-predict's preprocessing, against an earlier version of
it on the same files, and the memory a 6000 x 4500 page takes (issue 23).

    make run                                  # needs data/raw/, models/model.npz and data/processed/ (its judge)
    python benchmarks/reading_speed.py [--baseline 6e3f36d] [--photos 500] [--out benchmarks/results/reading_speed.json]

The photos: MNIST test digits written on 2048 x 1536 pages as a phone photographs them (the digit
5% of the frame, uneven light, sensor noise, JPEG at quality 90), every other one on ruled paper
with a margin line. Each version reads every file (decoding and preprocessing: what differs between
them; the network's part is the same; today's also asks the judge of touching digits whether each
column is one digit, and cuts it where not, as mnist-predict does) in turns, REPEATS times; medians
and their ratio are reported. Memory: a 6000 x 4500 PNG page read by each version in a process of its own, its peak
resident memory above what the process held before reading.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODULE = "src/mnist_np/serving/preprocess.py"
REPEATS = 3
PAPER, PEN = 210.0, 30.0


def baseline_module(rev: str, folder: Path):
    """preprocess.py as it was at `rev`, imported beside today's (its relative imports resolve)."""
    source = subprocess.run(["git", "show", f"{rev}:{MODULE}"], cwd=REPO, capture_output=True, text=True, check=True)
    path = folder / "baseline_preprocess.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("mnist_np.serving.baseline_preprocess", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def photos(folder: Path, count: int, raw: Path) -> list[Path]:
    from mnist_np.data.idx import read_idx

    digits = read_idx(raw / "t10k-images-idx3-ubyte.gz")[:count]
    rng = np.random.default_rng(0)
    page = np.full((1536, 2048), PAPER, np.float32) + np.linspace(-30, 30, 2048, dtype=np.float32)[None, :]
    page += 3 * rng.standard_normal(page.shape, dtype=np.float32)
    ruled = page.copy()
    for row in np.arange(40, 1536, 96):
        ruled[int(row) : int(row) + 4] = 120
    ruled[:, 300:306] = 110
    files = []
    for i, digit in enumerate(digits):
        image = (ruled if i % 2 else page).copy()
        field = 555
        ink = np.asarray(Image.fromarray(digit).resize((field, field), Image.Resampling.BICUBIC), np.float32) / 255
        top, left = int(rng.integers(0, 1536 - field)), int(rng.integers(400, 2048 - field))
        area = image[top : top + field, left : left + field]
        area += np.clip(ink, 0, 1) * (PEN - area)
        files.append(folder / f"{i:04d}.jpg")
        Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(files[-1], quality=90)
    return files


def read_all(read, files: list[Path]) -> float:
    """Images per second for `read` over `files` (not-readable ones included)."""
    start = time.perf_counter()
    for path in files:
        with contextlib.suppress(Exception):  # a not-readable answer costs its time like any other
            read(path)
    return len(files) / (time.perf_counter() - start)


# The child's own high-water mark (VmHWM starts afresh at exec; getrusage's ru_maxrss keeps the
# parent's, which is larger here).
MEMORY = """
import sys
from pathlib import Path
sys.path.insert(0, {src!r})
import importlib.util
from mnist_np.serving import preprocess
if {baseline!r}:
    spec = importlib.util.spec_from_file_location("mnist_np.serving.baseline_preprocess", {baseline!r})
    preprocess = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preprocess)

def peak():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024

before = peak()
try:
    preprocess.load_digit({page!r})
except Exception:
    pass
print(peak() - before)
"""


def peak_mb(page: Path, baseline: Path | None) -> float:
    code = MEMORY.format(src=str(REPO / "src"), baseline=str(baseline or ""), page=str(page))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="6e3f36d", help="the commit to compare with (before printed lines)")
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--raw", type=Path, default=REPO / "data" / "raw", help="the four MNIST files")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "model.npz")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed", help="its stats.json and judge")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reading_speed.json")
    args = parser.parse_args()
    from mnist_np import numerics
    from mnist_np.serving import predict, preprocess

    predictor, _, _, judge = predict.load_predictor(str(args.model), args.data)
    if judge is None:
        raise SystemExit(f"error: no judge beside {args.data / 'stats.json'}; run the normalize stage (dvc repro)")

    def today(path: Path) -> None:  # mnist-predict's reading of a page, up to the network
        found = preprocess.Found()
        predict.split_touching(preprocess.load_page(path, found=found), found, predictor, judge)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline, baseline_path = baseline_module(args.baseline, folder)
        files = photos(folder, args.photos, args.raw)
        speeds = {"today": [], "baseline": []}
        for _ in range(REPEATS):
            speeds["baseline"].append(read_all(baseline.load_digit, files))
            speeds["today"].append(read_all(today, files))
        big = folder / "page.png"
        page = np.full((4500, 6000), 215, np.uint8)
        page[2000:2400, 3000:3060] = 30  # a 1, 400 px tall
        Image.fromarray(page).save(big)
        memory = {"today": peak_mb(big, None), "baseline": peak_mb(big, baseline_path)}
    medians = {k: float(np.median(v)) for k, v in speeds.items()}
    results = {
        "photos": args.photos,
        "images_per_second": {k: round(v, 1) for k, v in medians.items()},
        "runs": {k: [round(s, 1) for s in v] for k, v in speeds.items()},
        "speed_ratio_today_over_baseline": round(medians["today"] / medians["baseline"], 3),
        "peak_mb_6000x4500_png": {k: round(v, 1) for k, v in memory.items()},
        "baseline": args.baseline,
        "cpu": numerics.cpu_model(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
