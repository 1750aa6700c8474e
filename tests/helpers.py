"""Helpers shared by the test modules (fixtures live in conftest.py). Test modules import this,
never each other. MLflow is imported inside the functions that use it: pytest-xdist's controller
process loads this module through conftest.py and never needs MLflow (1.4 s to import)."""

from __future__ import annotations

import contextlib
import copy
import http.server
import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from omegaconf import OmegaConf

from mnist_np import composition, config, numerics, processes
from mnist_np.data.idx import write_idx
from mnist_np.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP = str(REPO / "pipelines" / "sweep.py")
NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_COMPOSED: dict[tuple[str, ...], dict] = {}


def composed(*overrides: str) -> dict:
    """conf/ composed with Hydra (as a fresh plain dict); each distinct composition is done once."""
    if overrides not in _COMPOSED:
        _COMPOSED[overrides] = composition.compose(REPO / "conf", overrides)
    return copy.deepcopy(_COMPOSED[overrides])


def project_config(*overrides: str) -> config.Config:
    """The project's validated configuration, with Hydra overrides."""
    return config.validate(composed(*overrides))


def write_tiny_mnist(directory: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> dict[str, Path]:
    """Four small IDX files whose images carry their label as a bright column, so they are learnable."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for prefix, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[np.arange(n), :, 2 + 2 * labels] = 255
        paths[f"{prefix}_images"] = directory / NAMES[f"{prefix}_images"]
        paths[f"{prefix}_labels"] = directory / NAMES[f"{prefix}_labels"]
        write_idx(paths[f"{prefix}_images"], images)
        write_idx(paths[f"{prefix}_labels"], labels)
    return paths


SOURCE = config.load_source(REPO / config.DATASET)  # the project's dataset definition (the file names)


def tiny_source(paths: dict[str, Path], **settings: object) -> config.DatasetSource:
    """The project's dataset definition pointed at tiny files (with their own checksums)."""
    raw = OmegaConf.to_container(OmegaConf.load(REPO / config.DATASET))
    for key, path in paths.items():
        raw["files"][key] = {"name": path.name, "sha256": sha256_file(path)}
    return config.validate({**raw, **settings}, config.DatasetSource)


def tiny_problem(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """n random float32 images (n, 784) whose label sets one pixel: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    x = rng.uniform(0, 0.2, size=(n, 784)).astype(np.float32)
    x[np.arange(n), y * 7] = 1.0
    return x, y


def run(
    cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when `check` and it exits non-zero."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def in_process(script: str | Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python script *args` in `cwd` with `env`, run in this process: its exit status, stdout and
    stderr, as subprocess.run(capture_output=True, text=True) gives them. For bad-input cases, where
    no signal or process boundary is under test: a fresh interpreter costs ~2 s (import mlflow).

    The numerics stay this process's own (they are fixed when NumPy loads), and argv[0] names no
    file, so a command that would restart itself in other numerics fails with its one line instead."""
    own_numerics = {k: v for k, v in os.environ.items() if k in numerics.PORTABLE_ENV or k.startswith(numerics.SAVED)}
    saved = (dict(os.environ), os.getcwd(), sys.argv, signal.getsignal(signal.SIGTERM))
    out, err, status = io.StringIO(), io.StringIO(), 0
    try:
        os.environ.clear()
        os.environ.update({**env, **own_numerics})
        if "MLFLOW_TRACKING_URI" in env:
            import mlflow

            mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        os.chdir(cwd)
        sys.argv = [f"{script} (in-process)", *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        environ, cwd_before, sys.argv, sigterm = saved
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd_before)
        signal.signal(signal.SIGTERM, sigterm)  # cli.run's handler turns SIGTERM into an exception
    return subprocess.CompletedProcess([str(script), *map(str, args)], status, out.getvalue(), err.getvalue())


def sweep_cmd(workdir: Path, *overrides: str) -> list[str]:
    """pipelines/sweep.py -m in `workdir` on tiny data (its validation split has 20 images)."""
    return [sys.executable, SWEEP, "-m", f"hydra.sweep.dir={workdir / 'multirun'}", "data.val_size=20", *overrides]


def sweep(workdir: Path, env: dict, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """A one-epoch sweep on tiny data, run to its end."""
    return run(sweep_cmd(workdir, "train.epochs=1", *overrides), workdir, env, check, timeout=600)


def api(url: str, path: str, body: dict | None = None) -> dict:
    """A call to an MLflow tracking server's REST API: GET, or POST with a JSON body."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}",
        method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def copy_checkout(dest: Path) -> Path:
    """Copy into `dest` the files this checkout would commit (tracked, plus new files git does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """This environment as the user's shell had it (without MLflow or DVC settings, without the
    numerics this process set up for itself), with the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", numerics.SAVED))}
    env.pop(numerics.MODE_ENV, None)
    for key in numerics.PORTABLE_ENV:
        saved = os.environ.get(numerics.SAVED + key)
        if saved:
            env[key] = saved
        elif saved is not None:
            env.pop(key, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def wait_for(predicate, timeout: float = 120, what: str = "condition"):
    """processes.wait_until, failing the test when time runs out."""
    value = processes.wait_until(predicate, timeout)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


def _interruptible() -> None:
    """Ctrl-C's default in a child, whatever this process inherited: a shell starts background jobs
    with SIGINT ignored, and Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def held_still(pid: int) -> Iterator[None]:
    """`pid` stopped (SIGSTOP) for the block, as a job the machine starves, and let go after it.
    Stopped only at a moment it holds no file lock (/proc/locks): a process stopped inside an SQLite
    write would stop every other writer of that store with it."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        with open("/proc/locks") as locks:
            if not any(line.split()[4] == str(pid) for line in locks if len(line.split()) > 4):
                break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Watched:
    """A process whose output lines are collected as they come, so a test can act on them."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict, group: bool = False) -> None:
        """`group`: in a process group of its own, which stop() signals whole, as a terminal does."""
        self.group = group
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0 if group else None,
            preexec_fn=_interruptible,
        )
        self.out, self.err = [], []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for_line(self, text: str, timeout: float = 120) -> None:
        wait_for(lambda: any(text in line for line in self.out + self.err), timeout, repr(text))

    def stop(self, sig: int, timeout: float = 120) -> tuple[int, str]:
        if self.group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        """(exit status, everything it wrote to stderr) once it has ended."""
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return self.proc.returncode, "".join(self.err)


@dataclass(frozen=True)
class Trained:
    """A project directory trained on real MNIST: data/processed, models/model.npz, training.csv,
    and the run in an MLflow store of its own."""

    root: Path
    run_id: str
    uri: str

    def test_accuracy(self) -> float:
        from mnist_np.data import splits
        from mnist_np.model import weights
        from mnist_np.training import metrics

        test = splits.load(self.root / "data" / "processed", "test")
        return metrics.evaluate(weights.load(self.root / "models" / "model.npz"), test.x, test.y)[1]


def train_project(root: Path, mirror: Path, *overrides: str, judge_columns: int = 0) -> Trained:
    """Prepare the real data (with a judge of touching digits learnt from `judge_columns` columns,
    none for 0) and train with the project's configuration plus `overrides`, as the normalize and
    train stages do."""
    import mlflow

    from mnist_np.data import splits
    from mnist_np.experiments import stages
    from mnist_np.serving import touching
    from mnist_np.tracking import store

    cfg = project_config(*overrides)
    prepared, stats = splits.prepare(mirror, cfg.data, SOURCE)
    splits.save(root / "data" / "processed", prepared, stats)
    if judge_columns:
        images, labels = splits.pixels(prepared["train"], stats), prepared["train"].y
        judge = touching.train_judge(images, labels, judge_columns, cfg.data.split_seed, progress=False)
        touching.save_judge(root / "data" / "processed", judge)
    uri = migrated_store(root / "mlflow.db")
    session_uri = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        experiment_id = store.setup("mnist", root)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            data = stages.load_training_data(cfg, root / "data" / "processed")
            stages.train(cfg, data, root / "models", root / "training.csv", progress=False)
    finally:
        mlflow.set_tracking_uri(session_uri)
    return Trained(root, run.info.run_id, uri)


@contextlib.contextmanager
def http_server(handler) -> Iterator[str]:
    """`handler` served on a free loopback port from a thread: yields the base URL (no trailing /)."""
    server = http.server.ThreadingHTTPServer((processes.HOST, 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://{processes.HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()  # returns within one poll_interval
        server.server_close()


def migrated_store(path: Path) -> str:
    """The URI of a new SQLite MLflow store at `path`, MLflow's tables already in place: the copy of
    an empty migrated store that the product makes for every new store (tracking/store.py; migrating
    takes ~1.5 s, a copy milliseconds)."""
    from mnist_np.tracking import store

    path.parent.mkdir(parents=True, exist_ok=True)
    store._with_mlflow_tables(path)
    return f"sqlite:///{path}"


def built_once(factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable[[Path], dict]) -> dict:
    """What `build(directory)` returns (a dict of JSON values; paths come back as strings), built
    once per test run however many pytest-xdist workers ask: the first one builds under a file lock
    in the directory all workers of this run share, the others wait for it and read its record."""
    base = factory.getbasetemp() if worker_id == "master" else factory.getbasetemp().parent
    record = base / name / "built.json"
    with FileLock(base / f"{name}.lock"):
        if not record.is_file():
            shutil.rmtree(base / name, ignore_errors=True)  # what a failed build left
            (base / name).mkdir()
            record.write_text(json.dumps(build(base / name), default=str))
    return json.loads(record.read_text())


def trained_once(factory, worker_id: str, mirror: Path, name: str, *overrides: str, judge_columns: int = 0) -> Trained:
    """train_project(..., *overrides, judge_columns) once per test run, in `name` of the directory
    every pytest-xdist worker shares."""

    def build(root: Path) -> dict:
        return vars(train_project(root, mirror, *overrides, judge_columns=judge_columns))

    built = built_once(factory, worker_id, name, build)
    return Trained(Path(built["root"]), built["run_id"], built["uri"])


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `path` (created) with mount `options` ("size=16k", "ro"), unmounted
    afterwards: a full or read-only file system for the test. Skips the test where mounting is not
    allowed (it needs root with CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs root and CAP_SYS_ADMIN"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


# Root ignores file permissions through two capabilities; without them (setpriv) it is held to a
# file's owner and mode like any user, so a test can be "another user" with the same interpreter.
AS_ANOTHER_USER = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def another_user_can_be_simulated() -> str | None:
    """None if AS_ANOTHER_USER works here, else why not (then the test skips)."""
    if os.geteuid() != 0:
        return "not root: the files of another user cannot be made"
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed"
    return None


def chromium_path() -> str:
    """The distribution's Chromium ($CHROMIUM, else on PATH) for Playwright; the test skips without
    one, or fails where .ci/run requires it (MNIST_NP_REQUIRE_BROWSER)."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("MNIST_NP_REQUIRE_BROWSER"):
            pytest.fail("no Chromium found, and .ci/run requires one (apt-get install chromium)")
        pytest.skip("no Chromium found (apt-get install chromium); CI installs it and runs this test")
    return found


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 900, offline: bool = False) -> Iterator:
    """A Playwright page in a fresh Chromium profile (nothing remembered from an earlier visit);
    `offline`: every network request fails, as on a machine without one."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, offline=offline)
            yield context.new_page()
        finally:
            browser.close()


def drawn_marks(page) -> int:
    """How many marks (paths, rectangles, circles, lines, text) the page's SVG figures hold."""
    return page.locator("svg path, svg rect, svg circle, svg line, svg text, svg use").count()
