"""Figures that compare runs, for sweeps and compare.py: learning curves side by side, accuracy
against swept parameters and against training time.

Each function returns a matplotlib Figure built without pyplot (no global state, no display needed);
callers save it or hand it to mlflow.log_figure. Margins are fixed (`margins`), not left to a layout
engine: each sweep's end and every compare.py draws these, and constrained layout drew them ~2x slower.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter


def margins(
    fig: Figure, left: float, right: float, bottom: float, top: float, between: float = 0, columns: int = 1
) -> None:
    """Fixed margins around `fig`'s subplots, in inches (room for tick labels, axis labels, titles),
    and `between` inches between its `columns` side by side, whatever the figure's size."""
    width, height = fig.get_size_inches()
    panel = (width - left - right - between * (columns - 1)) / columns
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, wspace=between / panel
    )


def learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Loss and accuracy per epoch, training dashed and validation solid, one colour per run.

    Each history has the columns of reports/training.csv (epoch, train_/val_ loss and accuracy).
    """
    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.9, wspace=0.2)
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


def accuracy_vs_params(runs: pd.DataFrame, params: list[str], metric: str) -> Figure:
    """One panel per swept parameter: each run's `metric` against that parameter's value.

    `runs` has one row per run, a column per parameter (numeric) and the metric column.
    """
    fig = Figure(figsize=(4.2 * max(len(params), 1), 3.8))
    margins(fig, left=0.8, right=0.15, bottom=0.55, top=0.45, between=0.8, columns=max(len(params), 1))
    axes = np.atleast_1d(fig.subplots(1, max(len(params), 1)))
    for ax, param in zip(axes, params):
        values = pd.to_numeric(runs[param])
        ax.scatter(values, runs[metric], alpha=0.8)
        means = runs.assign(**{param: values}).groupby(param)[metric].mean()
        ax.plot(means.index, means.values, "-", color="grey", alpha=0.6, label="mean")
        if values.gt(0).all() and values.max() / values.min() >= 10:
            log_axis(ax, values)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} against each swept parameter ({len(runs)} runs)")
    return fig


def log_axis(ax, values: pd.Series) -> None:
    """A log-scale x axis whose labels do not overlap: a grid's few values labelled as they are,
    many values (a Bayesian search) by decades only."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    distinct = np.unique(values)
    if len(distinct) <= 6:
        ax.set_xticks(distinct, [f"{v:g}" for v in distinct])


def accuracy_heatmap(
    runs: pd.DataFrame, rows: str, columns: str, metric: str, grid: pd.DataFrame | None = None
) -> Figure:
    """A two-parameter grid at a glance: the mean `metric` of the runs in each cell, values written
    in. `grid` (the two parameters of every run of the sweep) adds the cells that no run in `runs`
    fills, such as those `compare.py --top` left out: each says so."""
    table = runs.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean")
    if grid is not None:
        table = table.reindex(
            index=table.index.union(grid[rows].unique()), columns=table.columns.union(grid[columns].unique())
        )
    table = table.sort_index().sort_index(axis=1)
    values = table.to_numpy(dtype=float)
    fig = Figure(figsize=(1.2 * table.shape[1] + 3, 0.7 * table.shape[0] + 2))
    margins(fig, left=0.7, right=0.9, bottom=0.55, top=0.45)  # the colour bar takes its room from the axes
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    middle = np.nanmean(values)
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            ax.text(j, i, f"not in the\n{len(runs)} shown", ha="center", va="center", fontsize=7, color="grey")
        else:
            colour = "white" if value < middle else "black"  # readable on viridis's dark and light ends
            ax.text(j, i, f"{value:.4f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    fig.colorbar(image, ax=ax, label=metric)
    fig.suptitle(f"{metric} over {rows} x {columns} ({len(runs)} runs)")  # over the figure: a 2-column axes is narrow
    return fig


def accuracy_vs_time(runs: pd.DataFrame, metric: str, seconds: str = "train_seconds") -> Figure:
    """Which runs are worth their cost: each run's `metric` against its training time, named."""
    fig = Figure(figsize=(7.5, 4.8))
    margins(fig, left=0.8, right=0.2, bottom=0.55, top=0.4)
    ax = fig.subplots()
    ax.scatter(runs[seconds], runs[metric], alpha=0.8)
    middle = (runs[seconds].min() + runs[seconds].max()) / 2
    for _, run in runs.iterrows():  # each name on the side of its point towards the middle, inside the axes
        right = run[seconds] > middle
        ax.annotate(
            run["run_name"],
            (run[seconds], run[metric]),
            fontsize=7,
            xytext=(-3 if right else 3, 3),
            textcoords="offset points",
            ha="right" if right else "left",
        )
    ax.set_xlabel("training time (s, gradient steps)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"{metric} against training time ({len(runs)} runs)")
    return fig


def parallel_coordinates(runs: pd.DataFrame, params: list[str], metric: str) -> Figure:
    """Many swept parameters at once: one vertical axis per parameter and one for `metric`, each run
    a line across them coloured by its `metric` (the best drawn last, on top). Each axis spans its
    own range, labelled at both ends (log-spaced where the values span 10x or more)."""
    axes_names = [*params, metric]
    ranked = runs.sort_values(metric)
    columns = {}
    for name in axes_names:
        values = pd.to_numeric(ranked[name]).astype(float)
        log = name != metric and values.gt(0).all() and values.max() / values.min() >= 10
        scaled = np.log10(values) if log else values
        low, high = scaled.min(), scaled.max()
        columns[name] = ((scaled - low) / (high - low) if high > low else scaled * 0 + 0.5, values.min(), values.max())
    fig = Figure(figsize=(2.2 * len(axes_names) + 1.5, 4.6))
    margins(fig, left=0.3, right=0.3, bottom=0.4, top=0.4)
    ax = fig.subplots()
    scores = ranked[metric].to_numpy(dtype=float)
    colours = matplotlib.colormaps["viridis"]((scores - scores.min()) / max(np.ptp(scores), 1e-12))
    for row, colour in enumerate(colours):
        ax.plot(range(len(axes_names)), [columns[n][0].iloc[row] for n in axes_names], color=colour, alpha=0.8)
    for x, name in enumerate(axes_names):
        ax.axvline(x, color="grey", lw=0.8)
        _, low, high = columns[name]
        ax.text(x, -0.06, f"{low:.4g}", ha="center", va="top", fontsize=8)
        ax.text(x, 1.06, f"{high:.4g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(axes_names)), axes_names, fontsize=9)
    ax.set_yticks([])
    ax.set_ylim(-0.2, 1.2)
    ax.set_title(f"{len(runs)} runs across the swept parameters (colour: {metric}, yellow best)")
    return fig
