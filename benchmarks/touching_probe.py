"""Probe: how far the cuts of touching digits go, and where reading them loses (issue 23; docs/serving.md,
"Digits that touch").

    make run                                 # needs models/model.npz, data/processed/ (its judge.npz) and data/raw/
    python benchmarks/touching_probe.py [--count 200] [--seed 0] [--out benchmarks/results/touching_probe.json]

The pages are benchmarks/reading_numbers.py's touching numbers (and 1,000 single digits written the
same way). Each column of ink the product finds on a page (read_page's, as found.inks) is read:
- "whole": as one digit (the product before it cut touching digits);
- "product": as mnist-predict reads it, cut by the judge where it holds several (touching.split);
- "oracle": counted when some path through the column's candidate pieces (touching.candidates) reads
  the number: the best any choice among these cuts can do.
For the numbers that are one column of ink, also how often the product reads as many digits as
there are, and how often the likeliest path of that many pieces (touching.paths) reads them; and
how many of the single digits the product cuts.
"""

from __future__ import annotations

import json

import numpy as np

from mnist_np.serving import preprocess, touching
from reading_numbers import GAPS, LENGTHS, arguments, cpu_name, page


def readings(ink: np.ndarray, read, labels: np.ndarray) -> set[int]:
    """How many of `labels` (from the first) some path through the column's pieces reads, each a possible end."""
    crossed, found = touching.candidates(ink)
    if not found:
        return set()
    keys = list(found)
    digits = read(np.stack([found[key]["field"] for key in keys]).reshape(len(keys), -1)).argmax(axis=1)
    ends, frontier = set(), {(0, 0)}
    while frontier:
        node, done = frontier.pop()
        if node == len(crossed) - 1:
            ends.add(done)
            continue
        for (i, j), digit in zip(keys, digits):
            if i == node and done < len(labels) and digit == labels[done]:
                frontier.add((j, done + 1))
    return ends


def main() -> None:
    args = arguments(__doc__, "touching_probe.json")
    from mnist_np.data.idx import read_idx
    from mnist_np.serving.predict import load_predictor

    test_images = read_idx(args.raw / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(args.raw / "t10k-labels-idx1-ubyte.gz")
    read, _, _, judge = load_predictor(str(args.model), args.data)
    if judge is None:
        raise SystemExit(f"error: no judge beside {args.data / 'stats.json'}; run the normalize stage (dvc repro)")

    def columns(image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        found = preprocess.Found()
        try:
            return preprocess.read_page(image, found=found), found.inks
        except preprocess.NotReadable:
            return [], []

    def digits_of(fields: list[np.ndarray], inks: list[np.ndarray], cut: bool) -> list[int]:
        out = []
        for field, ink in zip(fields, inks):
            pieces = touching.split(ink, field, read, judge) if cut else []
            out += [int(read(p["field"].reshape(1, -1)).argmax()) for p in pieces] or [
                int(read(field.reshape(1, -1)).argmax())
            ]
        return out

    rng = np.random.default_rng(args.seed)
    results = {"count": args.count, "seed": args.seed, "lengths": {}}
    for n in LENGTHS:
        whole = product = oracle = one_column = counted_right = read_at_right_count = 0
        for _ in range(args.count):
            chosen = rng.integers(0, 2000, n)
            labels = test_labels[chosen]
            fields, inks = columns(page(test_images[chosen], GAPS["touching"], rng))
            whole += digits_of(fields, inks, cut=False) == list(labels)
            cut = digits_of(fields, inks, cut=True)
            product += cut == list(labels)
            reached = {0}
            for ink in inks:
                reached = {start + end for start in reached for end in readings(ink, read, labels[start:])}
            oracle += n in reached
            if len(inks) == 1:  # the whole number one column: how many digits it holds is known
                one_column += 1
                counted_right += len(cut) == n
                pieces = touching.paths(inks[0], read, judge).get(n, (0, []))[1]
                read_at_right_count += [int(read(p["field"].reshape(1, -1)).argmax()) for p in pieces] == list(labels)
        results["lengths"][str(n)] = {
            "whole": whole / args.count,
            "product": product / args.count,
            "oracle": oracle / args.count,
            "one_column": one_column,
            "one_column_counted_right": round(counted_right / max(one_column, 1), 3),
            "one_column_read_at_right_count": round(read_at_right_count / max(one_column, 1), 3),
        }
        print(n, results["lengths"][str(n)], flush=True)
    split = 0
    for i in range(2000, 3000):  # single digits, not among the numbers' digits
        fields, inks = columns(page(test_images[i : i + 1], GAPS["spaced"], rng))
        split += len(digits_of(fields, inks, cut=True)) > 1
    results |= {"singles_split": split, "singles": 1000, "machine": {"cpu": cpu_name()}}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"single digits cut: {split} of 1000; wrote {args.out}")


if __name__ == "__main__":
    main()
