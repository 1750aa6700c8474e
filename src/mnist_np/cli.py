"""What every entry point shares: logging set-up and turning a user error into one line and exit code 2."""

from __future__ import annotations

import argparse
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


def stage_args(doc: str, **paths: str) -> argparse.Namespace:
    """Arguments of a DVC stage entry point: --params and one --<name> option per path (with its default)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    for name, default in paths.items():
        parser.add_argument(f"--{name}", default=default)
    return parser.parse_args()
