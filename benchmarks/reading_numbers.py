"""Benchmark: numbers of 2 to 6 handwritten digits, spaced and touching, read exactly (issue 23).

    make run                                 # needs models/model.npz, data/processed/ and data/raw/
    python benchmarks/reading_numbers.py [--count 2000] [--seed 0] [--out benchmarks/results/reading_numbers.json]

Each number is made of MNIST test digits drawn from the first 2,000, written side by side at 112 px
(4x) dark on paper, each 8-32 px from the top: "spaced" 8-30 px apart (ink to ink), "touching" each
digit's ink 0-6 px over its neighbour's columns (about a third of such neighbours share ink). Every
page goes through mnist-predict's own reading (predict.predict_files, with the judge of touching
digits, the threshold off) and counts when the whole number comes out exactly. Issue 23's bar for a
length n: the accuracy of the same 2,000 digits read singly at 112 px, to the power n, minus 3 points.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PAPER, PEN, SIZE = 210.0, 30.0, 112
LENGTHS = range(2, 7)
GAPS = {"spaced": (8, 31), "touching": (-6, 1)}  # ink to ink, in pixels (negative: over the neighbour)


def page(digits: np.ndarray, gap: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The digits (28x28, light on dark) written left to right on paper, `gap` pixels apart."""
    canvas, x = np.zeros((SIZE + 40, (SIZE + 48) * len(digits) + 160), np.float32), 120
    for digit in digits:
        ink = np.clip(np.asarray(Image.fromarray(digit).resize((SIZE, SIZE), Image.Resampling.BICUBIC)) / 255, 0, 1)
        span = np.nonzero(ink.max(axis=0) > 0.1)[0]
        top, left = int(rng.integers(8, 33)), x - int(span[0])
        area = canvas[top : top + SIZE, left : left + SIZE]
        np.maximum(area, ink, out=area)
        x = left + int(span[-1]) + 1 + int(rng.integers(*gap))
    return np.clip(np.rint(PAPER - canvas[:, : x + 40] * (PAPER - PEN)), 0, 255).astype(np.uint8)


def arguments(doc: str, results: str, count: int = 200) -> argparse.Namespace:
    """The command line of a benchmark that reads numbers (this one, touching_probe.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "model.npz")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed", help="its stats.json and judge.npz")
    parser.add_argument("--raw", type=Path, default=REPO / "data" / "raw", help="the four MNIST files")
    parser.add_argument("--count", type=int, default=count, help="numbers of each length (and kind)")
    parser.add_argument("--seed", type=int, default=0, help="draws the digits, their places and gaps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / results)
    return parser.parse_args()


def main() -> None:
    args = arguments(__doc__, "reading_numbers.json", count=2000)
    from mnist_np.data.idx import read_idx
    from mnist_np.serving.predict import load_predictor, predict_files

    images = read_idx(args.raw / "t10k-images-idx3-ubyte.gz")[:2000]
    labels = read_idx(args.raw / "t10k-labels-idx1-ubyte.gz")[:2000]
    predictor, preprocessing, _, judge = load_predictor(str(args.model), args.data)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:

        def read(pages: list[np.ndarray]) -> list[str | None]:
            files = [Path(folder) / f"{i}.png" for i in range(len(pages))]
            for path, image in zip(files, pages):
                Image.fromarray(image).save(path)
            results = predict_files(files, predictor, preprocessing=preprocessing, judge=judge)
            return [r.get("number", str(r["digit"]) if "digit" in r else None) for r in results]

        singly = read([page(images[i : i + 1], GAPS["spaced"], rng) for i in range(len(images))])
        single = float(np.mean([read_as == str(label) for read_as, label in zip(singly, labels)]))
        results = {"single_accuracy": round(single, 4), "count": args.count, "seed": args.seed, "kinds": {}}
        for kind, gap in GAPS.items():
            chosen = [rng.integers(0, len(images), n) for n in LENGTHS for _ in range(args.count)]
            read_as = read([page(images[c], gap, rng) for c in chosen])
            exact = [got == "".join(map(str, labels[c])) for got, c in zip(read_as, chosen)]
            results["kinds"][kind] = {
                str(n): {
                    "exact": round(float(np.mean([e for e, c in zip(exact, chosen) if len(c) == n])), 4),
                    "bar": round(single**n - 0.03, 4),
                }
                for n in LENGTHS
            }
    results["machine"] = {"cpu": cpu_name(), "python": platform.python_version()}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"read singly {single:.4f}")
    for kind, by_length in results["kinds"].items():
        row = "  ".join(f"{n}: {r['exact']:.3f} (bar {r['bar']:.3f})" for n, r in by_length.items())
        print(f"{kind:9s} {row}")
    print(f"wrote {args.out}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
