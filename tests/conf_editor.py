"""A Hydra callback a test adds to a sweep (+hydra.callbacks...): when the sweep's first job ends, it
selects other parameters with `make params` (pipelines/compose_params.py) in the conf/ the sweep
was started from, as a person might while a long sweep runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

COMPOSE = Path(__file__).resolve().parents[1] / "pipelines" / "compose_params.py"


class MakeParamsAfterFirstJob(Callback):
    def __init__(self, conf: str, override: str) -> None:
        self.conf, self.override, self.done = Path(conf), override, False

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if not self.done:
            self.done = True
            out = self.conf.parent / "params.yaml"
            subprocess.run(
                [sys.executable, str(COMPOSE), "--conf", str(self.conf), "--out", str(out), self.override], check=True
            )
