"""The MNIST-style preprocessing of user images."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_np.data.idx import read_idx
from mnist_np.errors import DataError
from mnist_np.serving import predict, preprocess, printed, reading, touching


def test_preprocessing_leaves_an_mnist_digit_unchanged(mnist_mirror):
    # MNIST digits already went through this procedure, so it must be the identity on them.
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:300]
    for array in images:
        assert np.array_equal(preprocess.to_mnist(array.astype(np.float32)), array)


def test_preprocessing_normalises_polarity_size_and_position():
    digit = np.zeros((60, 30), dtype=np.float32)
    digit[5:55, 10:20] = 255  # a tall bar, off-centre in a non-square image
    out = preprocess.to_mnist(255 - digit)  # dark on light
    rows, cols = np.nonzero(out)
    assert out.shape == (28, 28) and np.ptp(rows) + 1 == 20  # longest side scaled to 20
    total = out.sum()
    assert abs((out.sum(axis=1) * np.arange(28)).sum() / total - 14) <= 0.5
    assert abs((out.sum(axis=0) * np.arange(28)).sum() / total - 14) <= 0.5
    with pytest.raises(DataError, match="no ink"):
        preprocess.to_mnist(np.full((20, 20), 200, dtype=np.float32))


def test_transparent_background_counts_as_paper_and_format_is_reported(tmp_path):
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (20, 5, 30, 45))  # an opaque black bar on a transparent background
    image.save(tmp_path / "bar.png")
    gray, fmt = preprocess.load_gray(tmp_path / "bar.png")
    assert fmt == "PNG" and gray[0, 0] == 255 and gray[25, 25] == 0
    assert preprocess.load_digit(tmp_path / "bar.png").max() == 255


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        preprocess.load_digit(tmp_path / "x.png")


def test_directories_expand_to_their_files(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.png", "a.png", ".hidden"):
        (tmp_path / "d" / name).write_bytes(b"")
    assert [p.name for p in preprocess.image_files([tmp_path / "d", tmp_path / "z.jpg"])] == ["a.png", "b.png", "z.jpg"]


def test_sixteen_bit_gray_keeps_its_levels(tmp_path):
    # Pencil on off-white paper in a 16-bit scan: every level is above 255, so an 8-bit conversion
    # that clips would read the whole page as blank white.
    page = np.full((80, 80), 60000, np.uint16)
    page[20:60, 35:45] = 52000  # faint strokes, 8000 levels (about 31 in 8-bit units) darker
    Image.fromarray(page).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    gray, _ = preprocess.load_gray(tmp_path / "scan.png")
    assert abs(gray[0, 0] - 60000 * 255 / 65535) < 0.5 and abs(gray[30, 40] - 52000 * 255 / 65535) < 0.5
    digit = preprocess.load_digit(tmp_path / "scan.png")
    assert digit.max() == 255 and np.ptp(np.nonzero(digit)[0]) + 1 == 20  # the stroke, full contrast


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "1"])
def test_every_colour_model_reads_as_seen(tmp_path, mode):
    page = Image.new("RGB", (60, 60), (235, 235, 230))
    page.paste((20, 20, 90), (25, 10, 35, 50))  # a dark blue bar
    image = page.convert(mode)
    suffix = "jpg" if mode == "CMYK" else "png"
    image.save(tmp_path / f"bar.{suffix}")
    digit = preprocess.load_digit(tmp_path / f"bar.{suffix}")
    rows, cols = np.nonzero(digit > 50)
    assert np.ptp(rows) + 1 >= 15 and np.ptp(cols) + 1 <= 8  # the tall bar, upright


def test_exif_orientation_is_applied(tmp_path):
    page = Image.new("L", (80, 40), 240)
    page.paste(20, (10, 15, 70, 25))  # a horizontal bar as stored ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... in a photo the camera says to turn 90 degrees: upright, a vertical bar
    page.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    digit = preprocess.load_digit(tmp_path / "photo.jpg")
    rows, cols = np.nonzero(digit > 128)
    assert np.ptp(rows) > 3 * np.ptp(cols)


def test_the_digit_likeness_bounds_turn_away_almost_no_mnist_digit(mnist_mirror):
    """preprocess's bounds on written strokes come from MNIST's training digits: they reject at most
    0.2% of them (5,000 here, ~1.3 s; all 60,000: 0.07%, docs/serving.md)."""
    digits = read_idx(mnist_mirror / "train-images-idx3-ubyte.gz")[:5000].astype(np.float32)
    rejected = 0
    for digit in digits:
        try:
            preprocess.judge_strokes(digit)
        except preprocess.NotReadable:
            rejected += 1
    assert rejected <= 0.002 * len(digits)


def test_blots_smudges_and_specks_are_not_readable_with_the_reason():
    page = np.full((200, 200), 220, np.float32)
    rows, cols = np.ogrid[:200, :200]
    blot = page.copy()
    blot[(rows - 100) ** 2 + (cols - 90) ** 2 <= 30**2] = 30  # a round ink blot
    with pytest.raises(preprocess.NotReadable, match="solid speck, blot or smudge"):
        preprocess.to_mnist(blot)
    smudge = page - 100 * np.exp(-((rows - 100) ** 2 + (cols - 100) ** 2) / (2 * 25.0**2))
    with pytest.raises(preprocess.NotReadable, match="smudge"):
        preprocess.to_mnist(smudge.astype(np.float32))
    streak = page - 90 * np.exp(-((rows - 100) ** 2) / (2 * 40.0**2) - (cols - 100) ** 2 / (2 * 12.0**2))
    with pytest.raises(preprocess.NotReadable, match="no edges.*smudge"):  # long and soft: it read as a 1
        preprocess.to_mnist(streak.astype(np.float32))
    specks = page.copy()
    for x, radius in ((95, 6), (112, 3)):  # a 12-pixel speck and a small one beside it: not solid together
        specks[(rows - 100) ** 2 + (cols - x) ** 2 <= radius**2] = 40
    with pytest.raises(preprocess.NotReadable, match="round specks"):
        preprocess.to_mnist(specks)
    bar = page.copy()
    bar[40:160, 95:105] = 30  # a 1 drawn as a solid bar is still a digit
    assert preprocess.to_mnist(bar).max() == 255
    speck = page.copy()
    speck[100:104, 50:53] = 40
    with pytest.raises(preprocess.NotReadable, match="specks"):
        preprocess.to_mnist(speck)


def test_the_reading_threshold_rejects_the_chosen_share_of_validation_digits():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(10, 0.3), size=5000)
    chosen = reading.choose(probabilities)
    top = probabilities.max(axis=1)
    assert chosen["rejected_share_of_validation"] == np.mean(top < chosen["reject_below"]) <= reading.REJECTED_SHARE
    assert np.mean(top <= chosen["reject_below"]) >= reading.REJECTED_SHARE  # no lower bar rejects the share


def test_a_reject_below_that_is_not_a_probability_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--reject-below", "1.5", "digit.png"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --reject-below 1.5 is not a probability; give one from 0 (never) to 1"
    )


def test_printed_lines_and_a_box_are_found_and_strokes_are_not():
    """Rulings crossing the page and a box's sides meeting at corners are printed lines; a long,
    straight, thick stroke (a 1) between rulings is not, though its ends lie near them."""
    page = np.zeros((100, 100), bool)
    for row in (20, 50, 80):
        page[row : row + 2] = True
    page[10:90, 45:53] = True  # the 1
    horizontal, vertical, _ = printed.bands(page)
    assert horizontal[20:22].all() and horizontal[50:52].all() and horizontal[80:82].all()
    assert not vertical.any() and not horizontal[30:45, 45:53].any()
    boxed = np.zeros((100, 100), bool)
    boxed[10:12, 10:90] = boxed[88:90, 10:90] = boxed[10:90, 10:12] = boxed[10:90, 88:90] = True
    boxed[30:70, 45:53] = True
    horizontal, vertical, _ = printed.bands(boxed)
    assert horizontal[10:12, 10:90].all() and vertical[10:90, 88:90].all()
    assert not (horizontal | vertical)[30:70, 45:53].any()


def test_a_stroke_crossing_a_printed_line_keeps_its_ink():
    ink = np.zeros((60, 60), np.float32)
    ink[30:32] = 60  # a light ruling
    ink[10:50, 20:26] = 200  # a pen's stroke across it
    ink[28:34, 40:46] = 60  # the ruling's own thickening, not a stroke
    horizontal, vertical, reach = printed.bands(ink > 0)
    out = printed.remove(ink, horizontal, vertical, reach)
    assert (out[10:50, 20:26] == 200).all() and not out[30:32, :18].any() and not out[28:34, 40:46].any()
    ink[10:50, 20:26] = 60  # the same stroke as light as the line: joined through it from both sides
    out = printed.remove(ink, horizontal, vertical, reach)
    assert (out[10:50, 20:26] == 60).all() and not out[30:32, 30:38].any()


def test_the_line_openings_and_closings_are_scipys():
    """printed.opened and printed.closed compute from runs what scipy.ndimage's binary opening and
    closing by a vertical line compute (closing: away from the image's edges, where scipy's erodes)."""
    rng = np.random.default_rng(0)
    for length in (3, 4, 9):
        mask = rng.random((60, 40)) < 0.6
        element = np.ones((length, 1), bool)
        assert np.array_equal(printed.opened(mask, length), ndimage.binary_opening(mask, structure=element))
        mask[:length], mask[-length:] = False, False
        assert np.array_equal(printed.closed(mask, length), ndimage.binary_closing(mask, structure=element))


def test_the_page_level_helpers_compute_what_scipy_would():
    """blocks (block means), between_blocks (linear between block means) and square_opening give what
    the straightforward numpy and scipy.ndimage calls give: the first's sums exactly for 8-bit levels, the
    second to float32 rounding, the third exactly (odd and even squares, parts at the image's edge)."""
    rng = np.random.default_rng(0)
    page = rng.integers(0, 256, (61, 83), dtype=np.uint8)
    sums = page[:60, :80].reshape(12, 5, 16, 5).sum(axis=(1, 3))  # a remainder under one block dropped
    assert np.array_equal(preprocess.blocks(page, 5), sums.astype(np.float32) * np.float32(1 / 25))
    for coarse in (rng.random((12, 16), dtype=np.float32) * 200, rng.random((1, 16), dtype=np.float32)):
        rows, cols = (3, coarse.shape[0] * 5 + 1), (0, 83)
        y = (np.arange(*rows, dtype=np.float32) + 0.5) / 5 - 0.5
        x = (np.arange(*cols, dtype=np.float32) + 0.5) / 5 - 0.5
        expected = ndimage.map_coordinates(coarse, np.meshgrid(y, x, indexing="ij"), order=1, mode="nearest")
        np.testing.assert_allclose(preprocess.between_blocks(coarse, 5, rows, cols), expected, rtol=2e-6, atol=1e-6)
    mask = ndimage.uniform_filter(rng.random((50, 70)), 7) > 0.5
    mask[:, :9] = True  # a part along the edge, as the table beyond a photographed page
    for size in (2, 3, 6, 7):
        expected = ndimage.binary_opening(mask, structure=np.ones((size, size), bool))
        assert np.array_equal(preprocess.square_opening(mask, size), expected), size


def test_a_seam_follows_the_gap_between_touching_digits_where_it_steps_sideways():
    # Two blocks of ink whose gap steps one column right halfway down: the cheapest cut runs down the
    # gap (one sideways step, no ink), and the path handed back is that one, row by row.
    ink = np.full((20, 12), 255, np.float32)
    ink[:10, 5] = ink[10:, 6] = 0
    cuts = touching.seams(ink)
    crossing, path = min(cuts, key=lambda cut: cut[0])
    assert path.tolist() == [5] * 10 + [6] * 10
    assert crossing == pytest.approx(touching.SIDEWAYS * preprocess.BOX / 20)
    assert all(0 <= x < ink.shape[1] for _, cut in cuts for x in cut)


def test_a_judge_of_another_shape_is_one_error_naming_the_fix(tmp_path):
    # A judge.npz from before the judge named digits (two outputs) is refused with what to run.
    rng = np.random.default_rng(0)
    old = {"W1": rng.random((787, 8)), "b1": np.zeros(8), "W2": rng.random((8, 2)), "b2": np.zeros(2)}
    with pytest.raises(DataError, match=r"not a judge this version reads .*dvc repro --force normalize"):
        touching.load_judge(touching.save_judge(tmp_path, old))
