"""Probe, not the product: cutting touching digits apart (issue 23; docs/serving.md, "Digits that touch").

    make run                                 # needs models/model.npz, data/processed/ and data/raw/
    python benchmarks/touching_probe.py [--count 200] [--out benchmarks/results/touching_probe.json]

The pages are benchmarks/reading_numbers.py's touching numbers (and 1,000 single digits written the
same way); each column of ink the product makes of a page (read_page's fields, caught as their ink
reaches preprocess.field_of) is then:
1. cut by seams: for every bottom pixel, the cheapest top-to-bottom path through the ink, a step
   sideways costing SIDEWAYS (in full-ink pixels); the local minima of the cost are the candidates;
2. read piece by piece: every piece between two seams (or an edge) through field_of and the network;
3. read as a path of pieces: "oracle" counts a number when some path reads it (the best any choice
   among these seams can do); "counted" lets a column-counting network say how many digits the
   column holds (the project's own reference network, an output per count up to MOST, trained here
   on training digits and touching columns of them; a column is cut only where "one" has a
   probability under ONE_BELOW) and takes the likeliest path of that many pieces (paths(): the
   network's certainty of each piece, the counter's that the piece is one digit, the ink cut).
Reported for 2-6-digit numbers: read exactly as the product reads them, by "oracle", by "counted";
for the numbers that are one column of ink, how often the counter counts it right and how often the
likeliest path of the right count reads it; and how many single digits "counted" splits.
"""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

from mnist_np.model import reference
from mnist_np.serving import preprocess
from reading_numbers import GAPS, LENGTHS, arguments, cpu_name, page

SIDEWAYS = 3.0  # a seam's cost for one pixel sideways, in pixels of full ink crossed
VIEW_HIGH, VIEW_WIDE = 20, 48  # the counter sees a column scaled into this box, in a 24 x 52 field
TALL = 0.5  # a piece spans at least this share of its column's height
HEAVY = 0.1  # and holds at least this share of its ink
CROSSING = 0.3  # a cut's cost, per pixel of full ink it crosses (log-probability units)
PIECE_ONE = 0.5  # the weight of the counter's "one digit" for a piece against the network's certainty
MOST = 4  # the counter counts up to this many digits in a column
ONE_BELOW = 0.1  # the counter cuts a column only where it gives "one digit" less than this probability


