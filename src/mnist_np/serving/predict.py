"""Predict the digit in handwritten images with a trained network (the `mnist-predict` command).

    mnist-predict digit.png scans/                  # the pipeline's models/model.npz
    mnist-predict --json --model runs:/<run id>/model photo.jpg
    mnist-predict --model models:/mnist-mlp@champion photo.jpg

Each image goes through the MNIST procedure (preprocess.py; several digits side by side are read
as a number, numbers.py, digits whose ink touches cut apart by the judge the normalize stage learnt,
touching.py) and then the normalize stage's own pixel transform, read from the
statistics saved with the data (or with the MLflow model).
An image with no digit-like ink (blank, specks, a blot, a smudge) or one the network is less sure
of than the model's threshold (reading.py; --reject-below) is "not readable", with the reason.
A file that cannot be read gets an error line; the others are still predicted, and the exit
status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from .. import cli
from ..data import splits
from ..errors import DataError, UserError
from ..files import atomic_path
from ..model import reference, weights
from . import overlay, preprocess, reading, touching

Predictor = Callable[[np.ndarray], np.ndarray]  # raw 0-255 images (n, 784) -> probabilities (n, 10)


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(("runs:/", "models:/")) or "://" in spec


DEFAULT_MODEL = Path("models") / "model.npz"  # the pipeline's, relative to where the command runs


class Loaded(NamedTuple):
    """A model as mnist-predict reads with it."""

    predictor: Predictor
    preprocessing: str  # what its training data calls for (preprocess.load_page)
    reject_below: float | None  # the confidence below which its answer is not readable (None: stored without one)
    judge: reference.Params | None  # cuts columns of touching digits (touching.py; None: data made before it)


def load_predictor(model: str | None, stats_dir: Path) -> Loaded:
    """A weights file (with the normalize stage's stats.json and judge) or an MLflow model URI."""
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
        judge = touching.load_judge(getattr(pyfunc.unwrap_python_model(), "judge_path", None))
        return Loaded(predict, metadata.get("preprocessing", "digits"), metadata.get("reject_below"), judge)

    if model is None and not DEFAULT_MODEL.is_file():  # most likely run outside the repository
        raise UserError(
            f"no trained model at {DEFAULT_MODEL.absolute()}; run mnist-predict in the repository after "
            "`make run`, or pass --model (a weights .npz or an MLflow model URI such as runs:/<id>/model)"
        )
    params = weights.load(model or DEFAULT_MODEL)  # first: a missing model is the likelier mistake
    stats = splits.load_stats(stats_dir)
    judge = touching.load_judge(touching.judge_path(stats_dir / splits.STATS_FILE))
    threshold = reading.threshold_beside(model or DEFAULT_MODEL)
    return Loaded(weights_predictor(params, stats), stats["preprocessing"], threshold, judge)


def weights_predictor(params: reference.Params, stats: dict) -> Predictor:
    """The network with these weights, for raw images: the normalize stage's transform (`stats`) first."""
    return lambda x: reference.predict_proba(params, splits.transform(x, stats).astype(params["W1"].dtype))


def save_seen(fields: list[np.ndarray], found: preprocess.Found, result: dict, out_dir: Path, taken: set[str]) -> None:
    """Into `out_dir`, named after the file: the 28x28 image(s) the network saw (`<name>.png`, a
    number's digits side by side, when it saw any) and the page with what was found on it
    (`<name>.found.png`, overlay.py); their paths go into `result`."""
    stem = Path(result["file"]).stem
    name = stem
    for n in range(2, len(taken) + 3):
        if name not in taken:
            break
        name = f"{stem}-{n}"
    taken.add(name)
    if fields:
        with atomic_path(out_dir / f"{name}.png") as tmp:
            Image.fromarray(np.clip(np.rint(np.hstack(fields)), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
        result["preprocessed"] = str(out_dir / f"{name}.png")
    if found.page is not None:
        digits = result.get("digits") or ([result] if "probabilities" in result else [])
        labels = [f"{d.get('digit', '?')}  p {max(d['probabilities']):.2f}" for d in digits]
        boxes = found.boxes
        reason = None if result.get("readable") else f"not readable: {result['reason']}"
        with atomic_path(out_dir / f"{name}.found.png") as tmp:
            overlay.draw(found, boxes, labels, reason).save(tmp, format="PNG")
        result["found"] = str(out_dir / f"{name}.found.png")


def file_box(found: preprocess.Found, box: tuple[int, int, int, int]) -> list[int]:
    """A box (top, left, bottom, right) on the page as read -> [left, top, right, bottom] in the
    file's own pixels (a large file is read smaller)."""
    top, left, bottom, right = box
    return [round(v * found.per_pixel) for v in (left, top, right, bottom)]


def answer(result: dict, probabilities: np.ndarray, found: preprocess.Found, reject_below: float | None) -> None:
    """The network's answer into `result`, from the probabilities (n, 10) of the page's digits: one
    digit as "digit", "probabilities" and "box", a number as "number" and "digits" (each with its
    own); not readable where a digit's top probability is below `reject_below`."""
    boxes = [file_box(found, b) for b in found.boxes] or [None] * len(probabilities)
    digits = [
        {"digit": int(np.argmax(p)), "probabilities": [round(float(v), 6) for v in p], **({"box": b} if b else {})}
        for p, b in zip(probabilities, boxes)
    ]
    if len(digits) == 1:
        result.update(digits[0])
    else:
        result.update(number="".join(str(d["digit"]) for d in digits), digits=digits)
    tops = probabilities.max(axis=1)
    if reject_below is not None and float(tops.min()) < reject_below:
        result.pop("digit", None)
        result.pop("number", None)
        which = "" if len(digits) == 1 else f" of digit {int(np.argmin(tops)) + 1} of {len(digits)}"
        reason = f"the network is not sure{which}: its best guess has p {tops.min():.2f}, below {reject_below:.2f}"
        result.update(readable=False, reason=reason)


def split_touching(
    fields: list[np.ndarray], found: preprocess.Found, predictor: Predictor, judge: reference.Params
) -> list[np.ndarray]:
    """A page's digits with each column of touching ones cut into them (touching.py): their fields
    in its place, and their boxes in `found`. An image of MNIST's own size (28x28 or less) holds one
    digit by MNIST's definition: it is never cut."""
    if max(found.page.shape) <= preprocess.FIELD:
        return fields
    out, boxes = [], []
    for field, box, ink in zip(fields, found.boxes, found.inks):
        digits = touching.split(ink, field, predictor, judge)
        out += [digit["field"] for digit in digits] or [field]
        at = np.array(box[:2] * 2)  # a digit's box in the column -> on the page
        boxes += [tuple(int(v) for v in at + digit["box"]) for digit in digits] or [box]
    found.boxes = boxes
    return out


def predict_files(
    files: list[Path],
    predictor: Predictor,
    save_dir: Path | None = None,
    preprocessing: str = "digits",
    reject_below: float | None = None,
    judge: reference.Params | None = None,
) -> list[dict]:
    """One result per file: {"file", "readable": True, "digit", "probabilities", "box"} for a digit;
    {"file", "readable": True, "number", "digits": [{"digit", "probabilities", "box"}, ...]} for
    several side by side; {"file", "readable": False, "reason"} (with the probabilities where the
    network was asked: a top one is below `reject_below`); or {"file", "error"}. A "box" is the
    digit's ink, [left, top, right, bottom] in the file's pixels. With `save_dir`, also
    "preprocessed" (the 28x28 image(s) the network saw) and "found" (the page with what was found
    drawn on it), written there; each file is then answered before the next is read, so no page is
    kept. With a `judge`, digits that touch are cut apart (split_touching)."""
    results, pending, taken = [], [], set()
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)

    def settle() -> None:  # one batch through the network for every pending file's digits
        if pending:
            probabilities = predictor(np.stack([f.reshape(-1) for _, fields, _ in pending for f in fields]))
            at = 0
            for index, fields, found in pending:
                answer(results[index], probabilities[at : at + len(fields)], found, reject_below)
                at += len(fields)
            pending.clear()

    for path in files:
        found, fields = preprocess.Found(), []
        try:
            fields = preprocess.load_page(path, preprocessing, found)
            if judge is not None and found.inks:
                fields = split_touching(fields, found, predictor, judge)
            results.append({"file": str(path), "readable": True})
            kept = found if save_dir is not None else preprocess.Found(per_pixel=found.per_pixel, boxes=found.boxes)
            pending.append((len(results) - 1, fields, kept))  # a batch keeps no page
        except preprocess.NotReadable as exc:
            results.append({"file": str(path), "readable": False, "reason": str(exc).removeprefix(f"{path}: ")})
        except DataError as exc:
            results.append({"file": str(path), "error": str(exc)})
            continue
        if save_dir is not None:
            settle()
            save_seen(fields, found, results[-1], save_dir, taken)
    settle()
    return results


def read_images(
    images: list[bytes],
    predictor: Predictor,
    preprocessing: str = "digits",
    reject_below: float | None = None,
    judge: reference.Params | None = None,
) -> list[dict]:
    """predict_files for images given as their files' bytes (the served MLflow model's input): the
    same fields, with "image" (its index) in place of "file"."""
    with tempfile.TemporaryDirectory() as folder:
        files = [Path(folder) / f"image-{i}" for i in range(len(images))]
        for path, data in zip(files, images):
            path.write_bytes(data)
        results = predict_files(files, predictor, preprocessing=preprocessing, reject_below=reject_below, judge=judge)
    for i, (path, result) in enumerate(zip(files, results)):
        del result["file"]
        if "error" in result:
            result["error"] = result["error"].replace(str(path), f"image {i}")
    return [{"image": i, **result} for i, result in enumerate(results)]


def format_table(results: list[dict]) -> str:
    """One row per file: the digit or number (or "error", or "-" when not readable) and a digit's
    probabilities; a last column says why an image is not readable, or how sure the network is of
    each digit of a number."""
    rows = []
    for r in results:
        probabilities = r.get("probabilities") or [None] * 10
        note = f"not readable: {r['reason']}" if r.get("readable") is False else ""
        if "digits" in r and not note:
            note = "digits: " + ", ".join(f"{d['digit']} (p {max(d['probabilities']):.2f})" for d in r["digits"])
        rows.append(
            {
                "file": r["file"],
                "digit": "error" if "error" in r else r.get("digit", r.get("number", "-")),
                **{f"p{d}": "" if p is None else f"{p:.3f}" for d, p in enumerate(probabilities)},
                "note": note,
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
            help="write into DIR, named after each file, the 28x28 image the network saw (NAME.png) and the "
            "page with the printed lines, digit boxes and reading drawn on it (NAME.found.png) (default: off)",
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
        model = load_predictor(args.model, args.stats)
        reject_below = model.reject_below if args.reject_below is None else args.reject_below
        results = predict_files(
            files, model.predictor, args.save_preprocessed, model.preprocessing, reject_below, model.judge
        )
        print(json.dumps(results, indent=2) if args.json else format_table(results))
        for r in results:
            if "error" in r:
                print(cli.error_line(r["error"]), file=sys.stderr)
        if any("error" in r for r in results):
            sys.exit(1)

    cli.run(run)
