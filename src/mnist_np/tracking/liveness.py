"""Runs whose process died are found and closed.

A process killed outright (SIGKILL, the OOM killer, a reboot, a lost node) runs no exit handler, so
nothing in it can end its MLflow run: the run would stay RUNNING for good. So every run records the
process that runs it (host, pid namespace, pid and that process's start time, which tells a reused
pid apart) and, while it is open, a heartbeat tag refreshed every HEARTBEAT_S seconds. Each command
that opens the store (store.setup, compare) closes the RUNNING runs whose process is gone (same host
and pid namespace) or whose heartbeat stopped STALE_AFTER_S ago (another host, or another container
on this one, where every process may be pid 1: the process cannot be looked at there): KILLED, ended
at the last heartbeat, with the reason in the run's `failure` tag, and says so in one line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import mlflow
import psutil
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from .. import processes
from .runs import FAILURE_TAG

HOST_TAG, PID_TAG, STARTED_TAG = "process.host", "process.pid", "process.started"
PID_NAMESPACE_TAG = "process.pid_namespace"
HEARTBEAT_TAG = "process.heartbeat"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats: a run on another host is given up only after this


def pid_namespace() -> str:
    """This process's pid namespace (the inode of /proc/self/ns/pid; "" where there is none)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the one that runs a new run (its first heartbeat included)."""
    started = psutil.Process().create_time()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(psutil.Process().pid),
        PID_NAMESPACE_TAG: pid_namespace(),
        STARTED_TAG: f"{started:.2f}",
        HEARTBEAT_TAG: f"{time.time():.2f}",
    }


class Heartbeat:
    """From start() to stop() (or as a context manager), refresh `run_id`'s heartbeat tag every
    HEARTBEAT_S seconds from a daemon thread. A failed write (the store briefly away) is retried at
    the next beat."""

    def __init__(self, run_id: str, uri: str | None = None) -> None:
        self.run_id, self.client = run_id, MlflowClient(uri)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a heartbeat must never take training down
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.2f}")

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def start_run(**kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run(**kwargs) (a new run, or an existing one by run_id) owned by this process:
    its owner tags set, its heartbeat beating until the block ends."""
    with mlflow.start_run(**kwargs) as run, Heartbeat(run.info.run_id):
        mlflow.set_tags(owner_tags())
        yield run


def why_dead(tags: dict[str, str], now: float) -> str | None:
    """Why the run with these tags has no live process, or None if it may still have one (or never
    said which process runs it: a run from before this check existed, or from another tool)."""
    try:
        host, pid, started = tags[HOST_TAG], int(tags[PID_TAG]), float(tags[STARTED_TAG])
        beat = float(tags.get(HEARTBEAT_TAG, started))
    except (KeyError, ValueError):
        return None
    if host == socket.gethostname() and tags.get(PID_NAMESPACE_TAG, "") in ("", pid_namespace()):
        try:
            same = processes.alive(pid) and abs(psutil.Process(pid).create_time() - started) < 1
        except psutil.Error:
            same = False
        return None if same else f"its process (pid {pid} on {host}) ended without closing it"
    if now - beat > STALE_AFTER_S:
        return f"its process (pid {pid} on {host}) has sent no heartbeat for {(now - beat) / 60:.0f} minutes"
    return None


def close_dead_runs(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """End every RUNNING run of these experiments whose process is dead (why_dead) as KILLED, at
    its last heartbeat, with the reason and when it was noticed in its failure tag; say so on
    stderr in one line. Returns the ids of the runs closed."""
    now = time.time()
    closed = []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=1000):
        reason = why_dead(run.data.tags, now)
        if reason is None:
            continue
        beat = float(run.data.tags.get(HEARTBEAT_TAG, run.data.tags[STARTED_TAG]))
        noticed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        client.set_tag(run.info.run_id, FAILURE_TAG, f"{reason}; closed as KILLED when noticed at {noticed}")
        ended = max(int(beat * 1000), run.info.start_time)  # a first beat can precede the run's creation
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED), end_time=ended)
        closed.append(run.info.run_id)
    if closed:
        names = ", ".join(closed[:5]) + (f" and {len(closed) - 5} more" if len(closed) > 5 else "")
        print(
            f"note: closed {len(closed)} run(s) left RUNNING by a process that died: {names} "
            f"(now KILLED, the reason in their '{FAILURE_TAG}' tag)",
            file=sys.stderr,
        )
    return closed
