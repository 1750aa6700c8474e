"""conf/ composition, params.yaml agreement, and the schema's rejection of bad values."""

import dataclasses
import shutil

import pytest
import yaml

from helpers import REPO, composed, project_config
from mnist_np import composition, config
from mnist_np.errors import ConfigError


def test_params_yaml_is_the_composition_of_conf():
    composed = composition.compose(REPO / "conf")
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == composed, "params.yaml is stale: run `make params` after editing conf/"


def test_the_schema_holds_no_defaults_of_its_own():
    # conf/ is the one place for values: a key missing from a composition is an error, not a default.
    raw = composed()
    del raw["train"]["lr"]
    with pytest.raises(ConfigError, match=r"train\.lr.*[Mm]issing"):
        config.validate(raw)
    assert all(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for cls in (config.DataConfig, config.ModelConfig, config.TrainConfig, config.TrackingConfig)
        + (config.DatasetSource,)
        for f in dataclasses.fields(cls)
    )


def test_design_defaults():
    cfg = project_config()
    assert cfg.model.hidden_size == 10 and cfg.model.init == "uniform" and cfg.train.dtype == "float32"


def test_overrides_compose_and_flatten_to_dotted_names():
    cfg = project_config("model.hidden_size=32", "train.lr=0.05")
    flat = config.flatten(cfg)
    assert flat["model.hidden_size"] == 32 and flat["train.lr"] == 0.05
    assert flat["data.val_size"] == 5000 and not any(k.startswith(("data.mirrors", "data.files")) for k in flat)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-0.1", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.hidden_size=0", "model.hidden_size"),
        ("train.epochs=0", "train.epochs"),
        ("data.val_size=0", "data.val_size"),
        ("model.init=zeros", "model.init"),
        ("train.dtype=float16", "train.dtype"),
        ("train.lr=fast", "train.lr"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("+train.nesterov=true", "train.nesterov"),
        ("train.momentum=1", "train.momentum"),
        ("train.lr_decay=0", "train.lr_decay"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.early_stopping=-1", "train.early_stopping"),
        ("+extra=1", "extra"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    raw = composed(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.validate(raw)


def test_missing_section_is_rejected():
    raw = composed()
    del raw["data"]["val_size"]
    with pytest.raises(ConfigError, match="data.val_size"):
        config.validate(raw)


def test_the_dataset_definition_is_checked_and_names_its_file(tmp_path):
    assert config.load_source(REPO / config.DATASET).files.train_images.sha256.startswith("440fcabf")
    bad = tmp_path / "mnist.yaml"
    bad.write_text((REPO / config.DATASET).read_text().replace("retries: 3", "retries: 0"))
    with pytest.raises(ConfigError, match=r"mnist\.yaml.*retries=0 is invalid"):
        config.load_source(bad)
    with pytest.raises(ConfigError, match="not found"):
        config.load_source(tmp_path / "none.yaml")


def test_load_params_reports_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_params(tmp_path / "params.yaml")


def test_validated_config_is_typed():
    cfg = project_config("train.lr=1")
    assert isinstance(cfg.train.lr, float) and dataclasses.is_dataclass(cfg.data)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["+experiment=best", "train.seed=1"],
        ["data=mnist", "model.init=he"],
        ["train.lr=0.05", "model.hidden_size=32"],
    ],
)
def test_a_recorded_selection_composes_exactly_like_its_overrides(tmp_path, overrides):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "selection.yaml").write_text(composition.selection_yaml(conf, overrides))
    assert composition.compose(conf) == composition.compose(conf, overrides, name="config")


def test_a_selection_refuses_sweeps_and_bad_overrides_in_one_line():
    with pytest.raises(ConfigError, match="single values"):
        composition.selection_yaml(REPO / "conf", ["train.lr=0.1,0.2"])
    with pytest.raises(ConfigError, match="Could not override 'nonexistent'"):
        composition.compose(REPO / "conf", ["nonexistent=1"])


def test_hydras_composition_errors_become_one_line_naming_the_override_and_the_options():
    with pytest.raises(ConfigError) as missing:
        composition.compose(REPO / "conf", ["model=nope"])
    assert "Could not find 'model/nope' (model=nope); there are: mlp; every key and config:" in str(missing.value)
    with pytest.raises(ConfigError) as unreadable:
        composition.compose(REPO / "conf", ["train.lr=0.1,,"])
    assert str(unreadable.value).startswith("cannot read the override 'train.lr=0.1,,': mismatched input")
    assert "\n" not in str(missing.value) + str(unreadable.value)


@pytest.mark.parametrize(
    "task",
    [
        ["train.lr=0.01,0.1,0.5", "train.batch_size=32,64", "model.hidden_size=10,256", "train.epochs=1"],
        ["+experiment=best", "train.lr=0.01,0.1", "train.seed=range(0,3)"],
        ["model=mlp", "train.lr=0.05,0.1", "data.val_size=100,200"],
    ],
)
def test_a_sweeps_check_sets_values_exactly_as_hydra_composes_them(task):
    """The sweep's check composes the first combination and sets the others' values itself: each
    config must be the one Hydra composes for that combination."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mnist_np.experiments.sweep_check import _combinations, _with_values

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        combinations = _combinations(task, {})
        base = compose(config_name="selection", overrides=combinations[0])
        for overrides in combinations:
            fast = _with_values(base, combinations[0], overrides)
            composed = compose(config_name="selection", overrides=overrides)
            assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(composed, resolve=True)
        # What only Hydra can do (a group, an added or removed key) is left to it.
        for other in (["model=mlp"], ["+train.extra=1"], ["~train.seed"]):
            assert _with_values(base, ["train.lr=0.01"], other) is None


def test_what_a_sweep_hands_its_jobs_arrives_in_each_job_unchanged():
    """The sweep's parent run, store and project reach every job as `hydra.job.env_set` overrides
    (launching.hand_to_jobs), composed as Hydra composes each job: quotes, backslashes and `${` in a
    database URL arrive as they were."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mnist_np.experiments import launching

    env = {"MLFLOW_TRACKING_URI": r"postgresql://u:p'w\x\@h/db${x}", "MNIST_NP_ROOT": "C:\\x\\", "EMPTY": ""}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        sweep = compose(config_name="selection", overrides=["train.lr=0.1"], return_hydra_config=True)
        launching.hand_to_jobs(sweep, env)
        overrides = OmegaConf.to_container(sweep.hydra.overrides.hydra)  # as Hydra's load_sweep_config reads them
        job = compose(config_name="selection", overrides=overrides, return_hydra_config=True)
    assert OmegaConf.to_container(job.hydra.job.env_set, resolve=True) == env
