"""Several digits side by side (a year, a house number, an amount): which of the ink's parts belong
to which digit, left to right.

Parts that share most of their columns are one column of ink (a 5's bar over its body, a 4 in two
strokes). When two or more columns are tall (TALL of the tallest) and side by side (each within
REACH heights of the next and level with it), the page holds a number; a short column (a stray
stroke, a speck) goes to the digit nearest it. Digits that touch are one column here; touching.py
cuts such a column apart (predict.split_touching).
"""

from __future__ import annotations

TALL = 0.6  # a digit of a number is at least this share of the tallest one's height
REACH = 1.0  # and at most this many heights from its neighbour
LEVEL = 0.5  # and shares at least this share of the shorter one's rows with it
OVERLAP = 0.5  # parts sharing this share of the narrower one's columns are one column (neighbours barely overlap)


def columns(boxes: list[tuple[slice, slice]], keep: list[int]) -> list[dict]:
    """The parts `keep` (indices into `boxes`) grouped where they share most of their columns, left to right."""
    groups: list[dict] = []
    for i in sorted(keep, key=lambda i: boxes[i][1].start):
        rows, cols = boxes[i]
        last = groups[-1] if groups else None
        shared = min(last["right"], cols.stop) - cols.start if last else 0
        if last and shared > OVERLAP * min(cols.stop - cols.start, last["right"] - last["left"]):
            group = groups[-1]
            group["parts"].append(i)
            group.update(
                right=max(group["right"], cols.stop),
                top=min(group["top"], rows.start),
                bottom=max(group["bottom"], rows.stop),
            )
        else:
            groups.append(
                {"parts": [i], "left": cols.start, "right": cols.stop, "top": rows.start, "bottom": rows.stop}
            )
    return groups


def height(group: dict) -> int:
    return group["bottom"] - group["top"]


def level(a: dict, b: dict) -> bool:
    shared = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
    return shared >= LEVEL * min(height(a), height(b))


def digits_of_number(boxes: list[tuple[slice, slice]], keep: list[int], main: int) -> list[dict] | None:
    """The columns that are the digits of a number, left to right, each with the short columns
    nearest it merged in; None when the page holds one digit (or one column: touching digits are
    cut by the caller)."""
    groups = columns(boxes, keep)
    tallest = max(height(g) for g in groups)
    tall = [g for g in groups if height(g) >= TALL * tallest]
    home = next(g for g in tall + groups if main in g["parts"])
    if home not in tall or len(tall) < 2:
        return None
    at = tall.index(home)
    chain = [home]
    for step in (1, -1):  # to the right of the home column, then to its left
        last, i = home, at + step
        while 0 <= i < len(tall):
            gap = tall[i]["left"] - last["right"] if step > 0 else last["left"] - tall[i]["right"]
            if gap > REACH * tallest or not level(tall[i], home):
                break
            chain.append(tall[i])
            last, i = tall[i], i + step
    if len(chain) < 2:
        return None
    chain.sort(key=lambda g: g["left"])
    for group in groups:  # short columns: to the nearest digit, if near one
        if group in chain:
            continue
        centre = (group["left"] + group["right"]) / 2
        nearest = min(chain, key=lambda g: abs((g["left"] + g["right"]) / 2 - centre))
        gap = max(group["left"] - nearest["right"], nearest["left"] - group["right"], 0)
        if gap <= REACH * tallest / 2 and level(group, nearest):
            nearest["parts"] = nearest["parts"] + group["parts"]
            nearest.update(left=min(nearest["left"], group["left"]), right=max(nearest["right"], group["right"]))
    return chain
