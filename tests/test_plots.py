"""The figures logged with every evaluation show what they say they show."""

import numpy as np

from mnist_np.experiments import plots


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
