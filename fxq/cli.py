"""The ``fxq`` command.

Examples::

    fxq demo        # quantize a small built-in conv net and print int8 vs float SQNR and latency
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxq", description="int8 quantization of PyTorch models via torch.fx",
                                     epilog="example: fxq demo", formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="quantize a small built-in conv net and report SQNR and latency")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from fxq.demo import run_demo
        return run_demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
