"""Select a configuration: record Hydra overrides in conf/selection.yaml, then write params.yaml as
its composition, after validating it.

    python pipelines/compose_params.py                          # config.yaml as it is (resets the selection)
    python pipelines/compose_params.py +experiment=best train.seed=1
    python pipelines/compose_params.py --check                  # warn if params.yaml is not conf/'s composition

DVC composes conf/selection.yaml itself on `dvc exp run -S ...` (.dvc/config), and so do sweeps, so
the selection survives both; run this (`make params`) after editing conf/ so that `dvc repro` sees it.
The `conf` stage of dvc.yaml runs --check whenever conf/ changes.
"""

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mnist_np import cli, composition, config
from mnist_np.errors import ConfigError
from mnist_np.files import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides such as model.hidden_size=32 (default: none)")
    parser.add_argument("--conf", default="conf", help="the Hydra config folder (default: conf)")
    parser.add_argument("--out", default="params.yaml", help="where to write the composition (default: params.yaml)")
    parser.add_argument("--check", action="store_true", help="only say whether --out differs from conf/'s composition")
    args = parser.parse_args()
    conf, selection_path = Path(args.conf), Path(args.conf) / f"{composition.SELECTION}.yaml"
    if args.check:
        check(conf, Path(args.out))
        return
    composed = composition.compose(conf, args.overrides, name="config")
    config.validate(composed)
    previous = selection_path.read_text() if selection_path.is_file() else None
    with atomic_path(selection_path) as tmp:
        tmp.write_text(composition.selection_yaml(conf, args.overrides))
    if composition.compose(conf) != composed:  # the recorded selection must mean exactly the overrides
        if previous is not None:
            selection_path.write_text(previous)
        raise ConfigError(
            f"cannot record {' '.join(args.overrides)} in {selection_path}; use plain key=value "
            "overrides and group choices"
        )
    with atomic_path(args.out) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(composed)))


def check(conf: Path, params: Path) -> None:
    """One line on stderr when `params` is not what composing `conf` gives: conf/ was edited and
    `make params` not run (or params.yaml was set by hand or by dvc exp run -S)."""
    differences = composition.differences(OmegaConf.to_container(OmegaConf.load(params)), composition.compose(conf))
    if differences:
        shown = ", ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
        print(
            f"warning: {params} is not the composition of {conf}/ ({shown}); the stages use {params}: "
            "run `make params` to use conf/",
            file=sys.stderr,
        )


if __name__ == "__main__":
    cli.run(main)
