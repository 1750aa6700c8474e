"""Benchmark: the sweep driver submitting 10,000 jobs to Ray, as a dry run (each job a no-op task).

    make cluster-up && source .cluster.env        # or any Ray cluster in RAY_ADDRESS (else a local Ray)
    python benchmarks/ray_submission.py [--jobs 10000] [--repeats 3] [--out benchmarks/results/ray_submission.json]

The driver is the real one: the project's Ray launcher set up by Hydra from the sweep's own config
(`hydra/launcher=mnist_ray`), its slots (src/mnist_np/experiments/launching.py) and
`launch_as_finished`; only the function each task runs is swapped for one that returns at once, so
what is measured is the driver's own cost: the time to submit every job, the time until every result
is back, and the driver's memory (its peak resident size above what it had before the first
submission, sampled every 20 ms). The peer, in the same run: the same tasks each carrying the sweep's
Hydra state (config loader, config, task function, Hydra's singletons), as Hydra's Ray launcher
sends them, instead of one reference to it in Ray's object store. Each side runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def noop(idx: int, overrides: list[str], shared) -> object:
    """A job that does nothing (`shared` is the Hydra state, sent once or with every task)."""
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=idx)


def sweep_launcher():
    """The project's Ray launcher as Hydra sets it up for `sweep.py -m hydra/launcher=mnist_ray`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    initialize_config_dir(str(REPO / "conf"), version_base="1.3", job_name="sweep")
    config = compose("selection", ["hydra/launcher=mnist_ray"], return_hydra_config=True)
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
    launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=noop, config=config)
    return launcher


class PeakMemory:
    """The process's peak resident size while inside the `with`, sampled every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self.process, self.peak, self.stop = psutil.Process(), 0, threading.Event()

    def sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self.before = self.process.memory_info().rss
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def one_side(jobs: int, by_value: bool) -> dict:
    """Submit `jobs` no-op jobs through the launcher's slots; the figures of this process."""
    import ray

    from mnist_np.experiments import launching

    launcher = sweep_launcher()
    slots = launcher.slots(jobs)  # connects to $RAY_ADDRESS, or starts a local Ray
    shared_bytes = len(ray.cloudpickle.dumps(launching.shared_state(launcher)))  # as Ray sends it
    slots.task = ray.remote(num_cpus=1)(noop)
    if by_value:  # Hydra's Ray launcher: the state travels with each task
        slots.shared = launching.shared_state(launcher)
    overrides = [[f"train.lr={0.001 * (i % 500 + 1):g}", f"model.hidden_size={8 + i // 500}"] for i in range(jobs)]
    submitted = {}

    class Timed:  # the launcher, with the moment the last job went in noted
        def slots(self, capacity):
            submit = slots.submit

            def timed(idx, job_overrides):
                submit(idx, job_overrides)
                submitted["last"] = time.perf_counter()

            slots.submit = timed
            return slots

    with PeakMemory() as memory:
        start = time.perf_counter()
        results = launching.launch_as_finished(Timed(), overrides, 0)
        end = time.perf_counter()
    assert [r.return_value for r in results] == list(range(jobs)), "a result is missing or out of order"
    return {
        "submit_s": round(submitted["last"] - start, 2),
        "all_results_s": round(end - start, 2),
        "driver_peak_rss_above_start_mb": round((memory.peak - memory.before) / 2**20, 1),
        "hydra_state_bytes": shared_bytes,
        "cluster_cpus": ray.cluster_resources().get("CPU"),
    }


def run_side(jobs: int, by_value: bool) -> dict:
    cmd = [sys.executable, __file__, "--side", "by_value" if by_value else "shared", "--jobs", str(jobs)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    if done.returncode != 0:
        sys.exit(f"error: a benchmark side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=["shared", "by_value"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.side:  # one side, in its own process: its figures as the last line
        print(json.dumps(one_side(args.jobs, args.side == "by_value")))
        return
    runs: dict[str, list[dict]] = {"shared": [], "by_value": []}
    for repeat in range(args.repeats):
        for side in runs:
            runs[side].append(run_side(args.jobs, side == "by_value"))
            print(f"repeat {repeat + 1}, {side}: {runs[side][-1]}", file=sys.stderr, flush=True)
    keys = ("submit_s", "all_results_s", "driver_peak_rss_above_start_mb")
    medians = {side: {k: statistics.median(r[k] for r in found) for k in keys} for side, found in runs.items()}
    result = {
        "jobs": args.jobs,
        "ray": "RAY_ADDRESS " + os.environ["RAY_ADDRESS"] if os.environ.get("RAY_ADDRESS") else "a local Ray",
        "machine": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "hydra_state_bytes": runs["shared"][0]["hydra_state_bytes"],
        "median": medians,
        "memory_ratio_shared_over_by_value": round(
            medians["shared"]["driver_peak_rss_above_start_mb"] / medians["by_value"]["driver_peak_rss_above_start_mb"],
            2,
        ),
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
