"""Predicting digits in image files: the MNIST-style preprocessing, the command, the MLflow model
(`mlflow models predict` and `mlflow models serve`) and the registry alias. Real MNIST test digits
written to real PNG/JPEG files; a network trained with the default configuration."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from helpers import BIN, REPO
from mnist_np import processes
from mnist_np.data import splits
from mnist_np.data.idx import read_idx
from mnist_np.model import reference, weights
from mnist_np.serving import preprocess
from mnist_np.serving.predict import format_table, load_predictor, predict_files

pytestmark = pytest.mark.slow  # trains the default network on real MNIST once per session
# `mlflow models serve` execs uvicorn by name, so the environment's bin directory must be on PATH.
ENV_PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
N = 200  # test digits per variant
TOUCHING_NUMBERS, TOUCHING_SINGLES = 40, 200  # pages of touching digits per length, and of single digits


@pytest.fixture(scope="session")
def trained(trained_default, mnist_mirror):
    """(project directory with real processed data and default-config weights, its run id, its
    MLflow store, the first N test images and labels)."""
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:N]
    labels = read_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz")[:N]
    return trained_default.root, trained_default.run_id, trained_default.uri, images, labels


def mnist_predict(cwd: Path, *args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed `mnist-predict` command, run in `cwd` to its end."""
    cmd = [str(BIN / "mnist-predict"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def direct_predictions(root: Path, images: np.ndarray) -> np.ndarray:
    """The network applied to the original arrays, as the evaluate stage does."""
    params = weights.load(root / "models" / "model.npz")
    return reference.predict_proba(params, splits.transform(images, splits.load_stats(root / "data" / "processed")))


def write_variant(directory: Path, images: np.ndarray, variant: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, array in enumerate(images):
        image = Image.fromarray(array)
        suffix = "png"
        if variant == "inverted":  # dark ink on light paper, as people draw
            image = Image.fromarray(255 - array)
        elif variant == "resized":
            image = image.resize((112, 112), Image.Resampling.BICUBIC)
        elif variant == "padded":  # small digit in a corner of a large dark-ink-on-white canvas
            canvas = Image.new("L", (160, 120), 255)
            canvas.paste(
                Image.fromarray(255 - array).resize((42, 42), Image.Resampling.BILINEAR),
                (int(rng.integers(0, 110)), int(rng.integers(0, 70))),
            )
            image = canvas
        elif variant == "jpeg":
            image = Image.fromarray(255 - array).resize((84, 84), Image.Resampling.BICUBIC).convert("RGB")
            suffix = "jpg"
        path = directory / f"{i:04d}.{suffix}"
        image.save(path, quality=85) if suffix == "jpg" else image.save(path)
        paths.append(path)
    return paths


def test_command_agrees_with_the_network_on_untouched_digits(trained, tmp_path):
    root, _, _, images, labels = trained
    write_variant(tmp_path / "plain", images, "plain")
    done = mnist_predict(root, "--json", tmp_path / "plain")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = direct_predictions(root, images)
    np.testing.assert_allclose([r["probabilities"] for r in results], expected, atol=1e-5)
    read = [i for i, r in enumerate(results) if r["readable"]]  # the rest: less sure than the model's threshold
    assert len(read) >= 0.97 * len(results) and all("not sure" in r["reason"] for r in results if not r["readable"])
    assert [results[i]["digit"] for i in read] == expected.argmax(axis=1)[read].tolist()
    table = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "predict.py"), str(tmp_path / "plain" / "0000.png")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert table.returncode == 0 and re.search(rf"0000\.png\s+{expected[0].argmax()}\s+0\.", table.stdout), table.stdout


@pytest.mark.parametrize("variant", ["inverted", "resized", "padded", "jpeg"])
def test_transformed_digits_stay_at_least_90_percent_accurate(trained, tmp_path, variant):
    root, _, _, images, labels = trained
    files = write_variant(tmp_path / variant, images, variant)
    predictor, preprocessing, _, _ = load_predictor(str(root / "models" / "model.npz"), root / "data" / "processed")
    results = predict_files(files, predictor, preprocessing=preprocessing)
    accuracy = np.mean([r.get("digit") == y for r, y in zip(results, labels)])  # not readable: wrong
    assert accuracy >= 0.90, f"{variant}: {accuracy:.3f}"


def test_bad_files_get_their_own_error_and_the_rest_are_predicted(trained, tmp_path):
    root, *_, images, labels = trained
    Image.fromarray(images[0]).save(tmp_path / "good.png")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    (tmp_path / "notes.txt").write_text("not an image")
    done = mnist_predict(root, "--json", tmp_path)
    assert done.returncode == 1
    results = {Path(r["file"]).name: r for r in json.loads(done.stdout)}
    assert results["good.png"]["digit"] == labels[0]
    assert results["good.png"]["readable"] and "not a readable image" in results["notes.txt"]["error"]
    assert results["blank.png"]["readable"] is False and "no ink" in results["blank.png"]["reason"]  # an answer
    assert "error: " in done.stderr and "Traceback" not in done.stderr


def test_mlflow_models_predict_uses_the_logged_pyfunc_model(trained, tmp_path):
    """`mlflow models predict` on the network (`model`), given raw 0-255 pixels (`raw_pixels`)."""
    root, run_id, uri, images, _ = trained
    payload = {"inputs": images[:8].reshape(8, -1).astype(float).tolist(), "params": {"raw_pixels": True}}
    (tmp_path / "input.json").write_text(json.dumps(payload))
    done = subprocess.run(
        [
            str(BIN / "mlflow"),
            "models",
            "predict",
            "-m",
            f"runs:/{run_id}/model",
            "-i",
            str(tmp_path / "input.json"),
            "-t",
            "json",
            "-o",
            str(tmp_path / "out.json"),
            "--env-manager",
            "local",
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert [p["digit"] for p in predictions] == direct_predictions(root, images[:8]).argmax(axis=1).tolist()


def test_the_served_reader_answers_image_files_as_mnist_predict_does(trained, tmp_path):
    """`mlflow models serve` of the run's `reader`: image files sent as base64 (a digit, a number, a
    page of specks, bytes that are no image) get mnist-predict --json's fields, per digit boxes
    included, and the threshold can be changed per request."""
    root, run_id, uri, images, labels = trained
    Image.fromarray(255 - images[0]).resize((112, 112)).save(tmp_path / "digit.png")
    page, _ = number_page(images[1:4], np.random.default_rng(0))
    Image.fromarray(page).save(tmp_path / "number.png")
    specks = np.full((200, 300), 215, np.uint8)
    specks[50:53, 40:43] = specks[150:152, 220:223] = 40
    Image.fromarray(specks).save(tmp_path / "specks.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files = [tmp_path / name for name in ("digit.png", "number.png", "specks.png", "broken.png")]
    predictor, preprocessing, stored, judge = load_predictor(
        str(root / "models" / "model.npz"), root / "data" / "processed"
    )
    expected = predict_files(files, predictor, preprocessing=preprocessing, reject_below=stored, judge=judge)
    port = processes.free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"runs:/{run_id}/reader", "-h", "127.0.0.1", "-p", str(port)]
        + ["--env-manager", "local"],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": ENV_PATH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ask(params: dict) -> list[dict]:
        encoded = [[base64.b64encode(f.read_bytes()).decode()] for f in files]
        body = {"dataframe_split": {"columns": ["image"], "data": encoded}, "params": params}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]

    try:
        up = processes.wait_until(
            lambda: server.poll() is not None or processes.answers(f"http://127.0.0.1:{port}", "/ping"), 120, 0.5
        )
        assert up and server.poll() is None, "mlflow models serve did not start"
        served = ask({})
        for i, (answer, local) in enumerate(zip(served, expected)):
            local = {k: v for k, v in local.items() if k != "file"}
            if "error" in local:
                local["error"] = local["error"].replace(str(files[i]), f"image {i}")
            assert answer == {"image": i, **local}
        digit, number, unread, broken = served
        assert digit["digit"] == labels[0] and len(digit["box"]) == 4
        assert len(number["digits"]) == 3 and all(len(d["box"]) == 4 for d in number["digits"])
        assert unread["readable"] is False and "specks" in unread["reason"]
        assert broken["error"].startswith("image 3: not a readable image")
        strict = ask({"reject_below": 1.0})[0]  # no answer is that sure
        assert strict["readable"] is False and "not sure" in strict["reason"]
        mlflow.set_tracking_uri(uri)  # without the parameter, the threshold stored with the network
        (default,) = mlflow.models.get_model_info(f"runs:/{run_id}/reader").signature.params.params
        assert (default.name, default.default) == ("reject_below", stored)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_registered_champion_predicts_through_models_uri(trained, tmp_path):
    root, run_id, uri, images, labels = trained
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "register.py"),
            "--name",
            "mnist-mlp",
            "--experiment",
            "mnist",
            "--all-runs",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and run_id in done.stdout, done.stderr
    Image.fromarray(images[1]).save(tmp_path / "digit.png")
    # Two digits whose ink touches: the registered model carries the judge that cuts them (touching.py).
    Image.fromarray(number_page(images[2:4], np.random.default_rng(1), (-6, -5))[0]).save(tmp_path / "touching.png")
    files = [tmp_path / "digit.png", tmp_path / "touching.png"]
    done = mnist_predict(tmp_path, "--json", "--model", "models:/mnist-mlp@champion", *files, env=env)
    assert done.returncode == 0, done.stderr
    digit, touching = json.loads(done.stdout)
    assert digit["digit"] == direct_predictions(root, images[1:2]).argmax() == labels[1]
    predictor, preprocessing, stored, judge = load_predictor(
        str(root / "models" / "model.npz"), root / "data" / "processed"
    )
    (local,) = predict_files(files[1:], predictor, preprocessing=preprocessing, reject_below=stored, judge=judge)
    assert touching == local and len(local.get("digits", [])) == 2, local


CAPTURES = 500  # digits per capture condition
PAPER, PEN = 210.0, 30.0  # gray levels of the page and of a pen's ink
# Printed lines, grids, dots and boxes in the colours paper has them (RGB): light and dark blue,
# a red margin, gray, black.
PRINT = np.array([(150, 190, 240), (70, 130, 220), (220, 60, 60), (160, 160, 160), (40, 40, 40)], np.float32)
PRINTED = ("ruled", "squared", "dotted", "box", "crossing")


PHOTOS = 8  # pages a photo condition's digits are written on


@functools.cache
def photo_pages() -> list[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]:
    """2048 x 1536 pages as a phone photographs them: uneven light (60 gray levels from one side to
    the other), sensor noise, and the table around the paper beyond one or two of its edges (30-120
    levels, 5-25% of the frame deep, up to 3 degrees askew, the paper's shadow along the edge); each
    as levels, as the 8-bit image, and the box (top, bottom, left, right) of paper its digit may go
    in. Every photo is one of these pages with its digit written on it: 3M noise draws a photo took
    most of the condition's time."""
    rng = np.random.default_rng(1)
    height, width = 1536, 2048
    rows, cols = np.ogrid[:height, :width]
    pages = []
    for _ in range(PHOTOS):
        page = np.full((height, width), PAPER, np.float32) + np.linspace(-30, 30, width, dtype=np.float32)[None, :]
        page += 3 * rng.standard_normal(page.shape, dtype=np.float32)
        free = [0, height, 0, width]
        for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            across, along = (rows, cols - width / 2) if side < 2 else (cols, rows - height / 2)
            extent = height if side < 2 else width
            depth, slope = rng.uniform(0.05, 0.25) * extent, np.tan(np.radians(rng.uniform(-3, 3)))
            inward = (across if side % 2 == 0 else extent - 1 - across) - (depth + slope * along)  # < 0: the table
            shadow = rng.uniform(0, 50) * np.exp(-np.clip(inward, 0, None) / rng.uniform(20, 80))
            table = rng.uniform(30, 120) + 6 * rng.standard_normal(page.shape, dtype=np.float32)
            page = np.where(inward < 0, table, page - shadow).astype(np.float32)
            reach = int(depth + abs(slope) * max(height, width) / 2) + 20  # the paper starts within this
            free[side] = reach if side % 2 == 0 else extent - reach
        pages.append((page, np.clip(np.rint(page), 0, 255).astype(np.uint8), tuple(free)))
    return pages


def draw_line(page: np.ndarray, axis: int, at: float, thickness: int, colour: np.ndarray, span=None) -> None:
    """A printed line across `page` (rows x columns x RGB): horizontal (axis 1) at row `at`, or
    vertical (axis 0) at column `at`, over `span` (start, stop) of its length or all of it."""
    start, stop = span or (0, page.shape[1 - axis])
    first = int(round(at - thickness / 2))
    index = (slice(first, first + thickness), slice(start, stop))
    page[index if axis == 1 else index[::-1]] = colour


def printed_page(condition: str, field: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """A blank RGB page with `condition`'s printed structure (not "box": boxed()), varied in
    spacing, colour, thickness and position, and where on it the digit's `field` x `field` square
    goes (top, left)."""
    page = np.full((224, 224, 3), PAPER, np.float32)
    top, left = (int(v) for v in rng.integers(0, 224 - field + 1, 2))
    if condition == "ruled":  # a notebook page: rulings, and a red margin line on half of them
        spacing, thickness = rng.uniform(28, 64), int(rng.integers(1, 4))
        colour = PRINT[rng.choice([0, 1, 3, 4])]
        for at in np.arange(rng.uniform(0, spacing), 224, spacing):
            draw_line(page, 1, at, thickness, colour)
        if rng.random() < 0.5:
            draw_line(page, 0, rng.uniform(8, 60), int(rng.integers(1, 4)), PRINT[2])
    elif condition == "squared":
        spacing, thickness, colour = rng.uniform(16, 40), int(rng.integers(1, 3)), PRINT[rng.choice([0, 1, 3])]
        for axis in (1, 0):
            for at in np.arange(rng.uniform(0, spacing), 224, spacing):
                draw_line(page, axis, at, thickness, colour)
    elif condition == "dotted":
        spacing, radius, colour = rng.uniform(12, 28), rng.uniform(0.8, 2.0), PRINT[rng.choice([1, 3, 4])]
        rows, cols = np.ogrid[:224, :224]
        y = (rows - rng.uniform(0, spacing)) % spacing
        x = (cols - rng.uniform(0, spacing)) % spacing
        near = np.minimum(y, spacing - y) ** 2 + np.minimum(x, spacing - x) ** 2 <= radius**2
        page[near] = colour
    else:  # crossing: one line through the middle of the digit, across the page
        axis, thickness, colour = int(rng.integers(0, 2)), int(rng.integers(2, 5)), PRINT[rng.choice([1, 3, 4])]
        draw_line(page, axis, (top if axis == 1 else left) + field * rng.uniform(0.3, 0.7), thickness, colour)
    return page, top, left


def boxed(ink: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The digit's `ink` (0-1) written in a form field's printed box, 4-30 pixels from each side of
    the digit, and the image cropped to the box with 4-30 pixels of paper around it."""
    margin = 72  # around the field: room for the widest gap, line and paper
    page = np.full((ink.shape[0] + 2 * margin, ink.shape[1] + 2 * margin, 3), PAPER, np.float32)
    rows, cols = np.nonzero(ink > 0.1)
    gap, thickness, colour = rng.integers(4, 31, 4), int(rng.integers(1, 5)), PRINT[rng.choice([1, 3, 4])]
    top, bottom = margin + rows.min() - gap[0] - thickness, margin + rows.max() + 1 + gap[1] + thickness
    left, right = margin + cols.min() - gap[2] - thickness, margin + cols.max() + 1 + gap[3] + thickness
    for axis, near, far, span in ((1, top, bottom, (left, right)), (0, left, right, (top, bottom))):
        draw_line(page, axis, near + thickness / 2, thickness, colour, span)
        draw_line(page, axis, far - thickness / 2, thickness, colour, span)
    area = page[margin : margin + ink.shape[0], margin : margin + ink.shape[1]]
    area += ink[..., None] * (PEN - area)
    out = rng.integers(4, 31, 4)
    page = page[top - out[0] : bottom + out[1], left - out[2] : right + out[3]]
    return Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8), "RGB")


def capture(digit: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """An MNIST test digit (28x28, light on dark) written on paper and captured under `condition`:
    (the image, the file suffix to save it with)."""
    field = 555 if condition == "photo" else 112  # a photo's: 5% of a 4000x3000 frame at 2048x1536
    strokes = np.asarray(Image.fromarray(digit).resize((field, field), Image.Resampling.BICUBIC), np.float32) / 255
    ink = np.clip(strokes, 0, 1) * (0.4 if condition == "pencil" else 1.0)  # light pencil: 40% of a pen's contrast
    if condition == "box":
        return boxed(ink, rng), "png"
    if condition in PRINTED:  # the pen's ink covers the print where they cross
        page, top, left = printed_page(condition, field, rng)
        area = page[top : top + field, left : left + field]
        area += ink[..., None] * (PEN - area)
        return Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8), "RGB"), "png"
    if condition == "photo":
        paper, image, (top, bottom, left, right) = photo_pages()[int(rng.integers(PHOTOS))]
        top, left = int(rng.integers(top, bottom - field + 1)), int(rng.integers(left, right - field + 1))
        image = image.copy()
        area = paper[top : top + field, left : left + field]
        image[top : top + field, left : left + field] = np.clip(np.rint(area + ink * (PEN - PAPER)), 0, 255)
        return Image.fromarray(image), "jpg"
    page = np.full((224, 224), PAPER, np.float32)
    top, left = (int(v) for v in rng.integers(0, 224 - field + 1, 2))
    page[top : top + field, left : left + field] -= ink * (PAPER - PEN)
    if condition == "noise":  # paper grain and sensor noise
        page += 10 * rng.standard_normal(page.shape, dtype=np.float32)
    if condition == "lighting":  # uneven light: 60 gray levels from one side to the other
        page += np.linspace(-30, 30, page.shape[1], dtype=np.float32)[None, :]
    image = Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8))
    return image, ("jpg" if condition == "jpeg" else "png")


@pytest.fixture(scope="session")  # not module: under xdist a worker may run other modules between a condition's tests
def captured(mnist_mirror, tmp_path_factory):
    """condition -> (what the network sees of the CAPTURES test digits captured so, the digits
    untouched, their labels). Each condition's image files are written and read back through
    preprocess.load_page (predict_files' own step) once for both models: a photo condition's 500
    images of 2048 x 1536 took ~4 minutes, which each model paid again."""
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:CAPTURES]
    labels = read_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz")[:CAPTURES]
    seen = {}

    def get(condition: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if condition not in seen:
            folder, rng, rows = tmp_path_factory.mktemp(condition), np.random.default_rng(0), []
            for i, digit in enumerate(images):
                image, suffix = capture(digit, condition, rng)
                path = folder / f"{i:04d}.{suffix}"
                image.save(path, quality=50 if condition == "jpeg" else 90) if suffix == "jpg" else image.save(path)
                fields = preprocess.load_page(path, "digits")  # as mnist-predict reads it: a number if it were one
                assert len(fields) == 1, f"{condition} {i}: one digit read as {len(fields)}"
                rows.append(fields[0].reshape(-1))
                path.unlink()  # a photo is ~300 kB: 150 MB a condition otherwise
            seen[condition] = np.stack(rows)
        return seen[condition], images, labels

    return get


CONDITIONS = ["clean", "noise", "lighting", "jpeg", "pencil", "photo", *PRINTED]


@pytest.mark.parametrize("model", ["default", "best"])
@pytest.mark.parametrize(  # both models of a condition on one xdist worker: its images are made once
    "condition", [pytest.param(c, marks=pytest.mark.xdist_group(f"captured-{c}")) for c in CONDITIONS]
)
def test_captured_digits_read_within_two_points_of_the_untouched_ones(request, captured, condition, model):
    root = request.getfixturevalue(f"trained_{model}").root
    seen, images, labels = captured(condition)
    untouched = float(np.mean(direct_predictions(root, images).argmax(axis=1) == labels))
    predictor, preprocessing, _, _ = load_predictor(str(root / "models" / "model.npz"), root / "data" / "processed")
    assert preprocessing == "digits"  # what `captured` read them with
    accuracy = float(np.mean(predictor(seen).argmax(axis=1) == labels))
    assert accuracy >= untouched - 0.02, f"{condition}: {accuracy:.3f} against {untouched:.3f} untouched"


def test_the_image_the_network_saw_is_saved_beside_each_prediction(trained, tmp_path):
    root, *_, images, labels = trained
    for folder in ("a", "b"):  # the same name twice: both kept
        (tmp_path / folder).mkdir()
        Image.fromarray(255 - images[0]).resize((84, 84)).save(tmp_path / folder / "digit.png")
    seen = tmp_path / "seen"
    done = mnist_predict(root, "--json", "--save-preprocessed", seen, tmp_path / "a", tmp_path / "b")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [Path(r["preprocessed"]).name for r in results] == ["digit.png", "digit-2.png"]
    for r in results:
        with Image.open(r["preprocessed"]) as image:
            saved = np.asarray(image)
        expected = np.rint(preprocess.load_digit(r["file"])).astype(np.uint8)
        assert saved.shape == (28, 28) and np.array_equal(saved, expected)


def test_the_page_is_saved_with_the_lines_box_and_reading_drawn_on_it(trained, tmp_path):
    """What a user sees in `<name>.found.png`: the ruling that was taken out tinted magenta, the
    table beyond the page's edge blue, a green box around the digit (where --json's "box" says it
    is) with the reading above it, and a page without a digit with the reason in red; a form box
    and a number are drawn too (`make screenshots` keeps all four in docs/img for docs/serving.md)."""
    root, *_, images, labels = trained
    page = np.full((224, 224, 3), PAPER, np.float32)
    draw_line(page, 1, 30, 2, PRINT[1])  # a blue ruling above the digit
    page[:, 204:] = 70  # the table beyond the page's right edge, photographed with it
    strokes = np.asarray(Image.fromarray(images[0]).resize((112, 112), Image.Resampling.BICUBIC), np.float32) / 255
    area = page[60:172, 80:192]
    area += np.clip(strokes, 0, 1)[..., None] * (PEN - area)
    Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8)).save(tmp_path / "ruled.png")
    Image.new("L", (150, 100), 215).save(tmp_path / "blank.png")
    rng = np.random.default_rng(3)
    boxed(np.clip(strokes, 0, 1), rng).save(tmp_path / "box.png")
    Image.fromarray(number_page(images[1:5], rng)[0]).save(tmp_path / "number.png")
    predictor, preprocessing, stored, judge = load_predictor(
        str(root / "models" / "model.npz"), root / "data" / "processed"
    )
    names = ["ruled", "blank", "box", "number"]
    seen = Path(os.environ.get("MNIST_NP_SCREENSHOTS") or tmp_path / "seen")  # make screenshots: docs/img
    ruled, blank, box, number = predict_files(
        [tmp_path / f"{name}.png" for name in names], predictor, seen, preprocessing, stored, judge
    )
    assert box["digit"] == labels[0] and "found" in box
    assert [d["box"][0] for d in number["digits"]] == sorted(d["box"][0] for d in number["digits"])
    rows, cols = np.nonzero(strokes > 0.1)
    left, top, right, bottom = ruled["box"]
    assert abs(left - (80 + cols.min())) <= 2 and abs(top - (60 + rows.min())) <= 2
    assert abs(right - (81 + cols.max())) <= 2 and abs(bottom - (61 + rows.max())) <= 2
    assert ruled["digit"] == labels[0]
    with Image.open(ruled["found"]) as image:
        drawn = np.asarray(image.convert("RGB")).astype(int)
    scale = drawn.shape[0] / 224  # drawn at least 280 px on its longer side
    line = drawn[round(31 * scale), : round(60 * scale)]  # the ruling, left of the digit
    assert ((line[:, 0] - line[:, 1] > 60) & (line[:, 2] - line[:, 1] > 60)).all()  # magenta
    table = drawn[:, round(206 * scale) :]
    assert ((table[..., 2] - table[..., 0] > 60) & (table[..., 1] > table[..., 0])).mean() > 0.95  # blue
    edge, across = round(top * scale) - 2, slice(round(left * scale), round(right * scale))
    frame = drawn[edge - 2 : edge + 2, across]
    assert ((frame[..., 1] - frame[..., 0] > 80).any(axis=0)).mean() > 0.9  # the box's green top edge
    label = drawn[: edge - 2, across]
    assert ((label[..., 1] - label[..., 0] > 80) & (label[..., 0] < 100)).sum() > 20  # the reading, in green
    assert blank["readable"] is False and "box" not in blank and "preprocessed" not in blank
    with Image.open(blank["found"]) as image:
        drawn = np.asarray(image.convert("RGB")).astype(int)
    assert ((drawn[..., 0] > 150) & (drawn[..., 1] < 80)).sum() > 50  # the reason, in red


def test_a_model_whose_data_is_not_digits_gets_no_digit_preprocessing(trained, tmp_path):
    root, run_id, uri, images, _ = trained
    mlflow.set_tracking_uri(uri)
    reading = json.loads((root / "models" / "reading.json").read_text())
    metadata = mlflow.models.get_model_info(f"runs:/{run_id}/model").metadata
    assert metadata == {"preprocessing": "digits", "reject_below": reading["reject_below"]}  # what mnist-predict needs
    # The same network, as if its training data were photos of something else.
    stats = json.loads((root / "data" / "processed" / "stats.json").read_text())
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "stats.json").write_text(json.dumps({**stats, "preprocessing": "none"}))
    page = np.full((56, 84), 230, np.uint8)
    page[10:40, 20:30] = 20  # dark ink on light paper, off-centre: digit preprocessing would invert and centre it
    Image.fromarray(page).save(tmp_path / "photo.png")
    predictor, preprocessing, _, _ = load_predictor(str(root / "models" / "model.npz"), tmp_path / "stats")
    assert preprocessing == "none"
    [result] = predict_files([tmp_path / "photo.png"], predictor, tmp_path / "seen", preprocessing)
    with Image.open(result["preprocessed"]) as seen:
        saved = np.asarray(seen)
    plain = Image.fromarray(page.astype(np.float32), mode="F").resize((28, 28), Image.Resampling.LANCZOS)
    assert np.array_equal(saved, np.rint(np.clip(np.asarray(plain), 0, 255)).astype(np.uint8))
    assert saved[0, 0] > 200  # the paper stays light: nothing was inverted


def number_page(digits: np.ndarray, rng: np.random.Generator, gap: tuple[int, int] = (8, 31)) -> np.ndarray:
    """MNIST digits written side by side at 4x (112 px) on paper, `gap` pixels apart (ink to ink,
    8-30; negative: over the neighbour's columns), each 8-32 pixels from the top; also where each
    digit's field was placed (left, top)."""
    inks = [
        np.clip(np.asarray(Image.fromarray(d).resize((112, 112), Image.Resampling.BICUBIC), np.float32) / 255, 0, 1)
        for d in digits
    ]
    canvas, x, placed = np.zeros((152, 160 * len(digits) + 160), np.float32), 120, []
    for ink in inks:
        span = np.nonzero(ink.max(axis=0) > 0.1)[0]
        top, left = int(rng.integers(8, 33)), x - int(span[0])
        np.maximum(canvas[top : top + 112, left : left + 112], ink, out=canvas[top : top + 112, left : left + 112])
        placed.append((left, top))
        x = left + int(span[-1]) + 1 + int(rng.integers(*gap))
    return np.clip(np.rint(PAPER - canvas[:, : x + 40] * (PAPER - PEN)), 0, 255).astype(np.uint8), placed


def test_a_number_is_read_digit_by_digit_left_to_right(trained, mnist_mirror, tmp_path):
    """Numbers of 2 to 6 MNIST test digits side by side (100 of each length) are read exactly at
    least as often as the single-digit accuracy to the power of the length, minus 3 points (issue
    23's bar), each digit with its box; one digit on a page is still answered as one digit. Read here
    as numbers.py finds them, each column one digit: what the judge of touching digits adds (and how
    few single digits it cuts) is the next test's, and benchmarks/reading_numbers.py holds the
    pipeline's judge, larger than the suite's, to the bar on 1,000 numbers of each length."""
    root, *_ = trained
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:2000]
    labels = read_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz")[:2000]
    predictor, preprocessing, _, _ = load_predictor(str(root / "models" / "model.npz"), root / "data" / "processed")
    single = float(np.mean(direct_predictions(root, images).argmax(axis=1) == labels))
    rng, files, truth, where = np.random.default_rng(0), [], [], []
    for length in range(2, 7):
        for i in range(100):
            chosen = rng.integers(0, len(images), length)
            page, placed = number_page(images[chosen], rng)
            files.append(tmp_path / f"{length}-{i}.png")
            Image.fromarray(page).save(files[-1])
            truth.append("".join(str(d) for d in labels[chosen]))
            where.append(placed)
    results = predict_files(files, predictor, preprocessing=preprocessing)
    for length in range(2, 7):
        read = [r.get("number") == t for r, t in zip(results, truth) if len(t) == length]
        assert np.mean(read) >= single**length - 0.03, f"{length} digits: {np.mean(read):.2f}, {single:.3f} each"
    for result, placed in zip(results, where):
        if len(result.get("digits", [])) == len(placed):  # each digit's box lies in its own field
            for digit, (left, top) in zip(result["digits"], placed):
                x0, y0, x1, y1 = digit["box"]
                assert left <= x0 < x1 <= left + 112 and top <= y0 < y1 <= top + 112
    number = next(r for r in results if r.get("number"))
    first = number["digits"][0]
    row = format_table([number]).splitlines()[1]  # the table a person reads: the number, each digit's p
    assert number["number"] in row and f"digits: {first['digit']} (p {max(first['probabilities']):.2f})" in row
    Image.fromarray(255 - images[0]).resize((112, 112)).save(tmp_path / "one.png")
    [one] = predict_files([tmp_path / "one.png"], predictor, preprocessing=preprocessing)
    assert one["digit"] == labels[0] and "number" not in one and "digits" not in one


def test_touching_digits_are_cut_apart_and_single_digits_stay_whole(trained, mnist_mirror, tmp_path):
    """Two and three MNIST test digits each 0-6 px over its neighbour's columns (about a third of
    such neighbours share ink) read exactly far more often with the judge of touching digits than
    with each column read as one digit, each digit's box left of the next; of single digits written
    the same way the judge cuts at most 2% (the pipeline's judge: docs/serving.md)."""
    root, *_ = trained
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:2000]
    labels = read_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz")[:2000]
    predictor, preprocessing, _, judge = load_predictor(str(root / "models" / "model.npz"), root / "data" / "processed")
    assert judge is not None  # the test data's, beside its stats.json
    rng, files, truth = np.random.default_rng(0), [], []
    for length, count in ((1, TOUCHING_SINGLES), (2, TOUCHING_NUMBERS), (3, TOUCHING_NUMBERS)):
        for i in range(count):
            chosen = rng.integers(0, len(images), length)
            files.append(tmp_path / f"{length}-{i}.png")
            Image.fromarray(number_page(images[chosen], rng, (-6, 1))[0]).save(files[-1])
            truth.append("".join(str(d) for d in labels[chosen]))
    cut = predict_files(files, predictor, preprocessing=preprocessing, judge=judge)
    whole = predict_files(files, predictor, preprocessing=preprocessing)

    def exactly(results: list[dict], length: int) -> float:
        return float(
            np.mean([r.get("number", str(r.get("digit"))) == t for r, t in zip(results, truth) if len(t) == length])
        )

    for length in (2, 3):
        assert exactly(cut, length) >= exactly(whole, length) + 0.2, (
            length,
            exactly(cut, length),
            exactly(whole, length),
        )
    for result in cut:
        lefts = [d["box"][0] for d in result.get("digits", [])]
        assert lefts == sorted(lefts)
    singles_cut = sum("number" in r for r, t in zip(cut, truth) if len(t) == 1)
    assert singles_cut <= 0.02 * TOUCHING_SINGLES


SCALINGS = [(2, "LANCZOS"), (4, "BICUBIC"), (10, "NEAREST"), (15, "BILINEAR")]


def view(page: np.ndarray) -> np.ndarray:
    """What the network sees of a page; an empty field where it would say "not readable" (then it
    reads as no digit: a miss)."""
    try:
        return preprocess.to_mnist(page)
    except preprocess.NotReadable:
        return np.zeros((preprocess.FIELD, preprocess.FIELD), np.float32)


@pytest.fixture(scope="session")
def scaled_views(mnist_mirror):
    """(scale, resampling) -> what the network sees of the first CAPTURES test digits photographed
    that much larger (dark on white, scaled with that filter), and the digits untouched."""
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:CAPTURES]
    views = {}
    for scale, method in SCALINGS:
        filter_ = getattr(Image.Resampling, method)
        views[scale, method] = np.stack(
            [view(np.asarray(Image.fromarray(255 - d).resize((28 * scale,) * 2, filter_), np.float32)) for d in images]
        )
    return views, images


@pytest.mark.xdist_group("captured-clean")  # the worker that trains both models for the clean captures
def test_a_digit_scaled_up_gives_the_network_the_view_mnist_would(scaled_views):
    """2x to 15x, any filter: the 28x28 view matches the original digit's (MNIST's own procedure),
    pixel for pixel within a few gray levels on average, and never shifted or shrunk."""
    views, images = scaled_views
    for (scale, method), seen in views.items():
        difference = np.abs(seen - images).mean(axis=(1, 2))
        assert np.median(difference) < 10 and np.percentile(difference, 95) < 25, (scale, method)
        rows = [np.ptp(np.nonzero(v.sum(axis=1) > 0)[0]) + 1 for v in seen]  # the digit's height: MNIST's 20 px box
        heights = [np.ptp(np.nonzero(d.sum(axis=1) > 0)[0]) + 1 for d in images]
        assert np.mean(np.abs(np.subtract(rows, heights)) <= 1) > 0.95, (scale, method)


@pytest.mark.xdist_group("captured-clean")
@pytest.mark.parametrize("model", ["default", "best"])
def test_a_digit_scaled_up_reads_as_well_as_at_its_own_size(request, scaled_views, model):
    root = request.getfixturevalue(f"trained_{model}").root
    views, images = scaled_views
    labels = read_idx(request.getfixturevalue("mnist_mirror") / "t10k-labels-idx1-ubyte.gz")[:CAPTURES]
    untouched = float(np.mean(direct_predictions(root, images).argmax(axis=1) == labels))
    allowed = 0.02 if model == "default" else 0.01  # issue 23's bar: 2 points, 1 with the best model
    for key, seen in views.items():
        accuracy = float(np.mean(direct_predictions(root, seen).argmax(axis=1) == labels))
        assert accuracy >= untouched - allowed, f"{key}: {accuracy:.3f} against {untouched:.3f} untouched"


def junk_page(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A page with no digit on it: scattered specks, sensor noise, or blank paper with a smudge."""
    height, width = (int(v) for v in rng.integers(150, 600, 2))
    rows, cols = np.ogrid[:height, :width]
    if kind == "noise":
        return np.clip(200 + rng.uniform(5, 40) * rng.standard_normal((height, width)), 0, 255)
    page = np.full((height, width), 215.0)
    if kind == "specks":
        for _ in range(int(rng.integers(5, 60))):
            y, x, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.5, 3.5)
            page[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = rng.uniform(20, 120)
    else:  # a smudge: a soft, dark patch of any size and shape
        y, x, size = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width, rng.uniform(5, 40)
        stretch = size * rng.uniform(0.5, 2)
        page -= rng.uniform(30, 120) * np.exp(-((rows - y) ** 2) / (2 * size**2) - (cols - x) ** 2 / (2 * stretch**2))
        page += 2 * rng.standard_normal((height, width))
    return page


def test_a_page_without_a_digit_is_not_readable_and_clean_digits_are_read(trained, mnist_mirror, tmp_path):
    """Pages of specks, noise or blank paper with a smudge are "not readable" (with the reason), and
    of CAPTURES clean MNIST test digits at most 2% are turned away with the threshold stored with
    the model: issue 23's bar, 95% of each kind of page (reached: noise 100%, specks 98.5%,
    smudges 100% of 200 pages each, default model)."""
    root, *_ = trained
    predictor, preprocessing, stored, judge = load_predictor(
        str(root / "models" / "model.npz"), root / "data" / "processed"
    )
    reading = json.loads((root / "models" / "reading.json").read_text())
    assert stored == reading["reject_below"] and reading["rejected_share_of_validation"] <= 0.01
    rng = np.random.default_rng(0)
    for kind in ("specks", "noise", "smudge"):
        folder = tmp_path / kind
        folder.mkdir()
        for i in range(100):
            Image.fromarray(np.clip(np.rint(junk_page(kind, rng)), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
        results = predict_files(sorted(folder.iterdir()), predictor, None, preprocessing, stored, judge)
        unread = [r for r in results if r["readable"] is False and r["reason"]]
        assert len(unread) >= 95, f"{kind}: {len(unread)} of 100 not readable"
    clean = tmp_path / "clean"
    clean.mkdir()
    for i, digit in enumerate(read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:CAPTURES]):
        Image.fromarray(digit).save(clean / f"{i:04d}.png")
    results = predict_files(sorted(clean.iterdir()), predictor, None, preprocessing, stored, judge)
    assert sum(r["readable"] is False for r in results) <= 0.02 * CAPTURES
