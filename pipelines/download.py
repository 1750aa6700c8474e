"""DVC stage `download`: fetch the four MNIST files, checksum-verified, into data/raw/.

Set MNIST_MIRROR to a directory or base URL to try it before the configured mirrors.
"""

import argparse

from mnist_np import cli, config, download


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw", help="directory for the raw .gz files")
    args = parser.parse_args()
    cfg = config.load_params(args.params)
    download.download_all(cfg.data, args.out)


if __name__ == "__main__":
    cli.run(main)
