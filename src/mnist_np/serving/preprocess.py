"""Turn an arbitrary photo or scan of one handwritten digit into an MNIST-style 28x28 image.

First the digit is found on its page, as a camera or scanner delivers it: the paper (uneven light
included) is modelled and subtracted, ink is what stands out from the paper's grain, printed lines
(rulings, grids, a form's box) are taken out where no stroke crosses them (printed.py), and the
digit is the largest connected part of the ink with the parts near it (to_mnist), or, where digits
stand side by side, each of them (numbers.py, read_page). Then it follows the
procedure MNIST itself was made with: light ink on a dark background; cropped to the ink's bounding
box; scaled to fit a 20x20 box keeping the aspect ratio (anti-aliased); placed in a 28x28 field
with its centre of mass at the centre. The result is in MNIST's raw 0-255 units, ready for the
normalize stage's own transform (data.transform).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from ..errors import DataError
from . import numbers, printed

FIELD, BOX = 28, 20


@dataclasses.dataclass
class Found:
    """What the preprocessing found on a page, for drawing it (overlay.py): the page as read, its
    scale against the file, the printed lines taken out and what lies beyond the paper (masks on
    blocks of `step` pixels), and each digit's ink box (top, left, bottom, right) in the page's pixels."""

    page: np.ndarray | None = None
    per_pixel: float = 1.0  # the file's pixels per page pixel (a large file is read smaller)
    lines: tuple[np.ndarray, np.ndarray] | None = None
    step: int = 1
    boxes: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)  # per digit, left to right
    inks: list[np.ndarray] = dataclasses.field(default_factory=list)  # per digit, its ink within its box (0-255)
    beyond: np.ndarray | None = None  # what lies beyond the paper's edge (a mask on the blocks)


class NotReadable(DataError):
    """The image holds no digit a person could read (blank, specks, a blot, a smudge): an answer
    with its reason, not a failure."""


# Lossy compression (JPEG, WebP) leaves faint ringing around strokes, which would widen the ink's
# bounding box and shrink the digit; in such files levels this close to the paper count as paper.
LOSSY_FORMATS, LOSSY_FLOOR = ("JPEG", "MPO", "WEBP"), 8.0
MAX_PIXELS = 50_000_000  # about 8000 x 6000; a larger file is refused before it is decoded
WORKING_SIDE = 2048  # larger images are shrunk to this while decoding: a digit keeps ample detail


def load_gray(path: str | os.PathLike, found: Found | None = None) -> tuple[np.ndarray, str]:
    """Any image Pillow reads (PNG, JPEG, BMP, ...) as a 2-D array of 0-255 gray levels (uint8 for an
    8-bit image: read_page converts only the parts it reads closely; float32 for deeper ones),
    with the file's format name. Images over MAX_PIXELS are refused before they are decoded, and
    large ones are shrunk to WORKING_SIDE while decoding, so no file can take much memory. How
    many of the file's pixels each of the array's is goes into `found`."""
    levels, fmt, side = decode(path)
    if found is not None:
        found.per_pixel = side / max(levels.shape)
    return levels, fmt


def decode(path: str | os.PathLike) -> tuple[np.ndarray, str, int]:
    """load_gray's array and format, and the file's longer side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with a reason
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DataError(
                    f"{path}: {width} x {height} pixels is more than {MAX_PIXELS // 10**6} megapixels; "
                    "crop or scale the image down to the digit"
                )
            fmt, side = image.format or "", max(width, height)
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG decodes at a reduced scale directly
            ImageOps.exif_transpose(image, in_place=True)  # a phone's portrait photo stands up (no copy)
            if image.mode.startswith(("I", "F")):
                # 16-bit (or deeper) gray: keep every level, in 0-255 units; Pillow's 8-bit conversion clips.
                image = image.convert("F")
                image.thumbnail((WORKING_SIDE, WORKING_SIDE))
                levels = np.asarray(image, dtype=np.float32)
                return levels * np.float32(255 / 65535) if levels.max() > 255 else levels, fmt, side
            image.thumbnail((WORKING_SIDE, WORKING_SIDE))
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Transparent pixels count as white paper, the usual meaning of a transparent background.
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "P", "1"):
                image = image.convert("RGB")  # through RGB, so every colour model reads as seen
            gray = image if image.mode == "L" else image.convert("L")  # converting to its own mode copies
            return np.asarray(gray), fmt, side
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


