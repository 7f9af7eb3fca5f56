"""The ``fxq`` command.

Examples::

    fxq demo                                               # a CNN trained on digits: float vs int8
    fxq quantize mypkg.models:build --input-shape 1,3,224,224 --calib calib.pt --out model_int8.pt
    torchrun --nproc-per-node 2 -m fxq.cli quantize mypkg.models:build --input-shape 1,3,224,224 --calib calib.pt --out model_int8.pt --distributed
    fxq dump mypkg.models:build --input-shape 1,3,32,32 --stage prepared --format table
    fxq dump model_int8.pt --format json
    fxq compare mypkg.models:build model_int8.pt --input-shape 8,3,224,224

Exit codes: 0 ok, 2 usage error, 1 failure (one line on stderr; ``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fxq.cli.commands import CommandError, parse_shape, run_command

EXAMPLES = __doc__.split("Examples::", 1)[1].split("Exit codes")[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxq", description="int8 quantization of PyTorch models via torch.fx",
                                     epilog="examples:" + EXAMPLES + "exit codes: 0 ok, 2 usage error, 1 failure",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on failure")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="quantize a CNN trained on scikit-learn digits; float vs int8")
    demo.add_argument("--no-progress", action="store_true", help="no calibration progress bar")

    quantize = commands.add_parser("quantize", help="prepare, calibrate and convert a model; save it")
    _add_model(quantize)
    quantize.add_argument("--calib", metavar="FILE.pt", help="calibration data: a tensor (N, ...) or a list of "
                                                             "batches saved with torch.save")
    quantize.add_argument("--random-calib", action="store_true", help="calibrate on random data (a smoke test)")
    quantize.add_argument("--backend", default="x86", choices=["x86", "fbgemm", "qnnpack", "onednn"])
    quantize.add_argument("--config", metavar="QCONFIG.json",
                          help='JSON: {"backend": "x86", "float_modules": ["head", ...]} (modules left float)')
    quantize.add_argument("--out", required=True, metavar="MODEL.pt", help="where to torch.save the int8 model")
    quantize.add_argument("--distributed", action="store_true",
                          help="under torchrun: each process calibrates its share of the batches, the observers merge "
                               "(gloo), rank 0 saves")
    quantize.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                          help="with --distributed: how long a rank waits for the others before failing")
    quantize.add_argument("--one-pass", action="store_true",
                          help="with --distributed: merge histograms after one pass over the data, approximately "
                               "(on ResNet-50 scales within 1%% of the exact two-pass merge), in half the time")

    dump = commands.add_parser("dump", help="print the graph of a model at a stage, or of a saved model")
    dump.add_argument("target", metavar="MODULE:FACTORY|FILE.pt")
    dump.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="needed for MODULE:FACTORY")
    dump.add_argument("--stage", default="prepared", choices=["traced", "prepared", "converted"])
    dump.add_argument("--format", default="table", choices=["table", "json", "dot", "graphml"])
    dump.add_argument("--out", metavar="PATH", help="write to PATH instead of stdout")

    compare = commands.add_parser("compare", help="per-layer SQNR of a saved int8 model against its float model")
    compare.add_argument("factory", metavar="MODULE:FACTORY")
    compare.add_argument("quantized", metavar="FILE.pt")
    compare.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="random inputs of this shape")
    compare.add_argument("--data", metavar="FILE.pt", help="inputs: a tensor or a list of batches (torch.save)")
    compare.add_argument("--limit", type=int, default=None, help="show only the N worst layers")
    for subparser in commands.choices.values():  # --debug also accepted after the command
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("factory", metavar="MODULE:FACTORY", help="a function returning the float nn.Module")
    parser.add_argument("--input-shape", type=parse_shape, required=True, metavar="N,C,H,W")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except CommandError as error:
        if args.debug:
            raise
        print(f"fxq {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # anything else is a failure too: one line, the traceback only with --debug
        if args.debug:
            raise
        print(f"fxq {args.command}: error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
              f" (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
