"""``python -m infinitetalk.tiny --out DIR``: write tiny random checkpoints in every real layout."""

from __future__ import annotations

import argparse
import logging
import time

from . import ALL_PARTS, summarize, write_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infinitetalk.tiny", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (gets weights/ and models/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every tensor (default 0)")
    parser.add_argument(
        "--only", action="append", choices=ALL_PARTS, help="write only this part (repeatable; default: all)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    root = write_all(args.out, args.seed, args.only or ALL_PARTS)
    print(summarize(root))
    print(f"written in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
