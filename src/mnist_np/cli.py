"""What every entry point shares: logging set-up and turning a user error into one line and exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .errors import UserError


def run(main: Callable[[], object]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
