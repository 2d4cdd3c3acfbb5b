"""Validate a dataset against its manifest and print its summary.

    python -m src.dataset.inspect_dataset data/pong [--verify quick] [--rehash]

--verify full (the default, as in training) takes the checksums of files unchanged since the last full verification
from data/pong/.verified.json and records what it hashed there; --rehash hashes every file regardless (for decay of
the disk itself, which changes no timestamp).
"""

from __future__ import annotations

import time

import numpy as np

from src.dataset.shards import ShardedDataset
from src.utils.errors import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.inspect_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="a directory written by src.dataset.generate_dataset")
    p.add_argument(
        "--verify",
        choices=("full", "quick"),
        default="full",
        help="full: also compare xxh3-128 checksums, of the files changed since the last full verification (default)",
    )
    p.add_argument("--rehash", action="store_true", help="with --verify full: hash every file, changed or not")
    args = p.parse_args(argv)
    if args.rehash and args.verify != "full":
        p.error("--rehash applies to --verify full (it hashes every file); drop --verify quick")
    start = time.perf_counter()
    with ShardedDataset(
        args.data_dir, verify=args.verify, rehash=args.rehash
    ) as dataset:  # sizes, headers, checksums, columns
        seconds = time.perf_counter() - start
        actions = np.bincount(dataset.column("action"), minlength=dataset.num_actions) / len(dataset)
        meanings = dataset.manifest.action_meanings
        print(dataset.manifest.describe(args.data_dir))
        print(f"actions   {'  '.join(f'{m} {f:.0%}' for m, f in zip(meanings, actions))}")
        print(
            f"verified  {args.verify}: {len(dataset.shards)} shards match the manifest ({seconds:.1f} s; "
            f"{dataset.describe_verification()})"
        )
        dataset.save_verification()
    return 0


if __name__ == "__main__":
    run_cli(main)
