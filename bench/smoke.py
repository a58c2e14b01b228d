"""``--smoke``, which every bench takes: tiny sizes and one round, so that the bench runs in
seconds and a test can run it (``tests/bench/test_bench_smoke.py``), which keeps it from
rotting. A smoke run's figures mean nothing; only that it ran and printed them."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["parse_args"]


def parse_args(parser: argparse.ArgumentParser, **smoke: Any) -> argparse.Namespace:
    """``parser.parse_args()`` with ``--smoke`` added: given it, the values in ``smoke`` (by ``dest``)
    replace the defaults; options given on the command line still win."""
    unknown = set(smoke) - {action.dest for action in parser._actions}
    if unknown:
        raise ValueError(f"--smoke sets options the bench does not have: {sorted(unknown)}")
    sizes = " ".join(f"{name}={value}" for name, value in smoke.items())
    parser.add_argument(
        "--smoke", action="store_true", help=f"tiny run that only checks the bench works ({sizes})"
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args
