"""DVC stage `normalize`: raw IDX files -> scaled float32 train/val/test splits in data/processed/."""

import argparse
import logging

from mnist_np import cli, config, data

log = logging.getLogger("normalize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--out", default="data/processed")
    args = parser.parse_args()
    cfg = config.load_params(args.params)
    splits, stats = data.prepare(args.raw, cfg.data)
    data.save(args.out, splits, stats)
    log.info("wrote %s (sizes %s, mean %.4f, std %.4f)", args.out, stats["sizes"], stats["mean"], stats["std"])


if __name__ == "__main__":
    cli.run(main)
