"""The page with what was found on it drawn over it (mnist-predict --save-preprocessed), so a user
sees why it read what it read: the printed lines taken out (magenta), what lies beyond the paper's
edge (blue), the digit's box (green) and the reading above it ("7  p 0.98"), or why it is not
readable (red, at the top).
"""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .preprocess import Found

MAX_SIDE, MIN_SIDE = 1024, 280  # drawn at most this large (a photo), at least this large (a crop)
LINES, BOX, WARNING, BEYOND = (255, 0, 200), (0, 170, 0), (220, 0, 0), (0, 150, 255)


def draw(found: Found, boxes: list[tuple[int, int, int, int]], labels: list[str], reason: str | None) -> Image.Image:
    """`found.page` in RGB, scaled to between MIN_SIDE and MAX_SIDE on its longer side, with the
    lines, each digit's box (top, left, bottom, right in the page's pixels) with its label above
    it, and the `reason` it is not readable, if it is not."""
    page = np.clip(np.rint(found.page), 0, 255).astype(np.uint8)
    height, width = page.shape
    scale = min(MAX_SIDE / max(height, width), max(1.0, MIN_SIDE / max(height, width)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST  # a crop's pixels stay sharp
    image = Image.fromarray(page).convert("RGB").resize(size, resample)
    if found.lines is not None:
        image = tinted(image, found.lines[0] | found.lines[1], found.step * scale, LINES)
    if found.beyond is not None:
        image = tinted(image, found.beyond, found.step * scale, BEYOND)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(14, size[1] // 24))
    width_px = max(2, round(max(size) / 250))
    for box, label in zip(boxes, labels if reason is None else [""] * len(boxes)):
        top, left, bottom, right = (round(v * scale) for v in box)
        frame = (left - width_px, top - width_px, right + width_px, bottom + width_px)
        pen.rectangle(frame, outline=BOX, width=width_px)
        if label:
            at = (left, max(0, top - width_px - font.size - 6))
            pen.rectangle(pen.textbbox(at, label, font=font), fill=(255, 255, 255))
            pen.text(at, label, fill=BOX, font=font)
    if reason is not None:
        text = textwrap.fill(reason, width=max(16, int(size[0] / (0.55 * font.size))))
        pen.rectangle(pen.multiline_textbbox((4, 4), text, font=font), fill=(255, 255, 255))
        pen.multiline_text((4, 4), text, fill=WARNING, font=font)
    return image


def tinted(image: Image.Image, blocks: np.ndarray, block_px: float, colour: tuple[int, int, int]) -> Image.Image:
    """`image` with the `blocks` (a mask on blocks of `block_px` of its pixels) tinted `colour`."""
    if not blocks.any():
        return image
    covered = (round(blocks.shape[1] * block_px), round(blocks.shape[0] * block_px))
    mask = Image.new("L", image.size, 0)
    mask.paste(Image.fromarray(blocks.astype(np.uint8) * 140).resize(covered, Image.Resampling.NEAREST), (0, 0))
    return Image.composite(Image.new("RGB", image.size, colour), image, mask)
