"""Turn an arbitrary photo or scan of one handwritten digit into an MNIST-style 28x28 image.

Follows the procedure MNIST itself was made with: grayscale; light ink on a dark background;
cropped to the ink's bounding box; scaled to fit a 20x20 box keeping the aspect ratio
(anti-aliased); placed in a 28x28 field with its centre of mass at the centre. The result is in
MNIST's raw 0-255 units, ready for the normalize stage's own transform (data.transform).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

FIELD, BOX = 28, 20
FAINT = 128  # strokes whose strongest level is below this are stretched to full white
# Lossy compression (JPEG, WebP) leaves faint ringing around strokes, which would widen the ink's
# bounding box and shrink the digit; in such files levels this close to the paper count as paper.
LOSSY_FORMATS, LOSSY_FLOOR = ("JPEG", "MPO", "WEBP"), 8.0
MAX_PIXELS = 50_000_000  # about 8000 x 6000; a larger file is refused before it is decoded
WORKING_SIDE = 2048  # larger images are shrunk to this while decoding: a digit keeps ample detail


def load_gray(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Any image Pillow reads (PNG, JPEG, BMP, ...) as a 2-D float32 array of 0-255 gray levels,
    with the file's format name. Images over MAX_PIXELS are refused before they are decoded, and
    large ones are shrunk to WORKING_SIDE while decoding, so no file can take much memory."""
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
            fmt = image.format or ""
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG decodes at a reduced scale directly
            image = ImageOps.exif_transpose(image)
            image.thumbnail((WORKING_SIDE, WORKING_SIDE))
            if image.mode in ("RGBA", "LA", "P"):
                # Transparent pixels count as white paper, the usual meaning of a transparent background.
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert("L"), dtype=np.float32), fmt
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def to_mnist(gray: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """A 2-D gray image of one digit -> (28, 28) float32 in 0-255, light ink on black, MNIST layout.

    Ink no stronger than `noise_floor` (or than the border's own variation) counts as background.
    """
    gray = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    # Polarity: a light border means dark ink on light paper, as people draw; MNIST is the reverse.
    ink = gray - background if background < 128 else background - gray
    # Paper grain and JPEG noise: anything no stronger than the border's own variation is background.
    # A clean image (such as an MNIST digit) has a uniform border, so nothing of it is lost here.
    ink[ink <= max(noise_floor, float(np.percentile(np.abs(border - background), 95)))] = 0
    peak = float(ink.max())
    if peak <= 0:
        raise DataError("no ink found: the image is blank (one uniform colour or only noise)")
    if peak < FAINT:
        ink *= np.float32(255 / peak)  # faint pencil or a dim photo: full contrast, like MNIST's strokes
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    h, w = ink.shape
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
    return field


def load_digit(path: str | os.PathLike) -> np.ndarray:
    """Read one image file and return it MNIST-style (28, 28) in 0-255 units."""
    gray, fmt = load_gray(path)
    try:
        return to_mnist(gray, LOSSY_FLOOR if fmt in LOSSY_FORMATS else 0.0)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def image_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories into the files they hold (sorted), keeping explicit files as given."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files
