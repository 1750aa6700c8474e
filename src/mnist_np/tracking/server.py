"""A throwaway `mlflow server` on this machine, for the tools and tests that look at the UI or talk
to a server (docs/screenshots.py, the server tests). No stage runs it, so it lives apart from
store.py, which every stage imports: a change here reruns no stage.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError


@contextlib.contextmanager
def local_server(backend_store_uri: str, *options: str, timeout_s: float = 120) -> Iterator[str]:
    """An `mlflow server` for `backend_store_uri` on a free 127.0.0.1 port with one worker (more
    `options`: --artifacts-destination DIR, say): its URL once it answers, stopped on leaving. A
    server that does not come up is a UserError ending with what it printed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_cli, "server", "--backend-store-uri", backend_store_uri, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*cmd, "--workers", "1", *options], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not server_answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise UserError(f"mlflow server did not start:\n{log.read().decode(errors='replace')[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def server_answers(url: str) -> bool:
    """Whether the MLflow server at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