def seams(ink: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """The column's candidate cuts, left to right: for each, the ink it crosses (in full-ink pixels
    of a 20 px high digit) and the last column left of it per row."""
    cost = ink / 255.0
    total, back = cost[0].copy(), np.zeros(ink.shape, np.int8)
    for row in range(1, ink.shape[0]):
        left, right = np.r_[np.inf, total[:-1]] + SIDEWAYS, np.r_[total[1:], np.inf] + SIDEWAYS
        choice = np.argmin(np.stack([left, total, right]), axis=0)
        total = np.choose(choice, [left, total, right]) + cost[row]
        back[row] = choice - 1
    ends = [x for x in range(1, ink.shape[1] - 1) if total[x] <= total[x - 1] and total[x] < total[x + 1]]
    paths = []
    for x in ends:
        path = np.empty(ink.shape[0], int)
        path[-1] = x
        for row in range(ink.shape[0] - 1, 0, -1):
            path[row - 1] = path[row] - back[row, path[row]]
        paths.append((float(total[x]) * VIEW_HIGH / ink.shape[0], path))
    return sorted(paths, key=lambda cut: float(np.mean(cut[1])))


def lattice(ink: np.ndarray, predictor, field_of, counter: dict) -> dict:
    """Every piece between two cuts (the column's edges included) that reads as a digit: the
    network's probabilities, the counter's probability that it is one digit, its share of the
    column's height and ink; and what each cut crosses."""
    found = seams(ink)
    cuts = [None, *(path for _, path in found), None]
    columns = np.arange(ink.shape[1])[None, :]
    pieces, fields, views = {}, [], []
    for i in range(len(cuts) - 1):
        for j in range(i + 1, len(cuts)):
            keep = np.ones(ink.shape, bool)
            if cuts[i] is not None:
                keep &= columns > cuts[i][:, None]
            if cuts[j] is not None:
                keep &= columns <= cuts[j][:, None]
            piece = np.where(keep, ink, 0)
            rows, cols = np.nonzero(piece)
            if not len(rows):
                continue
            piece = piece[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            try:
                fields.append(field_of(piece))
            except preprocess.NotReadable:  # no digit's strokes
                continue
            views.append(view(piece))
            pieces[i, j] = {"tall": piece.shape[0] / ink.shape[0], "heavy": float(piece.sum() / ink.sum())}
    if fields:
        probabilities = predictor(np.stack(fields).reshape(len(fields), -1))
        one = reference.predict_proba(counter, np.stack(views))[:, 0]
        for piece, p, p_one in zip(pieces.values(), probabilities, one):
            piece.update(p=p, one=float(p_one))
    return {"nodes": len(cuts), "pieces": pieces, "crossed": [0.0, *(cost for cost, _ in found), 0.0]}


def paths(graph: dict, count: int) -> list[dict]:
    """The likeliest path of exactly `count` pieces (an empty list where there is none): each
    piece's top probability, the counter's probability that it is one digit (weighed PIECE_ONE)
    and the ink its left cut crosses (CROSSING per pixel)."""
    last, best = graph["nodes"] - 1, {(0, 0): (0.0, [])}

    def score(i: int, piece: dict) -> float:
        surest, one = np.log(piece["p"].max()), np.log(piece["one"] + 1e-6)
        return float(surest + PIECE_ONE * one) - CROSSING * graph["crossed"][i]

    for j in range(1, last + 1):
        for k in range(1, count + 1):
            options = [
                (best[i, k - 1][0] + score(i, piece), best[i, k - 1][1] + [piece])
                for (i, end), piece in graph["pieces"].items()
                if end == j and (i, k - 1) in best and piece["tall"] >= TALL and piece["heavy"] >= HEAVY
            ]
            if options:
                best[j, k] = max(options, key=lambda option: option[0])
    return best.get((last, count), (0.0, []))[1]


def readings(graph: dict, labels: np.ndarray) -> set[int]:
    """How many of `labels` (from the first) some path through the column reads, each a possible end."""
    ends, frontier = set(), {(0, 0)}
    while frontier:
        node, read = frontier.pop()
        if node == graph["nodes"] - 1:
            ends.add(read)
            continue
        for (i, j), piece in graph["pieces"].items():
            if i == node and read < len(labels) and piece["p"].argmax() == labels[read]:
                frontier.add((j, read + 1))
    return ends


def view(ink: np.ndarray) -> np.ndarray:
    """A column of ink (cropped, any size) as the counter sees it: scaled into VIEW_HIGH x VIEW_WIDE, centred."""
    scale = min(VIEW_HIGH / ink.shape[0], VIEW_WIDE / ink.shape[1])
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    small = np.asarray(Image.fromarray(ink.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))
    out = np.zeros((VIEW_HIGH + 4, VIEW_WIDE + 4), np.float32)
    top, left = (out.shape[0] - small.shape[0]) // 2, (out.shape[1] - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out.ravel() / 255


def crop(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(ink > 25)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def touching(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two digits' ink side by side, b's 0-1 pixel over a's columns, up to 6 pixels higher or lower."""
    a, b = crop(a), crop(b)
    over, shift = int(rng.integers(0, 2)), int(rng.integers(-6, 7))
    width = a.shape[1] + b.shape[1] - over
    both = np.zeros((max(a.shape[0], b.shape[0]) + abs(shift), width), np.float32)
    both[max(0, -shift) : max(0, -shift) + a.shape[0], : a.shape[1]] = a
    area = both[max(0, shift) : max(0, shift) + b.shape[0], width - b.shape[1] :]
    np.maximum(area, b, out=area)
    return crop(both)


def train_counter(images: np.ndarray, each: int, seed: int = 0) -> dict:
    """The counter: reference.py's network with an output for each count 1..MOST, trained on `each`
    columns of each count made of training digits touching."""
    rng = np.random.default_rng(seed)

    def column(count: int) -> np.ndarray:
        ink = crop(images[rng.integers(0, len(images))].astype(np.float32))
        for _ in range(count - 1):
            ink = touching(ink, images[rng.integers(0, len(images))].astype(np.float32), rng)
        return view(ink)

    x = np.stack([column(count) for count in range(1, MOST + 1) for _ in range(each)])
    y = np.repeat(np.arange(MOST), each)
    params = reference.init_params(64, rng, "he", n_in=x.shape[1], n_out=MOST)
    for _ in range(10):
        order = rng.permutation(len(y))
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            forward = reference.forward(params, x[batch].T)
            grads = reference.backward(params, x[batch].T, reference.one_hot(y[batch], MOST), forward)
            reference.update(params, grads, 0.05)
    return params


def main() -> None:
    args = arguments(__doc__, "touching_probe.json")
    from mnist_np.data.idx import read_idx
    from mnist_np.serving.predict import load_predictor

    test_images = read_idx(args.raw / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(args.raw / "t10k-labels-idx1-ubyte.gz")
    predictor, _, _ = load_predictor(str(args.model), args.data)
    field_of, caught = preprocess.field_of, []

    def catching(ink: np.ndarray) -> np.ndarray:  # the columns read_page keeps: those that make a field
        field = field_of(ink)
        caught.append(ink.copy())
        return field

    def columns(image: np.ndarray) -> list[np.ndarray]:
        caught.clear()
        preprocess.field_of = catching
        try:
            preprocess.read_page(image)
        except preprocess.NotReadable:
            pass
        finally:
            preprocess.field_of = field_of
        return list(caught)

    started = time.perf_counter()
    train_images = read_idx(args.raw / "train-images-idx3-ubyte.gz")
    counter = train_counter(train_images, 12_000)
    trained_s = time.perf_counter() - started

    def count(ink: np.ndarray) -> int:  # how many digits the counter sees in a column
        p = reference.predict_proba(counter, view(crop(ink))[None])[0]
        return 1 if p[0] >= ONE_BELOW else 2 + int(np.argmax(p[1:]))

    def read_as(pieces: list[dict]) -> list[int]:
        return [int(piece["p"].argmax()) for piece in pieces]

    rng = np.random.default_rng(0)
    results = {"count": args.count, "counter_train_s": round(trained_s, 1), "lengths": {}}
    for n in LENGTHS:
        product = oracle = by_counter = one_column = counted_right = read_at_right_count = 0
        for _ in range(args.count):
            chosen = rng.integers(0, 2000, n)
            labels = test_labels[chosen]
            inks = columns(page(test_images[chosen], GAPS["touching"], rng))
            fields = [field_of(ink) for ink in inks]
            read = predictor(np.stack(fields).reshape(len(fields), -1)).argmax(axis=1) if fields else []
            product += len(read) == n and bool(np.all(read == labels))
            graphs = [lattice(ink, predictor, field_of, counter) for ink in inks]
            reached = {0}
            for graph in graphs:
                reached = {start + end for start in reached for end in readings(graph, labels[start:])}
            oracle += n in reached
            digits = []
            for ink, graph, field in zip(inks, graphs, fields):
                pieces = paths(graph, count(ink)) if count(ink) > 1 else []
                digits += read_as(pieces) if pieces else [int(predictor(field.reshape(1, -1)).argmax())]
            by_counter += digits == list(labels)
            if len(inks) == 1:  # the whole number one column: how many digits it holds is known
                one_column += 1
                counted_right += count(inks[0]) == n
                read_at_right_count += read_as(paths(graphs[0], n)) == list(labels)
        results["lengths"][str(n)] = {
            "product": product / args.count,
            "oracle": oracle / args.count,
            "counted": by_counter / args.count,
            "one_column": one_column,
            "one_column_counted_right": round(counted_right / max(one_column, 1), 3),
            "one_column_read_at_right_count": round(read_at_right_count / max(one_column, 1), 3),
        }
        print(n, results["lengths"][str(n)], flush=True)
    split = 0
    for i in range(2000, 3000):  # single digits, not among the numbers' digits
        for ink in columns(page(test_images[i : i + 1], GAPS["spaced"], rng)):
            split += count(ink) > 1 and bool(paths(lattice(ink, predictor, field_of, counter), count(ink)))
    results |= {"singles_split": split, "singles": 1000, "machine": {"cpu": cpu_name()}}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"single digits split: {split} of 1000; wrote {args.out}")


if __name__ == "__main__":
    main()
