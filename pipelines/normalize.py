"""DVC stage `normalize`: raw IDX files -> scaled float32 train/val/test splits in data/processed/."""

import logging

from mnist_np import cli, config
from mnist_np.data import splits

log = logging.getLogger("normalize")


def main() -> None:
    args = cli.stage_args(__doc__, dataset=config.DATASET, raw="data/raw", out="data/processed")
    cfg = config.load_params(args.params)
    prepared, stats = splits.prepare(args.raw, cfg.data, config.load_source(args.dataset))
    splits.save(args.out, prepared, stats)
    log.info("wrote %s (sizes %s, mean %.4f, std %.4f)", args.out, stats["sizes"], stats["mean"], stats["std"])


if __name__ == "__main__":
    cli.run(main)
