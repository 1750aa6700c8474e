"""Figures that compare runs, for sweeps and compare.py: learning curves side by side, accuracy
against swept parameters and against training time.

Each function returns a matplotlib Figure built without pyplot (no global state, no display needed);
callers save it or hand it to mlflow.log_figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Loss and accuracy per epoch, training dashed and validation solid, one colour per run.

    Each history has the columns of reports/training.csv (epoch, train_/val_ loss and accuracy).
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (label, h) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(h["epoch"], h[f"train_{metric}"], "--", color=colour, alpha=0.7)
            ax.plot(h["epoch"], h[f"val_{metric}"], "-", marker="o", ms=3, color=colour, label=label)
    for ax, metric in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize="small", title="validation (solid), training (dashed)", title_fontsize="small")
    fig.suptitle("Learning curves")
    return fig


def accuracy_vs_params(runs: pd.DataFrame, params: list[str], metric: str = "val_accuracy") -> Figure:
    """One panel per swept parameter: each run's `metric` against that parameter's value.

    `runs` has one row per run, a column per parameter (numeric) and the metric column.
    """
    fig = Figure(figsize=(4.2 * max(len(params), 1), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(params), 1)))
    for ax, param in zip(axes, params):
        values = pd.to_numeric(runs[param])
        ax.scatter(values, runs[metric], alpha=0.8)
        means = runs.assign(**{param: values}).groupby(param)[metric].mean()
        ax.plot(means.index, means.values, "-", color="grey", alpha=0.6, label="mean")
        if values.gt(0).all() and values.max() / values.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} against each swept parameter ({len(runs)} runs)")
    return fig


def accuracy_heatmap(runs: pd.DataFrame, rows: str, columns: str, metric: str) -> Figure:
    """A two-parameter grid at a glance: the mean `metric` of the runs in each cell, values written in."""
    grid = runs.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean").sort_index().sort_index(axis=1)
    values = grid.to_numpy()
    fig = Figure(figsize=(1.2 * grid.shape[1] + 3, 0.7 * grid.shape[0] + 2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    middle = np.nanmean(values)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            colour = "white" if value < middle else "black"  # readable on viridis's dark and light ends
            ax.text(j, i, f"{value:.4f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(f"{metric} over {rows} x {columns} ({len(runs)} runs)")
    return fig


def accuracy_vs_time(runs: pd.DataFrame, metric: str, seconds: str = "train_seconds") -> Figure:
    """Which runs are worth their cost: each run's `metric` against its training time, named."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.scatter(runs[seconds], runs[metric], alpha=0.8)
    for _, run in runs.iterrows():
        ax.annotate(run["run_name"], (run[seconds], run[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("training time (s, gradient steps)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"{metric} against training time ({len(runs)} runs)")
    return fig
