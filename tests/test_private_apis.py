"""The five private APIs the project leans on, each for a reason named beside its use: an upgrade that
moves or changes one fails here, by name, instead of deep inside a sweep or the cluster test."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest


def test_hydras_basic_sweeper_is_still_where_the_grid_sweeper_extends_it():
    # Hydra exposes its basic sweeper only under hydra._internal; GridSweeper (src/hydra_plugins/)
    # subclasses it to skip a second composition of every job.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hydra_plugins.mnist_np_plugins import GridSweeper

    assert GridSweeper.__bases__ == (BasicSweeper,)
    assert list(inspect.signature(BasicSweeper.validate_batch_is_legal).parameters) == ["self", "batch"]


def test_hydras_caching_config_repository_is_still_what_freezes_a_sweeps_conf():
    # composition.freeze wraps the config loader's repository in Hydra's CachingConfigRepository
    # (hydra._internal), filled once; each composition copies the repository it reads through.
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_repository import CachingConfigRepository

    assert list(inspect.signature(CachingConfigRepository).parameters) == ["delegate"]
    source = inspect.getsource(ConfigLoaderImpl)
    assert "CachingConfigRepository(self.repository)" in source and "self.repository = " in source


def test_mlflows_table_creation_is_still_what_a_new_stores_template_runs(tmp_path):
    # tracking/store.py builds the template every new SQLite store is copied from with
    # mlflow.store.db.utils._initialize_tables (MLflow's own first step for an empty database).
    from mlflow.store.db.utils import _initialize_tables
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    assert list(inspect.signature(_initialize_tables).parameters) == ["engine"]
    assert "_initialize_tables(self.engine)" in inspect.getsource(SqlAlchemyStore.__init__)


def test_optuna_trials_still_carry_the_id_a_pruning_job_needs():
    # The Optuna sweeper tells each job its trial's storage id (Trial._trial_id; Optuna names trials
    # publicly only by number), and the job builds optuna.trial.Trial(study, trial_id) from it.
    import optuna

    study = optuna.create_study()
    trial = study.ask()
    assert isinstance(trial._trial_id, int) and optuna.trial.Trial(study, trial._trial_id).number == trial.number


def test_rays_localhost_replacement_is_still_what_ray_node_turns_off():
    # cluster/ray_node.py replaces ray._private.services.resolve_ip_for_localhost (Ray has no public
    # switch that keeps a node at 127.0.0.1 and admits a second node).
    # Read from its source, not imported: importing Ray takes seconds of the quick suite.
    spec = importlib.util.find_spec("ray._private.services")
    if spec is None:
        pytest.skip("Ray is not installed (the cluster extra)")
    functions = {f.name: f for f in ast.parse(Path(spec.origin).read_text()).body if isinstance(f, ast.FunctionDef)}
    assert [a.arg for a in functions["resolve_ip_for_localhost"].args.args] == ["host"]
