"""A throwaway `mlflow server` on this machine, for the tests that look at the UI or talk to a
server. No stage runs it, so it lives apart from store.py, which every stage imports: a change here
reruns no stage.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import processes
from ..errors import UserError

# MLflow 3's server also starts seven job-runner processes (huey consumers, for its GenAI jobs: LLM
# judges, trace roll-ups) that poll for work all the time: ~14 CPU-seconds to start and about a
# fifth of a core while idle. Nothing here submits such jobs, so every server we start runs without them.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_env() -> dict[str, str]:
    """This process's environment, for an `mlflow server` started from it (SERVER_ENV)."""
    return {**os.environ, **SERVER_ENV}


@contextlib.contextmanager
def local_server(backend_store_uri: str, *options: str, timeout_s: float = 120) -> Iterator[str]:
    """An `mlflow server` for `backend_store_uri` on a free 127.0.0.1 port with one worker (more
    `options`: --artifacts-destination DIR, say): its URL once it answers, stopped on leaving. A
    server that does not come up is a UserError ending with what it printed."""
    port = processes.free_port()
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    cmd = [
        mlflow_cli,
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--host",
        processes.HOST,
        "--port",
        str(port),
    ]
    url = f"http://{processes.HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*cmd, "--workers", "1", *options], stdout=log, stderr=subprocess.STDOUT, env=server_env()
        )
        try:
            up = processes.wait_until(lambda: proc.poll() is not None or processes.answers(url), timeout_s, 0.5)
            if not up or proc.poll() is not None:  # timed out, or the server ended
                log.seek(0)
                raise UserError(f"mlflow server did not start:\n{log.read().decode(errors='replace')[-3000:]}")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
