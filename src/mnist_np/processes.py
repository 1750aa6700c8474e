"""Processes, ports and waits: each chore written once, for src, cluster/ and the tests.

psutil knows processes and sockets (on Linux from /proc, elsewhere as the system tells); nothing
here parses /proc by hand.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

T = TypeVar("T")
HOST = "127.0.0.1"  # everything this project starts listens here only


def free_port(host: str = HOST) -> int:
    """A TCP port free on `host` now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    """Whether `port` on `host` can be listened on now."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def listening_on(port: int) -> list[int]:
    """Pids of processes listening on TCP `port` (those this user may see; all of them as root). A
    socket several processes share (a server's workers) is reported under one of them."""
    found = psutil.net_connections(kind="tcp")
    return sorted({c.pid for c in found if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid})


def wait_until(check: Callable[[], T], timeout_s: float, interval_s: float = 0.2) -> T | None:
    """Call `check` until it returns something true (returned) or `timeout_s` passes (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(interval_s)


def answers(url: str, path: str = "/health", timeout_s: float = 2) -> bool:
    """Whether the HTTP server at `url` answers `path` with 200 (MLflow's health check by default)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}{path}", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (dead, not yet reaped by its parent)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: it exists
        return True


def ancestors(pid: int | None = None) -> list[psutil.Process]:
    """The parents of `pid` (this process by default), nearest first."""
    try:
        return psutil.Process(pid).parents()
    except psutil.Error:
        return []


def listening(pids: Iterable[int]) -> dict[str, int]:
    """'address:port' -> pid for every TCP socket that the processes `pids` listen on."""
    found = {}
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in connections:
            if c.status == psutil.CONN_LISTEN:
                found[f"{c.laddr.ip}:{c.laddr.port}"] = pid
    return found


def matching(predicate: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """Every live process (zombies left out) for which `predicate` holds."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and predicate(proc):
                out.append(proc)
        except psutil.Error:
            continue
    return out
