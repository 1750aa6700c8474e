"""What the paper has printed on it, told apart from what was written: ruled lines (a margin line
included), squared grids and the box of a form field, as bands to ignore; and how to take them out
of the ink where a digit's strokes cross them.

A printed line is found the way document-analysis tools find table rules: a morphological opening
of the ink with a line-shaped element keeps only long straight runs (computed from the runs
themselves, in one pass: opened()). Lines are taken from the thin runs across them one at a time,
the most common centre first, with a least-squares fit (so parallel lines a stroke joins stay
apart, and a page photographed slightly askew is handled). A fitted line is printed if it is thin
for its length (LINE_RATIO), unbroken (COVERED) and either crosses most of the image (a ruling, a
grid line: LINE_SPAN) or is a box's side (FRAME_SPAN, with corners at both ends). A handwritten
stroke is neither: a 1 as long as the image is tall is a tight crop of a 1, and thick for the
image it fills.

Where a stroke crosses a band, it stays: where its ink is darker than the band's print (DARKER: a
pen on coloured rulings), and where its ink on both sides of the band can be joined across it (a
binary closing across the band only: a pen on black lines). The digit keeps its strokes, the line goes.
"""

from __future__ import annotations

import numpy as np

ELEMENT = 8  # the opening's element is 1/ELEMENT of the image's side: longer than any curve's straight run
LINE_RATIO = 8  # a line is at least this many times longer than it is thick
LINE_SPAN = 0.9  # a ruling or grid line crosses at least this share of the image
FRAME_SPAN = 0.3  # a box's side is at least this share of the image, and meets lines at both ends
MAX_THICKNESS = 0.1  # and is at most this share of the image across it (a tight crop of a 1 is not a line)
COVERED = 0.8  # and is unbroken over this share of its length (strokes crossing it are the rest)
MARGIN = 2  # the band reaches this many pixels beyond the line's own ink (its soft edges)
DARKER = 1.3  # ink in a band this much stronger than the band's print is a stroke crossing it


def vertical_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every vertical run of True in `mask`: its column, first row and the row after its last."""
    edges = np.diff(np.pad(mask, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    col, start = np.nonzero(edges.T == 1)  # column-major: starts and stops pair up in order
    _, stop = np.nonzero(edges.T == -1)
    return col, start, stop


def painted(shape: tuple[int, int], col: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """A mask of `shape` True on the given vertical runs (separate runs of one column: no run
    starts where another stops)."""
    marks = np.zeros((shape[0] + 1, shape[1]), np.int8)
    marks[start, col] = 1
    marks[stop, col] = -1
    return np.cumsum(marks, axis=0, dtype=np.int16)[:-1] > 0


def opened(mask: np.ndarray, length: int) -> np.ndarray:
    """`mask`'s opening by a vertical line `length` long: its vertical runs at least that long
    (the same as scipy.ndimage.binary_opening with that element, in one pass)."""
    col, start, stop = vertical_runs(mask)
    long = stop - start >= length
    return painted(mask.shape, col[long], start[long], stop[long])


def closed(mask: np.ndarray, length: int) -> np.ndarray:
    """`mask` with its vertical gaps shorter than `length` filled where ink lies on both sides
    (a binary closing by a vertical line, in one pass)."""
    col, start, stop = vertical_runs(~mask)
    gap = (stop - start < length) & (start > 0) & (stop < mask.shape[0])
    return mask | painted(mask.shape, col[gap], start[gap], stop[gap])


def candidates(ink: np.ndarray, axis: int) -> list[dict]:
    """The long, thin, straight lines in `ink` (a boolean mask) along `axis` (1: horizontal, 0:
    vertical), each with its extent, thickness and fitted centre. Lines are taken one at a time
    from the opening's thin runs across them, the most common centre first, so that parallel lines
    joined by a stroke, and a line a stroke runs along, are still told apart."""
    if axis == 0:  # look at every line as a horizontal one: rows across, columns along
        return candidates(ink.T, 1)
    across, along = ink.shape
    straight = opened(ink.T, max(3, along // ELEMENT)).T  # the horizontal runs an eighth of the image long
    col, start, stop = vertical_runs(straight)
    centre, length = (start + stop - 1) / 2, stop - start
    if not len(col):
        return []
    thin = length <= 2 * np.median(length)  # a stroke crossing or along a line makes its run long
    col, centre, length = col[thin], centre[thin], length[thin]
    found, typical = [], float(np.median(length))
    while len(col) >= FRAME_SPAN * along:
        mode = np.bincount(np.rint(centre).astype(int)).argmax()
        near = np.abs(centre - mode) <= 2 + typical
        if near.sum() < FRAME_SPAN * along:
            break
        if np.ptp(col[near]) + 1 < LINE_RATIO * np.median(length[near]):  # a stroke's bar: short for its width
            col, centre, length = col[~near], centre[~near], length[~near]
            continue
        slope, intercept = np.polyfit(col[near], centre[near], 1)
        on = near | (np.abs(centre - (intercept + slope * col)) <= 1 + np.median(length[near]) / 2)
        thickness = float(np.median(length[on]))
        extent = int(col[on].max() - col[on].min() + 1)
        # Unbroken (ink on its centre line, strokes crossing it included): not strokes that happen to line up.
        x = np.arange(int(col[on].min()), int(col[on].max()) + 1)
        y = np.rint(intercept + slope * x).astype(int)
        on_line = np.any([straight[np.clip(y + d, 0, across - 1), x] for d in (-1, 0, 1)], axis=0)
        covered = on_line.mean() >= COVERED
        long_and_thin = extent >= max(FRAME_SPAN * along, LINE_RATIO * thickness)
        if covered and long_and_thin and thickness <= MAX_THICKNESS * across:
            found.append(
                {
                    "extent": extent,
                    "thickness": thickness,
                    "from": int(col[on].min()),
                    "to": int(col[on].max()) + 1,
                    "centre": lambda x, s=slope, i=intercept: i + s * x,
                }
            )
        col, centre, length = col[~on], centre[~on], length[~on]
    return found


def band_mask(shape: tuple[int, int], line: dict, axis: int) -> np.ndarray:
    """The pixels within the line's half thickness (plus MARGIN) of its fitted centre, along its extent."""
    mask = np.zeros(shape, bool)
    x = np.arange(line["from"], line["to"])
    half = line["thickness"] / 2 + MARGIN
    centre = line["centre"](x)
    across = np.arange(shape[1 - axis])[:, None]
    inside = np.abs(across - centre[None, :]) <= half
    if axis == 1:
        mask[:, line["from"] : line["to"]] = inside
    else:
        mask[line["from"] : line["to"], :] = inside.T
    return mask


