"""Digits that touch: a column of ink that holds several digits, cut into them (issue 23).

Digits written close together share ink, so finding the ink's parts (numbers.py) leaves them one
column. A column is read here as the likeliest sequence of pieces:
1. cut by seams: for every bottom pixel, the cheapest top-to-bottom path through the ink, a step
   sideways costing SIDEWAYS pixels of full ink; the local minima of the cost are the candidate cuts;
2. every piece between two cuts (or an edge) that is tall and heavy enough is read by the network
   and by the judge: reference.py's network with eleven outputs, "this digit, whole" for each digit
   and "not one whole digit", trained on the pieces of columns made of touching training digits
   (train_judge);
3. the column is read as the path of pieces, of any count up to MOST, with the highest score: per
   piece the log of the network's top probability and of the judge's probability that the piece is
   that digit, whole, plus PIECE, less CROSSING per pixel of ink its left cut crosses. A single digit
   is one piece: the whole column.

Measured in docs/serving.md ("Digits that touch"), by benchmarks/reading_numbers.py and
benchmarks/touching_probe.py. The judge is made by the normalize stage from the training split
(judge.npz beside stats.json) and travels with every served model; without one a column is read whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.splits import JUDGE_FILE, REDO_NORMALIZE
from ..errors import DataError
from ..files import load_npz, save_npz
from ..model import reference
from . import preprocess

SIDEWAYS = 3.0  # a seam's cost for one pixel sideways, in pixels of full ink crossed
TALL = 0.5  # a piece spans at least this share of its column's height
HEAVY = 0.1  # and holds at least this share of its ink
CROSSING = 0.1  # a cut's cost, per pixel of full ink it crosses (log-probability units)
PIECE = 1.0  # each piece's bonus: without it a path of fewer pieces wins for having fewer terms
MOST = 6  # a column is read as at most this many digits
ALONE = 0.5  # a column the judge takes for one whole digit (any) at least this probability is not cut
CUT_HEIGHT = 128  # a taller column is scaled to this height to be cut (the benchmarks': up to ~110 px)
KEPT = 0.9  # a piece is whole when it holds this share of one digit's ink and that digit this share of it
JUDGE_HIDDEN, JUDGE_EPOCHS, JUDGE_RATE, JUDGE_BATCH = 128, 15, 0.05, 64
BROKEN = 10  # the judge's output "not one whole digit" (0-9: that digit, whole)

Read = Callable[[np.ndarray], np.ndarray]  # (n, 784) fields in 0-255 -> (n, 10) probabilities


def seams(ink: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """The column's candidate cuts, left to right: for each, the ink it crosses (in full-ink pixels
    of a 20 px high digit) and the last column left of it per row."""
    cost = ink / np.float32(255)
    total, back = cost[0].copy(), np.zeros(ink.shape, np.int8)
    for row in range(1, ink.shape[0]):
        left, right = np.r_[np.inf, total[:-1]] + SIDEWAYS, np.r_[total[1:], np.inf] + SIDEWAYS
        choice = np.argmin(np.stack([left, total, right]), axis=0)
        total = np.choose(choice, [left, total, right]) + cost[row]
        back[row] = choice - 1
    ends = [x for x in range(1, ink.shape[1] - 1) if total[x] <= total[x - 1] and total[x] < total[x + 1]]
    cuts = []
    for x in ends:
        path = np.empty(ink.shape[0], int)
        path[-1] = x
        for row in range(ink.shape[0] - 1, 0, -1):
            path[row - 1] = path[row] + back[row, path[row]]
        cuts.append((float(total[x]) * preprocess.BOX / ink.shape[0], path))
    return sorted(cuts, key=lambda cut: float(np.mean(cut[1])))


def candidates(ink: np.ndarray) -> tuple[list[float], dict[tuple[int, int], dict]]:
    """What each cut crosses (the column's edges first and last, crossing nothing), and the pieces
    a path may take: between cuts i and j, tall and heavy enough, and strokes. Each holds its "ink"
    cropped to its "box" in the column (top, left, bottom, right), its 28x28 "field" and what the
    judge sees of it, "seen" (the field in 0-1, its share of the column's height and ink, its width
    for its height)."""
    found = seams(ink)
    cuts = [None, *(path for _, path in found), None]
    columns, total, out = np.arange(ink.shape[1])[None, :], float(ink.sum()), {}
    for i in range(len(cuts) - 1):
        for j in range(i + 1, len(cuts)):
            keep = np.ones(ink.shape, bool)
            if cuts[i] is not None:
                keep &= columns > cuts[i][:, None]
            if cuts[j] is not None:
                keep &= columns <= cuts[j][:, None]
            rows, cols = np.nonzero(keep & (ink > 0))
            if not len(rows):
                continue
            top, left, bottom, right = int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1
            piece = np.where(keep, ink, 0)[top:bottom, left:right]
            height, heavy = bottom - top, float(piece.sum()) / total
            if height < TALL * ink.shape[0] or heavy < HEAVY:
                continue
            try:
                field = preprocess.field_of(piece)
            except preprocess.NotReadable:  # no digit's strokes
                continue
            seen = np.r_[field.ravel() / 255, height / ink.shape[0], heavy, (right - left) / height]
            out[i, j] = {
                "ink": piece,
                "box": (top, left, bottom, right),
                "field": field,
                "seen": seen.astype(np.float32),
            }
    return [0.0, *(cost for cost, _ in found), 0.0], out


def paths(ink: np.ndarray, read: Read, judge: reference.Params) -> dict[int, tuple[float, list[dict]]]:
    """For each count of pieces up to MOST, the likeliest path of that many through the column
    (left to right) and its score: per piece the log of the network's top probability and of the
    judge's probability that the piece is that digit, whole, plus PIECE, less CROSSING per pixel of
    ink its left cut crosses. Each piece holds its "field" and its "box" in the column (top, left,
    bottom, right). A column taller than CUT_HEIGHT is cut at that height (time and memory stay
    bounded on a large photo)."""
    factor = min(1.0, CUT_HEIGHT / ink.shape[0])
    if factor < 1:
        size = (max(1, round(ink.shape[1] * factor)), CUT_HEIGHT)
        ink = np.asarray(Image.fromarray(ink.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS))
        ink = np.clip(ink, 0, 255)
    crossed, found = candidates(ink)
    if not found:
        return {}
    options = list(found.values())
    probabilities = read(np.stack([option["field"] for option in options]).reshape(len(options), -1))
    judged = reference.predict_proba(judge, np.stack([option["seen"] for option in options]))
    for option, p, q in zip(options, probabilities, judged):
        option["score"] = float(np.log(p.max() + 1e-6) + np.log(q[p.argmax()] + 1e-6) + PIECE)
    last = len(crossed) - 1
    best: dict[tuple[int, int], tuple[float, list]] = {(0, 0): (0.0, [])}
    for j in range(1, last + 1):
        for k in range(1, MOST + 1):
            reaching = [
                (best[i, k - 1][0] + piece["score"] - CROSSING * crossed[i], best[i, k - 1][1] + [piece])
                for (i, end), piece in found.items()
                if end == j and (i, k - 1) in best
            ]
            if reaching:
                best[j, k] = max(reaching, key=lambda path: path[0])
    for piece in options:  # its box in the column as given
        piece["box"] = tuple(round(v / factor) for v in piece["box"])
    return {k: best[last, k] for k in range(1, MOST + 1) if (last, k) in best}


def split(ink: np.ndarray, field: np.ndarray, read: Read, judge: reference.Params) -> list[dict]:
    """The digits a column of ink holds, left to right, where it holds more than one (paths: the
    likeliest of any count); [] where it is one digit (its `field`): the judge takes it for one
    whole digit (at least ALONE), or one piece is the likeliest path."""
    height, width = ink.shape
    seen = np.r_[field.ravel() / 255, 1.0, 1.0, width / height].astype(np.float32)
    if 1 - reference.predict_proba(judge, seen[None])[0, BROKEN] >= ALONE:
        return []
    best = paths(ink, read, judge)
    count = max(best, key=lambda k: best[k][0], default=1)
    return best[count][1] if count > 1 else []


def column(images: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """`count` of `images` (uint8, light on dark), drawn at random, touching side by side: one layer
    each (count, height, width) and which images they are. Each digit's ink is 0-1 pixel over its
    left neighbour's columns, up to 6 pixels higher or lower. The column is the layers' maximum; a
    pixel belongs to the layer darkest there."""

    def cropped(image: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(image > 25)
        return image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32)

    picks = [int(rng.integers(0, len(images)))]
    layers = cropped(images[picks[0]])[None]
    for _ in range(count - 1):
        picks.append(int(rng.integers(0, len(images))))
        b = cropped(images[picks[-1]])
        over, shift = int(rng.integers(0, 2)), int(rng.integers(-6, 7))
        width = layers.shape[2] + b.shape[1] - over
        both = np.zeros((len(layers) + 1, max(layers.shape[1], b.shape[0]) + abs(shift), width), np.float32)
        both[:-1, max(0, -shift) : max(0, -shift) + layers.shape[1], : layers.shape[2]] = layers
        both[-1, max(0, shift) : max(0, shift) + b.shape[0], width - b.shape[1] :] = b
        rows, cols = np.nonzero(both.max(axis=0) > 25)
        layers = both[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return layers, picks


def train_judge(
    images: np.ndarray, labels: np.ndarray, columns: int, seed: int, progress: bool = True
) -> reference.Params:
    """The judge, from the pieces of `columns` columns of one, two, two and three of `images` (the
    training split's digits, uint8 28x28, and their `labels`): a piece is its digit, whole, when it
    holds KEPT of one digit's ink and that digit KEPT of the piece's, else BROKEN; reference.py's
    network and steps, seeded. A progress bar on a terminal (not in logs)."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    bar = {"disable": None if progress else True, "leave": False}  # None: on a terminal only (tqdm's rule)
    for n in tqdm(range(columns), desc="judge: columns cut", unit="column", **bar):
        layers, picks = column(images, (1, 2, 2, 3)[n % 4], rng)
        ink, owner = layers.max(axis=0), np.argmax(layers, axis=0)
        for piece in candidates(ink)[1].values():
            top, left, bottom, right = piece["box"]
            mine, inked = owner[top:bottom, left:right], piece["ink"] > 0
            held = np.array([piece["ink"][mine == digit].sum() for digit in range(len(layers))])
            digit = int(np.argmax(held))
            kept = layers[digit, top:bottom, left:right][inked].sum() / layers[digit].sum()
            x.append(piece["seen"])
            whole = kept >= KEPT and held[digit] >= KEPT * held.sum()
            y.append(int(labels[picks[digit]]) if whole else BROKEN)
    x, y = np.stack(x), np.array(y)
    params = reference.init_params(JUDGE_HIDDEN, rng, "he", n_in=x.shape[1], n_out=BROKEN + 1)
    for _ in tqdm(range(JUDGE_EPOCHS), desc="judge: epochs", unit="epoch", **bar):
        order = rng.permutation(len(y))
        for start in range(0, len(y), JUDGE_BATCH):
            batch = order[start : start + JUDGE_BATCH]
            forward = reference.forward(params, x[batch].T)
            grads = reference.backward(params, x[batch].T, reference.one_hot(y[batch], BROKEN + 1), forward)
            reference.update(params, grads, JUDGE_RATE)
    return params


def save_judge(folder: str | os.PathLike, judge: reference.Params) -> Path:
    path = Path(folder) / JUDGE_FILE
    save_npz(path, **judge)
    return path


def judge_path(stats_path: str | os.PathLike) -> Path | None:
    """The judge made with these processed data (None: data prepared before there was one)."""
    path = Path(stats_path).with_name(JUDGE_FILE)
    return path if path.is_file() else None


def load_judge(path: str | os.PathLike | None) -> reference.Params | None:
    """A judge written by save_judge, its shapes checked (None for None)."""
    if path is None:
        return None
    judge = load_npz(path, REDO_NORMALIZE)
    shapes = {key: getattr(judge.get(key), "shape", None) for key in ("W1", "b1", "W2", "b2")}
    hidden, outputs = (shapes["W1"] or (0, 0))[1], BROKEN + 1
    if shapes != {"W1": (preprocess.FIELD**2 + 3, hidden), "b1": (hidden,), "W2": (hidden, outputs), "b2": (outputs,)}:
        raise DataError(
            f"{path} is not a judge this version reads ({shapes}: written before the judge named digits, or not by"
            f" the normalize stage); {REDO_NORMALIZE}, and train again for a model that carries the new judge"
        )
    return judge
