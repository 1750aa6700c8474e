"""Benchmark: the whole MNIST test set photographed larger reads as at its own size (issue 23).

    make run                                 # needs models/model.npz, data/processed/ and data/raw/
    python benchmarks/scaled_digits.py [--model models/model.npz] [--out benchmarks/results/scaled_digits.json]

Each of the 10,000 test digits, dark on white, is scaled up 4x and 10x with the bicubic and the
nearest filter and goes through mnist-predict's reading (serving/preprocess.py, several digits
allowed, and the judge of touching digits: serving/touching.py) and the model; the accuracy of each
condition is compared with the same digits at 28x28 (as the evaluate stage reads them), with the
shares turned away as "not readable" and read as more than one digit (misses both), and the images
read per second.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = [(4, "BICUBIC"), (4, "NEAREST"), (10, "BICUBIC"), (10, "NEAREST")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "model.npz")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed", help="its stats.json and judge.npz")
    parser.add_argument("--raw", type=Path, default=REPO / "data" / "raw", help="the four MNIST files")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scaled_digits.json")
    args = parser.parse_args()
    from mnist_np.data import splits
    from mnist_np.data.idx import read_idx
    from mnist_np.model import reference, weights
    from mnist_np.serving import predict, preprocess

    params, stats = weights.load(args.model), splits.load_stats(args.data)
    read, _, _, judge = predict.load_predictor(str(args.model), args.data)
    images = read_idx(args.raw / "t10k-images-idx3-ubyte.gz")  # the digits as MNIST gives them, 0-255
    labels = read_idx(args.raw / "t10k-labels-idx1-ubyte.gz")

    def accuracy(views: np.ndarray) -> float:
        x = splits.transform(views.reshape(len(views), -1), stats).astype(params["W1"].dtype)
        return float(np.mean(reference.predict_proba(params, x).argmax(axis=1) == labels))

    results = {"untouched_accuracy": accuracy(images.astype(np.float32)), "conditions": {}}
    for scale, method in CONDITIONS:
        resample = getattr(Image.Resampling, method)
        views, unread, several, seconds = np.zeros((len(images), 28, 28), np.float32), 0, 0, 0.0
        for i, digit in enumerate(images):
            page = np.asarray(Image.fromarray(255 - digit).resize((28 * scale,) * 2, resample))
            start = time.perf_counter()
            try:
                found = preprocess.Found()
                fields = preprocess.read_page(page, found=found)
                fields = predict.split_touching(fields, found, read, judge) if judge is not None else fields
                if len(fields) == 1:
                    views[i] = fields[0]
                else:
                    several += 1  # an empty view: read as a miss
            except preprocess.NotReadable:
                unread += 1  # an empty view: read as a miss
            seconds += time.perf_counter() - start
        results["conditions"][f"{scale}x {method.lower()}"] = {
            "accuracy": accuracy(views),
            "points_lost": round(100 * (results["untouched_accuracy"] - accuracy(views)), 2),
            "not_readable_share": unread / len(images),
            "read_as_several_share": several / len(images),
            "images_per_second": round(len(images) / seconds, 1),
        }
        print(f"{scale}x {method.lower()}: {results['conditions'][f'{scale}x {method.lower()}']}", flush=True)
    results |= {"model": str(args.model), "cpu": platform.processor() or platform.machine(), "digits": len(images)}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"untouched {results['untouched_accuracy']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
