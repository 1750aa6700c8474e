"""Composing conf/ with Hydra: the selection `make params` records, DVC's and the sweeps'
compositions, and Hydra's errors as one line. Only the commands that compose (make params, sweeps)
use this; the stages read params.yaml through config.py, so a change here reruns no stage.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

SELECTION = "selection"  # conf/selection.yaml: config.yaml plus the selection made with `make params`


def compose(
    conf_dir: str | os.PathLike = "conf", overrides: Sequence[str] = (), name: str = SELECTION
) -> dict[str, Any]:
    """Compose `conf/<name>.yaml` with Hydra, as DVC does for `dvc exp run`, into a plain dict."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = compose_node(name, overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def compose_node(name: str, overrides: Sequence[str]) -> DictConfig:
    """Hydra's composition of `name` with `overrides`, Hydra being initialised; a bad override (an
    unknown key or config) is a ConfigError naming it."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException

    try:
        return hydra_compose(config_name=name, overrides=list(overrides))
    except HydraException as exc:
        raise composition_error(exc, overrides) from exc


def freeze() -> None:
    """From here on, Hydra in this process composes conf/ as it is now: every config file of the
    primary config folder is read once and kept. A sweep's launcher composes each job as it starts
    it, reading conf/ again each time, so a `make params` or an edit during a sweep would change
    its later jobs; frozen, every job runs the composition the check before the first one saw.

    Hydra's config loader reads through a repository; this wraps it in Hydra's own caching one,
    filled now. Private API (hydra._internal): tests/test_private_apis.py names it on an upgrade."""
    from hydra._internal.config_repository import CachingConfigRepository
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    frozen = CachingConfigRepository(loader.repository)
    for source in frozen.get_sources():
        if source.provider == "main" and source.scheme() == "file":
            folder = Path(source.path)
            for path in sorted(folder.rglob("*.yaml")):
                frozen.load_config(path.relative_to(folder).with_suffix("").as_posix())
    # Each composition copies the repository (with what it holds) before reading through it.
    loader.repository = frozen


def composition_error(exc: Exception, overrides: Sequence[str] = ()) -> ConfigError:
    """Hydra's message about a bad override or config as one line: its first line (which names the
    key or config), the options Hydra lists for a missing config, and where to look."""
    first, *rest = str(exc).splitlines() or [type(exc).__name__]
    first = first.rstrip(".")
    if getattr(exc, "override", None):  # an override Hydra cannot parse: its message does not name it
        first = f"cannot read the override {exc.override!r}: {first}"
    listing = itertools.dropwhile(lambda line: not line.startswith("Available options in"), rest)
    next(listing, None)  # the heading; the options follow it, one per tab-indented line
    options = [line.strip() for line in itertools.takewhile(lambda line: line.startswith("\t"), listing)]
    return ConfigError(
        first
        + (f" ({' '.join(overrides)})" if overrides else "")
        + (f"; there are: {', '.join(options)}" if options else "")
        + "; every key and config: python pipelines/sweep.py --help"
    )


def differences(have: Any, composed: Any, key: str = "") -> list[str]:
    """Where `have` (params.yaml) differs from `composed` (conf/'s composition), one entry per key:
    `train.epochs: 30 in params.yaml, 2 in conf/`."""
    if isinstance(have, dict) and isinstance(composed, dict):
        names = [*composed, *(k for k in have if k not in composed)]
        return [
            found
            for name in names
            for found in differences(
                have.get(name, "(none)"), composed.get(name, "(none)"), f"{key}.{name}".lstrip(".")
            )
        ]
    return [] if have == composed else [f"{key}: {have} in params.yaml, {composed} in conf/"]


SELECTION_HEADER = """\
# The configuration in use: config.yaml plus what `make params ARGS=...` selected. Written by
# pipelines/compose_params.py (do not edit by hand; `make params` without ARGS resets it). DVC composes
# this file for `dvc exp run -S ...` (.dvc/config), and so do sweeps, so a selection survives both.
"""


def selection_yaml(conf_dir: Path, overrides: Sequence[str]) -> str:
    """conf/selection.yaml recording Hydra overrides: config groups chosen in its defaults list,
    values set in its body, so that composing it equals composing config.yaml with the overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    defaults: list[Any] = ["config"]
    body = OmegaConf.create({})
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_sweep_override() or override.is_delete():
            raise ConfigError(f"{override.input_line}: a selection takes single values; sweep with pipelines/sweep.py")
        if (conf_dir / key).is_dir():  # a config group: choose one of its files
            value = override.get_value_element_as_str()
            defaults.append({key: value} if override.is_add() else {f"override {key}": value})
        else:
            OmegaConf.update(body, key, override.value(), force_add=True)
    selection = OmegaConf.create({"defaults": [*defaults, "_self_"]})
    return SELECTION_HEADER + OmegaConf.to_yaml(OmegaConf.merge(selection, body))
