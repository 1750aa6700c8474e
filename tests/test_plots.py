"""The figures logged with every evaluation show what they say they show."""

import re

import numpy as np
import pandas as pd

from mnist_np.experiments import comparison_plots, plots, report


def test_the_misclassified_grid_shows_the_first_wrong_digits_under_their_labels():
    rng = np.random.default_rng(0)
    images = rng.random((60, 784), dtype=np.float32)
    y_true = rng.integers(0, 10, 60)
    y_pred = y_true.copy()
    wrong = np.sort(rng.choice(60, 40, replace=False))
    y_pred[wrong] = (y_true[wrong] + 1) % 10

    fig = plots.misclassified_grid(images, y_true, y_pred, limit=36, run="h10")
    [ax] = fig.axes
    [image] = ax.get_images()
    mosaic = image.get_array()
    labels = ax.texts
    assert [t.get_text() for t in labels] == [f"pred {y_pred[i]} / true {y_true[i]}" for i in wrong[:36]]
    for text, index in zip(labels, wrong[:36]):  # the digit right under its label
        x, y = text.get_position()
        top, left = int(y) + 1, int(x - 14)
        np.testing.assert_array_equal(mosaic[top : top + 28, left : left + 28], images[index].reshape(28, 28))
    assert mosaic.mask.sum() == mosaic.size - 36 * 784  # nothing else drawn
    assert fig.get_suptitle() == "h10: misclassified test digits (40 in all; first 36)"


def test_the_misclassified_grid_of_a_perfect_model_is_empty():
    y = np.arange(10)
    fig = plots.misclassified_grid(np.zeros((10, 784), np.float32), y, y)
    assert not fig.axes[0].texts and fig.axes[0].get_images()[0].get_array().mask.all()


def test_a_heatmap_cut_by_top_says_which_cells_it_left_out_and_log_ticks_do_not_overlap():
    every = pd.DataFrame({"train.lr": [0.01, 0.01, 0.1, 0.1], "h": [8, 16, 8, 16], "acc": [0.5, 0.6, 0.7, 0.8]})
    shown = every.sort_values("acc", ascending=False).head(3)
    fig = comparison_plots.accuracy_heatmap(shown, "train.lr", "h", "acc", grid=every[["train.lr", "h"]])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.6000", "0.7000", "0.8000", "not in the\n3 shown"]

    fig = comparison_plots.accuracy_vs_params(every, ["train.lr"], "acc")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.1"]  # the grid's values, as they are
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))


def test_a_report_is_one_file_with_its_figures_inline_and_the_same_bytes_each_time():
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "val_loss": [1.1, 0.6],
            "train_accuracy": [0.5, 0.8],
            "val_accuracy": [0.4, 0.7],
        }
    )
    pages = [
        report.page(
            "Run h8",
            "summary",
            [
                ("Curves", comparison_plots.learning_curves({"h8": history})),
                ("Table", report.table(history, ranked=True)),
            ],
        )
        for _ in range(2)
    ]
    assert pages[0] == pages[1]  # no date, no random ids: a pipeline output DVC can version
    assert "<svg" in pages[0] and not re.search(r'(src|href)="(https?:)?//', pages[0])  # nothing to fetch
    assert '<table class="dataframe ranked">' in pages[0]