def meets(line: dict, others: list[dict]) -> bool:
    """Whether each end of `line` is a corner: an end of one of the perpendicular `others` lies
    there (a box's sides; a ruling crossing a stroke's end is not a corner)."""
    reach = line["thickness"] + 2 * MARGIN

    def corner(end: int) -> bool:
        position = line["centre"](np.array([end]))[0]  # across this line: along the other
        return any(
            min(abs(other["from"] - position), abs(other["to"] - 1 - position)) <= reach + other["thickness"]
            and abs(other["centre"](np.array([position]))[0] - end) <= reach + other["thickness"]
            for other in others
        )

    return corner(line["from"]) and corner(line["to"] - 1)


def bands(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Masks of the horizontal and the vertical printed lines in `ink` (a boolean mask of the page's
    ink): rulings and grid lines crossing most of the image, and box sides meeting at corners; and
    the half width of the widest band, in pixels (how far a crossing stroke is joined across)."""
    found = {axis: candidates(ink, axis) for axis in (1, 0)}
    masks, widest = [], 0.0
    for axis in (1, 0):
        mask = np.zeros(ink.shape, bool)
        for line in found[axis]:
            if line["extent"] >= LINE_SPAN * ink.shape[axis] or meets(line, found[1 - axis]):
                mask |= band_mask(ink.shape, line, axis)
                widest = max(widest, line["thickness"])
        masks.append(mask)
    return masks[0], masks[1], int(np.ceil(widest / 2 + MARGIN)) + 1


def remove(ink: np.ndarray, horizontal: np.ndarray, vertical: np.ndarray, reach: int, low: float = 0) -> np.ndarray:
    """`ink` (levels; what is not above `low` is paper) without the bands' printed ink. A stroke
    crossing a band stays: where it is darker than the print (DARKER times the band's typical
    level: a pen on light rulings), and where the stroke's ink on both sides of the band, within
    `reach` pixels across, can be joined through it (a pen on black lines)."""
    if not (horizontal.any() or vertical.any()):
        return ink
    marked = ink > low
    kept = marked & ~horizontal & ~vertical
    darker = []  # per band: darker than its print (which is most of a band's ink: strokes cross it here and there)
    for band in (horizontal, vertical):
        printed = band & marked
        darker.append(printed & (ink > DARKER * float(np.median(ink[printed]))) if printed.any() else printed)
    # Where lines cross, ink darker than only one of them is the other line.
    kept |= (darker[0] & ~vertical) | (darker[1] & ~horizontal) | (darker[0] & darker[1])
    across_h, across_v = closed(kept, 2 * reach + 1), closed(kept.T, 2 * reach + 1).T
    kept |= (horizontal & across_h) | (vertical & across_v)
    return np.where(kept, ink, 0).astype(ink.dtype)
