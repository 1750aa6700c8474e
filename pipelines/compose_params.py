"""Write params.yaml as the Hydra composition of conf/ (plus any overrides), after validating it.

DVC does the same composition itself on `dvc exp run` (hydra.enabled in .dvc/config); run this
(`make params`) after editing conf/ so that `dvc repro` sees the change.

    python pipelines/compose_params.py [train.lr=0.05 ...]
"""

import argparse

from omegaconf import OmegaConf

from mnist_np import cli, config
from mnist_np.files import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides such as model.hidden_size=32")
    parser.add_argument("--conf", default="conf", help="the Hydra config folder (default: conf)")
    parser.add_argument("--out", default="params.yaml", help="where to write the composition (default: params.yaml)")
    args = parser.parse_args()
    composed = config.compose(args.conf, args.overrides)
    config.validate(composed)
    with atomic_path(args.out) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(composed)))


if __name__ == "__main__":
    cli.run(main)
