"""DVC stage `download`: fetch the four MNIST files, checksum-verified, into data/raw/.

Set MNIST_MIRROR to a directory or base URL to try it before the configured mirrors.
"""

from mnist_np import cli, config
from mnist_np.data import download


def main() -> None:
    args = cli.stage_args(__doc__, out="data/raw")
    cfg = config.load_params(args.params)
    download.download_all(cfg.data, args.out)


if __name__ == "__main__":
    cli.run(main)