PAPER_MODEL_MIN_SIDE = 64  # smaller images (a crop of the digit, MNIST itself) have uniform paper
PAPER_GRID = 128  # the paper's shading is estimated on a grid this many cells on the longer side
NOISE_SIGMAS = 3.0  # ink must stand out this many noise standard deviations from the paper
STRONG = 0.25  # the digit's parts are found where the (smoothed) ink reaches this fraction of its peak
REACH = 0.5  # parts of the digit lie within this fraction of its largest part's size from it
SCALE_PX = 256  # the digit is found on blocks making about this many on the longer side (at least 1 pixel each)
FULL = 254  # MNIST's strokes peak at 254 or 255; weaker ink is stretched to 255
UNEVEN = 8.0  # gray levels the paper's light must vary by around the border before it is modelled
# What digit-like ink is, from MNIST's 60,000 training digits (tests/test_preprocess.py checks that
# these reject at most 0.2% of them): written strokes are at least MIN_SIDE pixels long, and strong
# ink (>= 128) covers at most SOLID_MAX of its own box where that box is not long and thin (a speck,
# a blot or a smudge's core is solid; MNIST's 99.9th percentile is 0.67; a 1 can be a solid bar).
MIN_SIDE, SOLID_MAX = 10, 0.68
# Pen strokes have edges: across a stroke's side the 28x28 ink rises from nothing to full within a
# pixel or two, so the 90th percentile of the ink's gradient is at least EDGE_MIN gray levels a pixel
# (MNIST's 60,000 training digits: 119 and up; digits photographed, scaled up 15x or in pencil: 108
# and up); a smudge or a shadow rises over its whole width (80 at most, tests/test_predict.py's).
EDGE_MIN = 95.0
# Strokes are longer than thick: the largest part of the strong 28x28 ink is at least LONG_MIN times
# as long (its box's longer side) as thick (twice its deepest point's distance from the edge); MNIST's
# 60,000 training digits: 1.49 and up (a fat 0 or 6). Specks are round (~1), two merged ~2.
LONG_MIN = 1.4
DOTS, DOT_SHARE = 5, 0.03  # printed dots: many small parts, each a sliver of the digit's ink
# Beyond the paper (a photo showing the table around the page): far from the paper's level (gray
# levels), along most of a side, and reaching in from it by a share of the image (printed lines are thinner).
BEYOND_LEVELS, BEYOND_SPAN, BEYOND_DEPTH = 48.0, 0.6, 0.03


