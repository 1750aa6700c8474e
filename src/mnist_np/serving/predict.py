"""Predict the digit in handwritten images with a trained network (the `mnist-predict` command).

    mnist-predict digit.png scans/                  # the pipeline's models/model.npz
    mnist-predict --json --model runs:/<run id>/model photo.jpg
    mnist-predict --model models:/mnist-mlp@champion photo.jpg

Each image goes through the MNIST procedure (preprocess.py) and then the normalize stage's own
pixel transform, read from the statistics saved with the data (or with the MLflow model).
An image with no digit-like ink (blank, specks, a blot, a smudge) or one the network is less sure
of than the model's threshold (reading.py; --reject-below) is "not readable", with the reason.
A file that cannot be read gets an error line; the others are still predicted, and the exit
status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import cli
from ..data import splits
from ..errors import DataError, UserError
from ..files import atomic_path
from ..model import reference, weights
from . import preprocess, reading

Predictor = Callable[[np.ndarray], np.ndarray]  # raw 0-255 images (n, 784) -> probabilities (n, 10)


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(("runs:/", "models:/")) or "://" in spec


DEFAULT_MODEL = Path("models") / "model.npz"  # the pipeline's, relative to where the command runs


def load_predictor(model: str | None, stats_dir: Path) -> tuple[Predictor, str, float | None]:
    """A weights file (with the normalize stage's stats.json) or an MLflow model URI, the
    preprocessing its training data calls for (preprocess.load_image) and the confidence below
    which its answer is not readable (None for a model stored without one)."""
    if model is not None and is_mlflow_uri(model):
        import mlflow

        from ..tracking import store

        store.use_store()
        try:
            pyfunc = mlflow.pyfunc.load_model(model)
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(f"cannot load MLflow model {model}: {exc.message}") from exc

        def predict(x: np.ndarray) -> np.ndarray:
            out = pyfunc.predict(x.astype(np.float32), params={"raw_pixels": True})
            return out[[f"p{d}" for d in range(reference.N_CLASSES)]].to_numpy()

        # Models logged before the preprocessing was recorded were all trained on MNIST's digits.
        metadata = pyfunc.metadata.metadata or {}
        return predict, metadata.get("preprocessing", "digits"), metadata.get("reject_below")

    if model is None and not DEFAULT_MODEL.is_file():  # most likely run outside the repository
        raise UserError(
            f"no trained model at {DEFAULT_MODEL.absolute()}; run mnist-predict in the repository after "
            "`make run`, or pass --model (a weights .npz or an MLflow model URI such as runs:/<id>/model)"
        )
    params = weights.load(model or DEFAULT_MODEL)
    stats = splits.load_stats(stats_dir)
    return (
        lambda x: reference.predict_proba(params, splits.transform(x, stats).astype(params["W1"].dtype)),
        stats["preprocessing"],
        reading.threshold_beside(model or DEFAULT_MODEL),
    )


def save_seen(digit: np.ndarray, path: Path, out_dir: Path, taken: set[str]) -> Path:
    """The 28x28 image the network saw for `path`, as a PNG named after it in `out_dir`."""
    name = f"{path.stem}.png"
    for n in range(2, len(taken) + 3):
        if name not in taken:
            break
        name = f"{path.stem}-{n}.png"
    taken.add(name)
    with atomic_path(out_dir / name) as tmp:
        Image.fromarray(np.clip(np.rint(digit), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return out_dir / name


def predict_files(
    files: list[Path],
    predictor: Predictor,
    save_dir: Path | None = None,
    preprocessing: str = "digits",
    reject_below: float | None = None,
) -> list[dict]:
    """One result per file: {"file", "readable": True, "digit", "probabilities"}; {"file",
    "readable": False, "reason"} (with the probabilities where the network was asked: its top one is
    below `reject_below`); or {"file", "error"}. With `save_dir`, also "preprocessed": the 28x28
    image the network saw, written there."""
    results, images, ok, taken = [], [], [], set()
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            digit = preprocess.load_image(path, preprocessing)
            images.append(digit.reshape(-1))
            ok.append(len(results))
            results.append({"file": str(path), "readable": True})
            if save_dir is not None:
                results[-1]["preprocessed"] = str(save_seen(digit, path, save_dir, taken))
        except preprocess.NotReadable as exc:
            results.append({"file": str(path), "readable": False, "reason": str(exc).removeprefix(f"{path}: ")})
        except DataError as exc:
            results.append({"file": str(path), "error": str(exc)})
    if images:
        probabilities = predictor(np.stack(images))
        for index, p in zip(ok, probabilities):
            results[index].update(digit=int(np.argmax(p)), probabilities=[round(float(v), 6) for v in p])
            if reject_below is not None and float(np.max(p)) < reject_below:
                del results[index]["digit"]
                results[index].update(
                    readable=False,
                    reason=f"the network is not sure: its best guess has p {np.max(p):.2f}, below {reject_below:.2f}",
                )
    return results


def format_table(results: list[dict]) -> str:
    """One row per file: the digit (or "error", or "-" when not readable) and the probabilities;
    a last column says why an image is not readable, where one is not."""
    rows = []
    for r in results:
        probabilities = r.get("probabilities") or [None] * 10
        rows.append(
            {
                "file": r["file"],
                "digit": "error" if "error" in r else r.get("digit", "-"),
                **{f"p{d}": "" if p is None else f"{p:.3f}" for d, p in enumerate(probabilities)},
                "note": f"not readable: {r['reason']}" if r.get("readable") is False else "",
            }
        )
    table = pd.DataFrame(rows)
    if not table["note"].any():
        table = table.drop(columns="note")
    return table.to_string(index=False)


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        parser = argparse.ArgumentParser(
            prog="mnist-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        parser.add_argument("images", nargs="+", help="image files or directories of images")
        parser.add_argument("--model", help="weights .npz or MLflow model URI (default: models/model.npz)")
        parser.add_argument(
            "--stats",
            type=Path,
            default=Path("data") / "processed",
            help="directory with the normalize stage's stats.json, for a weights file (default: data/processed)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument(
            "--save-preprocessed",
            type=Path,
            metavar="DIR",
            help="write the 28x28 image the network saw for each file into DIR, named after it (default: off)",
        )
        parser.add_argument(
            "--reject-below",
            type=float,
            metavar="P",
            help="call an image not readable when the network's top probability is below P "
            "(default: the threshold stored with the model; 0: never)",
        )
        args = parser.parse_args(argv)
        if args.reject_below is not None and not 0 <= args.reject_below <= 1:
            raise UserError(f"--reject-below {args.reject_below} is not a probability; give one from 0 (never) to 1")
        files = preprocess.image_files(args.images)
        if not files:
            raise UserError(f"no image files in {' '.join(args.images)}")
        predictor, preprocessing, stored = load_predictor(args.model, args.stats)
        reject_below = stored if args.reject_below is None else args.reject_below
        results = predict_files(files, predictor, args.save_preprocessed, preprocessing, reject_below)
        print(json.dumps(results, indent=2) if args.json else format_table(results))
        for r in results:
            if "error" in r:
                print(cli.error_line(r["error"]), file=sys.stderr)
        if any("error" in r for r in results):
            sys.exit(1)

    cli.run(run)
