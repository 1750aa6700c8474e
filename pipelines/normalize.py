"""DVC stage `normalize`: raw IDX files -> scaled float32 train/val/test splits in data/processed/."""

import logging

from mnist_np import cli, config, data

log = logging.getLogger("normalize")


def main() -> None:
    args = cli.stage_args(__doc__, raw="data/raw", out="data/processed")
    cfg = config.load_params(args.params)
    splits, stats = data.prepare(args.raw, cfg.data)
    data.save(args.out, splits, stats)
    log.info("wrote %s (sizes %s, mean %.4f, std %.4f)", args.out, stats["sizes"], stats["mean"], stats["std"])


if __name__ == "__main__":
    cli.run(main)
