"""DVC stage `download`: fetch the dataset's raw files, checksum-verified, into data/raw/.

The dataset's mirrors and checksums are in conf/dataset/<data.dataset>.yaml (dvc.yaml passes it).
Set MNIST_MIRROR to a directory or base URL to try it before those mirrors.
"""

from mnist_np import cli, config
from mnist_np.data import download


def main() -> None:
    args = cli.stage_args(__doc__, params=False, dataset=config.DATASET, out="data/raw")
    download.download_all(config.load_source(args.dataset), args.out)


if __name__ == "__main__":
    cli.run(main)
