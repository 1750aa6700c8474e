"""Downloading from mirrors: order, checksum verification, retries, fallbacks, error report.

URL sources are served by a real HTTP server on 127.0.0.1; directories by the file system.
"""

import functools
import http.server
import shutil

import pytest

from helpers import SOURCE, http_server, tiny_source, write_tiny_mnist
from mnist_np.data import download
from mnist_np.errors import DownloadError


@pytest.fixture
def good(tmp_path):
    paths = write_tiny_mnist(tmp_path / "good")
    return tmp_path / "good", tiny_source(paths, retries=2, timeout_s=5, backoff_s=0.01)


@pytest.fixture
def http_mirror(tmp_path):
    """Serve a directory over HTTP on a free loopback port; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    with http_server(handler) as url:
        yield root, f"{url}/"


def with_mirrors(source, mirrors):
    return type(source)(**{**source.__dict__, "mirrors": mirrors})


def test_env_mirror_is_tried_before_the_configured_ones():
    assert download.sources(["https://a/"], {"MNIST_MIRROR": "/m"}) == ["/m", "https://a/"]
    assert download.sources(["https://a/"], {}) == ["https://a/"]


def test_downloads_from_a_local_directory_mirror(good, tmp_path):
    mirror, cfg = good
    used = download.download_all(
        with_mirrors(cfg, ["https://unused.invalid/"]),
        tmp_path / "raw",
        env={"MNIST_MIRROR": str(mirror)},
        progress=False,
    )
    assert set(used.values()) == {str(mirror)}
    for name in used:
        assert (tmp_path / "raw" / name).read_bytes() == (mirror / name).read_bytes()


def test_bad_checksum_source_falls_through_to_the_next_over_http(good, http_mirror, tmp_path):
    mirror, cfg = good
    served, url = http_mirror
    for path in mirror.iterdir():
        shutil.copy(path, served / path.name)
    # The first source serves a corrupted copy of one file; the second has all of them intact.
    bad = tmp_path / "bad"
    shutil.copytree(mirror, bad)
    victim = cfg.files.train_labels.name
    (bad / victim).write_bytes(b"\x00" * 10)
    sleeps = []
    spec = cfg.files.train_labels
    source = download.download(spec, tmp_path / "raw", [str(bad), url], cfg, sleep=sleeps.append, progress=False)
    assert source == url
    assert (tmp_path / "raw" / victim).read_bytes() == (mirror / victim).read_bytes()
    assert sleeps == [cfg.backoff_s]  # one retry with backoff on the bad source before moving on
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [victim]  # no temporary left behind


def test_every_source_failing_gives_one_error_listing_each(good, http_mirror, tmp_path):
    mirror, cfg = good
    served, url = http_mirror  # serves an empty directory: 404 for every file
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in mirror.iterdir():
        (corrupt / path.name).write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DownloadError) as err:
        download.download_all(
            with_mirrors(cfg, [url, str(tmp_path / "nowhere")]),
            tmp_path / "raw",
            env={"MNIST_MIRROR": str(corrupt)},
            progress=False,
        )
    message = str(err.value)
    assert "checksum mismatch" in message and "404" in message and "No such file" in message
    assert "\n" not in message and message.count("; ") == 3 and "MNIST_MIRROR" in message
    assert list((tmp_path / "raw").iterdir()) == []  # nothing partial or unverified stays


def test_present_verified_file_is_not_fetched_again(good, tmp_path):
    mirror, cfg = good
    raw = tmp_path / "raw"
    raw.mkdir()
    spec = cfg.files.test_labels
    shutil.copy(mirror / spec.name, raw / spec.name)
    assert download.download(spec, raw, [str(tmp_path / "nowhere")], cfg, progress=False) == "already present"


def test_real_mnist_files_verify_against_the_published_checksums(mnist_mirror, tmp_path):
    used = download.download_all(SOURCE, tmp_path / "raw", env={"MNIST_MIRROR": str(mnist_mirror)}, progress=False)
    assert sorted(used) == sorted(p.name for p in mnist_mirror.iterdir())