def paper(gray: np.ndarray, dark_ink: bool) -> np.ndarray:
    """The blank paper's gray level at every pixel: uneven lighting, shadows and gradients, without
    the strokes. Estimated on a coarse grid (block means average the grain away) by a grey closing
    (for dark ink; an opening for light ink) wider than any stroke, smoothed, and scaled back up."""
    h, w = gray.shape
    block = max(1, max(h, w) // PAPER_GRID)
    hb, wb = h // block, w // block
    coarse = gray[: hb * block, : wb * block].reshape(hb, block, wb, block).mean(axis=(1, 3))
    size = max(3, max(hb, wb) // 6)
    fill = ndimage.grey_closing if dark_ink else ndimage.grey_opening
    coarse = ndimage.gaussian_filter(fill(coarse, size=(size, size)), sigma=size / 4)
    return ndimage.zoom(coarse, (h / hb, w / wb), order=1, grid_mode=True, mode="nearest")[:h, :w]


def beyond_paper(coarse: np.ndarray) -> np.ndarray:
    """The blocks of a photo that lie beyond the paper's edge (the table, a dark background): far
    from the paper's level (BEYOND_LEVELS from the median block, which is paper), at least
    BEYOND_DEPTH of the image deep (a morphological opening with a square that size: printed lines,
    strokes and the lines' joints with the table drop out), along at least BEYOND_SPAN of one side."""
    level = np.float32(np.median(coarse))
    sides = [np.abs(side - level) > BEYOND_LEVELS for side in (coarse[0], coarse[-1], coarse[:, 0], coarse[:, -1])]
    if not any(side.mean() >= BEYOND_SPAN for side in sides):  # most pages: nothing beyond them in the frame
        return np.zeros(coarse.shape, bool)
    far = np.abs(coarse - level) > BEYOND_LEVELS
    size = max(2, round(BEYOND_DEPTH * min(coarse.shape)))
    labels, n = ndimage.label(square_opening(far, size))
    beyond = np.zeros(n + 1, bool)
    for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        beyond[1:] |= np.bincount(side, minlength=n + 1)[1:] >= BEYOND_SPAN * len(side)
    mask = beyond[labels]
    return ndimage.binary_dilation(mask, iterations=2) if mask.any() else mask  # and the edge's soft fringe


def square_opening(mask: np.ndarray, size: int) -> np.ndarray:
    """`mask`'s binary opening by a size x size square, as scipy.ndimage.binary_opening computes it
    (outside the image is not `mask`; an even square's origin mirrored for the dilation), by a
    minimum and a maximum filter: separable, 3x faster."""
    eroded = ndimage.minimum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0)
    return ndimage.maximum_filter(eroded, size=size, mode="constant", cval=0, origin=-(1 - size % 2)).view(bool)


def border_ring(gray: np.ndarray) -> np.ndarray:
    """The image's outermost pixels in order around it (top, right, bottom, left)."""
    return np.concatenate([gray[0], gray[1:, -1], gray[-1, -2::-1], gray[-2:0:-1, 0]])


def uneven_light(gray: np.ndarray) -> bool:
    """Whether the paper's light varies around the image's border by more than its grain: only then
    is the paper modelled (paper()); an evenly lit page, a scan or a crop of a digit, however large,
    is one paper level, which no stroke can be mistaken for. The border, smoothed along its length,
    spans more than NOISE_SIGMAS of its own grain and more than UNEVEN levels."""
    ring = border_ring(gray)
    smooth = ndimage.median_filter(ring, size=max(5, len(ring) // 64), mode="wrap")
    grain = float(np.median(np.abs(ring - smooth))) * 1.4826
    return float(np.ptp(smooth)) > max(UNEVEN, NOISE_SIGMAS * grain)


def ink_parts(strong: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, list, np.ndarray, list[int]]:
    """The connected parts of the `strong` ink: labels, boxes, ink masses, and the parts that are
    not the dots of dotted paper (DOTS or more parts each under DOT_SHARE of the largest one's mass)."""
    labels, n = ndimage.label(strong, structure=np.ones((3, 3)))
    mass = ndimage.sum_labels(ink, labels, index=np.arange(1, n + 1))
    dots = mass < DOT_SHARE * mass.max()
    dots &= dots.sum() >= DOTS
    return labels, ndimage.find_objects(labels), mass, [i for i in range(n) if not dots[i]]


def digit_parts(labels: np.ndarray, boxes: list, main: int, keep: list[int]) -> np.ndarray:
    """One digit among the ink's parts: the largest part (`main`) and the parts near it (a 5's bar,
    a broken stroke); specks and marks elsewhere are dropped."""
    rows, cols = boxes[main]
    reach = REACH * max(rows.stop - rows.start, cols.stop - cols.start)
    near = [
        i + 1
        for i in keep
        if boxes[i][0].start < rows.stop + reach
        and boxes[i][0].stop > rows.start - reach
        and boxes[i][1].start < cols.stop + reach
        and boxes[i][1].stop > cols.start - reach
    ]
    return np.isin(labels, near)


def blocks(image: np.ndarray, step: int) -> np.ndarray:
    """The means of `image`'s step x step blocks (a remainder under one block at the edges dropped)."""
    h, w = image.shape[0] // step, image.shape[1] // step
    # Each block row's lines summed first (contiguous rows: 3x faster than np.add.reduceat on a photo);
    # 8-bit levels sum exactly in float32.
    rows = image[: h * step, : w * step].astype(np.float32, copy=False).reshape(h, step, w * step).sum(axis=1)
    return rows.reshape(h, w, step).sum(axis=2) * np.float32(1 / step**2)


def upsampled(mask: np.ndarray, rows: slice, cols: slice, step: int, shape: tuple[int, int]) -> np.ndarray:
    """A mask on the step x step blocks, cut to `rows` x `cols` of blocks, at full resolution: `shape`
    pixels (a box touching the last block row or column takes the remainder under one block)."""
    full = np.repeat(np.repeat(mask[rows, cols], step, 0), step, 1)
    return np.pad(full, [(0, shape[0] - full.shape[0]), (0, shape[1] - full.shape[1])], mode="edge")


def between_blocks(coarse: np.ndarray, step: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """`coarse` (a value per step x step block) at each pixel of rows x cols, linearly between the
    block means (block i's mean sits at pixel (i + 0.5) * step - 0.5; beyond the outermost, the
    nearest): a row, then a column at a time, as scipy's map_coordinates (order 1) would, 8x faster."""

    def taps(first: int, stop: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = np.clip((np.arange(first, stop, dtype=np.float32) + 0.5) / step - 0.5, 0, n - 1)
        low = np.floor(at).astype(np.intp)
        return low, np.minimum(low + 1, n - 1), at - low

    (y0, y1, fy), (x0, x1, fx) = taps(*rows, coarse.shape[0]), taps(*cols, coarse.shape[1])
    across = coarse[y0] * (1 - fy)[:, None] + coarse[y1] * fy[:, None]
    return across[:, x0] * (1 - fx) + across[:, x1] * fx


def digit_ink(gray, near, step, paper_coarse, sign, offset, low, lines) -> tuple[np.ndarray, int, int]:
    """The ink at full resolution within the bounding box of `near` (a mask on the step x step
    blocks), and that box's top left: each pixel's level above the paper (the coarse model,
    interpolated), zero away from `near` and where the paper's grain (`low`) could explain it, and
    printed `lines` (bands on the blocks, printed.bands) taken out where no stroke crosses them."""
    rows, cols = np.nonzero(near.any(axis=1))[0], np.nonzero(near.any(axis=0))[0]
    top, left = rows[0] * step, cols[0] * step
    bottom = gray.shape[0] if rows[-1] == near.shape[0] - 1 else (rows[-1] + 1) * step
    right = gray.shape[1] if cols[-1] == near.shape[1] - 1 else (cols[-1] + 1) * step
    cut, shape = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)), (bottom - top, right - left)
    horizontal, vertical = (upsampled(band, *cut, step, shape) for band in lines[:2])
    mask = upsampled(near, *cut, step, shape) | horizontal | vertical  # printed.remove keeps only crossings
    if np.ndim(paper_coarse):
        paper_coarse = between_blocks(paper_coarse, step, (top, bottom), (left, right))
    ink = sign * (paper_coarse - gray[top:bottom, left:right]) - offset
    ink = np.where(mask & (ink > low), ink, 0).astype(np.float32)
    return printed.remove(ink, horizontal, vertical, lines[2] * step), top, left


def to_mnist(gray: np.ndarray, noise_floor: float = 0.0, found: Found | None = None) -> np.ndarray:
    """A 2-D gray image of one digit -> (28, 28) float32 in 0-255, light ink on black, MNIST layout
    (read_page, the page read as one digit)."""
    return read_page(gray, noise_floor, found, several=False)[0]


def read_page(
    gray: np.ndarray, noise_floor: float = 0.0, found: Found | None = None, several: bool = True
) -> list[np.ndarray]:
    """A 2-D gray image of a digit, or of a number (`several`: numbers.py) -> its digits left to
    right, each (28, 28) float32 in 0-255, light ink on black, MNIST layout.

    The digit is found at a coarse scale, about SCALE_PX pixels on the longer side (block means:
    smoothing against grain that costs one pass over a large photo): the paper is modelled (uneven
    light included) and subtracted, and the digit's parts are where the ink is strong. Its pixels
    are then read at full resolution, near those parts only: those that stand out from the paper
    by more than its grain (NOISE_SIGMAS robust standard deviations, and `noise_floor`). Ink weaker
    than MNIST's (pencil, a dim photo) is stretched to full contrast. What was found goes into
    `found` as it is found (an image not readable has its lines there).
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8:  # 8-bit levels stay so: the page is read at full resolution only near the digit
        gray = gray.astype(np.float32, copy=False)
    found = Found() if found is None else found
    found.page = gray
    step = max(1, min(round(max(gray.shape) / SCALE_PX), min(gray.shape)))
    coarse = blocks(gray, step) if step > 1 else gray.astype(np.float32)
    # One full-resolution pixel per block (its centre, where the block's paper level holds).
    centres = gray[step // 2 :: step, step // 2 :: step][: coarse.shape[0], : coarse.shape[1]]
    if min(gray.shape) >= PAPER_MODEL_MIN_SIDE:  # a photo may show what lies beyond the page: paper it over
        beyond = beyond_paper(coarse)
        if beyond.any():
            nearest = tuple(ndimage.distance_transform_edt(beyond, return_distances=False, return_indices=True))
            coarse, centres = coarse[nearest], centres[nearest]
            found.beyond = beyond
    # The paper around the digit: a frame a tenth of the image wide (a printed line along an edge
    # is a small part of it). Polarity: light paper means dark ink, as people draw; MNIST is the reverse.
    edge = max(1, min(centres.shape) // 10)
    border = np.concatenate(
        [side.ravel() for side in (centres[:edge], centres[-edge:], centres[:, :edge], centres[:, -edge:])]
    )
    dark_ink = float(np.median(border)) >= 128
    sign = np.float32(1 if dark_ink else -1)  # ink = sign * (paper - gray)
    modelled = min(gray.shape) >= PAPER_MODEL_MIN_SIDE and uneven_light(coarse)
    paper_coarse = paper(coarse, dark_ink) if modelled else np.float32(np.median(border))
    # The grain, from the blocks' centre pixels: most of any page is paper, so the median is the
    # paper and the median absolute deviation its grain's spread.
    grain = sign * (paper_coarse - centres)
    offset = np.float32(np.median(grain))
    spread = float(np.median(np.abs(grain - offset))) * 1.4826
    low = max(noise_floor, NOISE_SIGMAS * spread)
    ink = sign * (paper_coarse - coarse) - offset
    smooth = ndimage.gaussian_filter(ink, sigma=1) if spread > 0 else ink
    lines = printed.bands(smooth > low)  # ruled lines, grids, a form's box: not the digit
    smooth = printed.remove(smooth, *lines, low)
    found.lines, found.step = lines[:2], step
    peak = float(smooth.max())
    if peak <= low:
        raise NotReadable("no ink found: the image is blank (one uniform colour or only noise)")
    labels, boxes, mass, keep = ink_parts(smooth > max(low, STRONG * peak), smooth)
    main = int(np.argmax(mass))
    longest = max(boxes[main][0].stop - boxes[main][0].start, boxes[main][1].stop - boxes[main][1].start)
    if longest * step < MIN_SIDE:
        raise NotReadable(
            f"the ink is specks (the largest {longest * step} pixels long), too small for a digit's strokes"
        )
    chain = numbers.digits_of_number(boxes, keep, main) if several else None
    masks = (
        [digit_parts(labels, boxes, main, keep)]
        if chain is None
        else [np.isin(labels, [i + 1 for i in group["parts"]]) for group in chain]
    )
    read, refused = [], None
    for mask in masks:  # a column of a number that is not strokes (a stray mark, a line's stub) is no digit of it
        try:
            read.append(digit_field(mask, gray, step, paper_coarse, sign, offset, low, lines, peak))
        except NotReadable as exc:
            refused = exc
    if not read:
        raise refused
    found.boxes, found.inks = [box for _, box, _ in read], [ink for _, _, ink in read]
    return [field for field, _, _ in read]


def digit_field(
    parts, gray, step, paper_coarse, sign, offset, low, lines, peak
) -> tuple[np.ndarray, tuple, np.ndarray]:
    """One digit's 28x28 field from its `parts` (a mask on the step x step blocks), its ink's box
    (top, left, bottom, right) in the page's pixels and its ink within that box."""
    # The strokes' soft edges: two pixels on an image at full scale, one block where blocks hold two or more.
    near = ndimage.binary_dilation(parts, iterations=max(1, 2 // step))
    ink, top, left = digit_ink(gray, near, step, paper_coarse, sign, offset, low, lines)
    if float(ink.max()) < FULL:  # the smoothed peak: a grainy pixel does not set the contrast
        ink *= np.float32(255 / peak)
    ink = np.clip(ink, 0, 255)
    rows, cols = np.nonzero(ink)
    box = (top + int(rows.min()), left + int(cols.min()), top + int(rows.max()) + 1, left + int(cols.max()) + 1)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return field_of(ink), box, ink


def field_of(ink: np.ndarray) -> np.ndarray:
    """A digit's ink cropped to its box (full resolution, 0-255) -> its 28x28 field, MNIST's way;
    NotReadable where the ink is not written strokes (judge_strokes)."""
    h, w = ink.shape
    if max(h, w) < MIN_SIDE:
        raise NotReadable(f"the only ink is a speck of {h} x {w} pixels, too small for a digit")
    scale = BOX / max(h, w)
    if scale != 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        ink = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
        ink = np.clip(ink, 0, 255)

    # Centre of mass to the field's centre; integer shifts so no further resampling blurs the strokes.
    total = float(ink.sum())
    cy = float((ink.sum(axis=1) * np.arange(ink.shape[0])).sum()) / total
    cx = float((ink.sum(axis=0) * np.arange(ink.shape[1])).sum()) / total
    top, left = int(round(FIELD / 2 - cy)), int(round(FIELD / 2 - cx))  # MNIST: mass centre within 0.5 px of (14, 14)
    top = min(max(top, 0), FIELD - ink.shape[0])
    left = min(max(left, 0), FIELD - ink.shape[1])
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    judge_strokes(field)
    return field


def judge_strokes(field: np.ndarray) -> None:
    """Raise NotReadable unless the 28x28 ink looks written: strokes with edges, not a solid speck,
    blot or smudge (the bounds are MNIST's, above)."""
    strong = field >= 128
    rows, cols = np.nonzero(strong)
    if not len(rows):
        raise NotReadable("the ink is faint throughout, like a smudge or a shadow, not strokes")
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    solid = float(strong.sum()) / (height * width)
    if solid > SOLID_MAX and min(height, width) > max(height, width) / 2:  # a bar (a 1) is solid but long
        raise NotReadable(f"the ink is a solid speck, blot or smudge ({solid:.0%} of its box), not strokes")
    labels, _ = ndimage.label(strong, structure=np.ones((3, 3)))
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(largest)
    long = (max(np.ptp(rows), np.ptp(cols)) + 1) / (2 * float(ndimage.distance_transform_edt(largest).max()))
    if long < LONG_MIN:
        raise NotReadable(f"the ink is round specks ({long:.1f} times as long as thick), not strokes")
    gradient = np.hypot(*np.gradient(field))[field > 8]
    at = int(0.9 * (len(gradient) - 1))  # its 90th percentile
    edges = float(np.partition(gradient, at)[at])
    if edges < EDGE_MIN:
        raise NotReadable(f"the ink has no edges ({edges:.0f} levels a pixel), like a smudge or a shadow, not strokes")


def load_page(
    path: str | os.PathLike, preprocessing: str = "digits", found: Found | None = None, several: bool = True
) -> list[np.ndarray]:
    """Read one image file the way the model expects (its `preprocessing`, recorded with its data):
    `digits` finds the digit, or the digits of a number (`several`), and centres each (read_page);
    `none` only makes it gray and 28x28. A list of 28x28 fields, left to right; what was found goes
    into `found`."""
    found = Found() if found is None else found
    gray, fmt = load_gray(path, found)
    if preprocessing != "digits":
        found.page = gray
        resized = Image.fromarray(gray.astype(np.float32), mode="F").resize((FIELD, FIELD), Image.Resampling.LANCZOS)
        return [np.clip(np.asarray(resized, dtype=np.float32), 0, 255)]
    try:
        return read_page(gray, LOSSY_FLOOR if fmt in LOSSY_FORMATS else 0.0, found, several)
    except DataError as exc:  # NotReadable stays NotReadable: an answer, not a failure
        raise type(exc)(f"{path}: {exc}") from exc


def load_image(path: str | os.PathLike, preprocessing: str = "digits", found: Found | None = None) -> np.ndarray:
    """Read one image file of one digit the way the model expects (load_page): (28, 28) in 0-255."""
    return load_page(path, preprocessing, found, several=False)[0]


def load_digit(path: str | os.PathLike, found: Found | None = None) -> np.ndarray:
    """Read one image file of one digit and return it MNIST-style (28, 28) in 0-255 units."""
    return load_image(path, "digits", found)


def image_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories into the files they hold (sorted), keeping explicit files as given."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files
