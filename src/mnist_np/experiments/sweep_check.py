"""The check before a sweep's first job: conf/ frozen as it is, so that every job runs the composition
checked here; every combination it can launch (for Optuna, every bound and choice of the search
space) composed, validated against the schema and the prepared data; the sweep's numerics taken
before any job starts."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from .. import composition, config, numerics
from ..errors import ConfigError
from ..training import loop
from .job_data import fetch_processed, processed_dir
from .optuna_sweeper import sweep_overrides


def validated(cfg: DictConfig) -> config.Config:
    """The job's parameters checked against the schema (the `hydra` node is Hydra's, not ours)."""
    return config.validate({key: OmegaConf.to_container(cfg[key], resolve=True) for key in cfg if key != "hydra"})


def _combinations(task_overrides: list[str], search_space: dict[str, str]) -> list[list[str]]:
    """The override lists a sweep can launch, for checking before the first job: every combination
    of a grid (lists, range(), choice()), and every bound of an interval() (Optuna samples between)."""
    candidates = []
    for override in sweep_overrides(task_overrides, search_space):  # what the Optuna sweeper sees
        prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
        if not override.is_sweep_override():
            values = [override.get_value_element_as_str()]
        elif override.is_interval_sweep():
            values = [str(override.value().start), str(override.value().end)]
        else:
            values = list(override.sweep_string_iterator())
        candidates.append([f"{prefix}{override.key_or_group}={value}" for value in values])
    return [list(combination) for combination in itertools.product(*candidates)]


def _with_values(base: DictConfig, first: list[str], overrides: list[str]) -> DictConfig | None:
    """The config composed from `overrides`, made from `base` (composed from `first`) by setting the
    values that differ the way Hydra sets a plain `key=value`: composing again reads every config
    file (~50 ms, ~1.3 s of a 27-job grid's start). None when a differing override is anything else
    (a config group, +key, ++key, ~key, a key that is missing or null in `base`): that needs Hydra."""
    changed = [override for override, was in zip(overrides, first) if override != was]
    cfg = copy.deepcopy(base)
    for override in OverridesParser.create().parse_overrides(changed):
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package is not None:
            return None
        current = OmegaConf.select(cfg, override.key_or_group, default=None, throw_on_missing=False)
        if current is None or isinstance(current, (DictConfig, ListConfig)):
            return None
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def check_launcher(hydra_cfg: DictConfig) -> None:
    """The launcher's plugin must be installed: Ray's comes with the cluster extra, which one
    person's `make run` does not install."""
    target = hydra_cfg.launcher._target_
    try:
        found = importlib.util.find_spec(target.rsplit(".", 1)[0]) is not None
    except ImportError:
        found = False
    if not found:
        raise ConfigError(
            f"the launcher {target} is not installed; Ray's comes with the cluster extra: "
            "pip install -e '.[cluster]' (or make setup-dev)"
        )


def check_sweep(root: Path, hydra_cfg: DictConfig) -> config.Config:
    """Check every combination the sweep will launch; return the first, validated. The sweep process
    takes the combinations' numerics (numerics.require) before any job starts, and its jobs inherit it."""
    composition.freeze()
    params = hydra_cfg.sweeper.get("params")  # Optuna's search space; None for the basic sweeper
    space = OmegaConf.to_container(params, resolve=False) if params else {}
    check_launcher(hydra_cfg)
    fetch_processed(root)
    first = None
    combinations = _combinations(list(hydra_cfg.overrides.task), space)
    name = hydra_cfg.job.config_name
    base = composition.compose_node(name, combinations[0])
    for overrides in combinations:
        quick = _with_values(base, combinations[0], overrides)
        cfg = validated(quick if quick is not None else composition.compose_node(name, overrides))
        _, stats = processed_dir(root, cfg)
        # A job checks the data it loads itself.
        loop.check_feasible(cfg.model, cfg.train, stats["sizes"]["train"], math.prod(stats["image_shape"]))
        first = first or cfg
        if cfg.train.numerics != first.train.numerics:
            raise ConfigError(
                "train.numerics cannot change within a sweep (its jobs share the sweep's processes); "
                "run one sweep per value"
            )
    numerics.require(first.train.numerics)
    return first
