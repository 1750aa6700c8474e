"""DVC stage `normalize`: raw IDX files -> scaled float32 train/val/test splits in data/processed/,
and the page reader's judge of touching digits, learnt from the training split (judge.npz)."""

import logging

from mnist_np import cli, config, numerics

log = logging.getLogger("normalize")


def main() -> None:
    args = cli.stage_args(__doc__, dataset=config.DATASET, raw="data/raw", out="data/processed")
    cfg = config.load_params(args.params)
    numerics.require(cfg.train.numerics)  # the judge is trained here: its bits are the same on every machine
    from mnist_np.data import splits
    from mnist_np.serving import touching

    prepared, stats = splits.prepare(args.raw, cfg.data, config.load_source(args.dataset))
    splits.save(args.out, prepared, stats)
    log.info("wrote %s (sizes %s, mean %.4f, std %.4f)", args.out, stats["sizes"], stats["mean"], stats["std"])
    log.info(
        "learning the judge of touching digits from %d columns of them (data.judge_columns)", cfg.data.judge_columns
    )
    train = prepared["train"]
    judge = touching.train_judge(splits.pixels(train, stats), train.y, cfg.data.judge_columns, cfg.data.split_seed)
    log.info("wrote %s", touching.save_judge(args.out, judge))


if __name__ == "__main__":
    cli.run(main)
