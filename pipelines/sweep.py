"""Hydra entry point for sweeps: each job trains and evaluates on data/processed/ as an MLflow child run.

    python pipelines/sweep.py -m train.lr=0.01,0.1,0.5 train.batch_size=32,128 model.hidden_size=10,64,256
    python pipelines/sweep.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 train.lr=0.05,0.1
    python pipelines/sweep.py -m hydra/sweeper=mnist_optuna

Needs the prepared data: run `dvc repro normalize` first. Outputs go under multirun/.
"""

import os
import traceback

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig

from mnist_np import cli, composition
from mnist_np.errors import ConfigError


@hydra.main(config_path="../conf", config_name="selection", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from mnist_np.experiments import sweep_job  # after Hydra parsed the command line: --help stays quick

    return sweep_job.run_job(cfg)


def run_sweep() -> None:
    # Hydra's own errors (an unknown key or config, a bad override) reach us instead of being printed
    # by Hydra over several lines, to be said in one; other failures keep their full traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except HydraException as exc:
        raise composition.composition_error(exc) from exc
    except ValueError as exc:  # Hydra's check of its own flags (-m with --cfg, --resolve without --cfg)
        if traceback.extract_tb(exc.__traceback__)[-1].name != "_run_hydra":
            raise
        raise ConfigError(f"{exc}; see python pipelines/sweep.py --help") from exc
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the sweep's parent ends KILLED, not FAILED
        from mnist_np.experiments import sweep_parent

        sweep_parent.end_open_sweeps("KILLED")
        raise


if __name__ == "__main__":
    cli.run(run_sweep, stopped="finished jobs and epochs are in MLflow, the sweep and its open jobs are marked KILLED")
