"""Figures of one run, which the stages log: the confusion heatmap and the misclassified digits.
Figures that compare runs are in comparison_plots.py (no stage draws them).

Each function returns a matplotlib Figure built without pyplot (no global state, no display needed);
callers save it or hand it to mlflow.log_figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def confusion_heatmap(confusion: np.ndarray, run: str = "") -> Figure:
    """Counts with rows = true digit and columns = predicted digit; the colour is the row share."""
    confusion = np.asarray(confusion)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    # Fixed margins, not a layout engine: every evaluation (each sweep job's) draws this figure, and
    # constrained layout drew it 1.5x slower for the same picture.
    fig = Figure(figsize=(6.4, 5.6))
    ax, bar = fig.add_axes((0.09, 0.08, 0.74, 0.84)), fig.add_axes((0.86, 0.08, 0.03, 0.84))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    ticks = range(len(confusion))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    fig.suptitle(f"{run + ': ' if run else ''}test confusion matrix (accuracy {accuracy:.2%})", y=0.97)
    fig.colorbar(image, cax=bar, label="share of the true digit")
    return fig


def misclassified_grid(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, limit: int = 36, run: str = ""
) -> Figure:
    """The first `limit` misclassified images (n, 784 or n, 28, 28) labelled 'pred P / true T'.

    The digits are tiled into one picture on one axes: an axes for each made every evaluation (each
    sweep job's too) spend ~0.5 s laying the figure out, for the same picture.
    """
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:limit]
    cols = 9
    rows = max(1, -(-len(shown) // cols))
    side, gap, band = 28, 4, 9  # pixels: a digit, the space between digits, the label above each
    mosaic = np.full((rows * (band + side), cols * (side + gap)), np.nan, dtype=np.float32)
    fig = Figure(figsize=(cols * 1.1, rows * 1.3 + 0.4))  # fixed margins, as confusion_heatmap
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.45 / (rows * 1.3 + 0.4))
    ax = fig.subplots()
    ax.axis("off")
    for k, index in enumerate(shown):
        top, left = (k // cols) * (band + side) + band, (k % cols) * (side + gap)
        mosaic[top : top + side, left : left + side] = images[index].reshape(side, side)
        label = f"pred {y_pred[index]} / true {y_true[index]}"
        ax.text(left + side / 2, top - 1, label, ha="center", va="bottom", fontsize=7, color="firebrick")
    ax.imshow(np.ma.masked_invalid(mosaic), cmap="gray_r", interpolation="nearest")
    fig.suptitle(f"{run + ': ' if run else ''}misclassified test digits ({len(wrong)} in all; first {len(shown)})")
    return fig
