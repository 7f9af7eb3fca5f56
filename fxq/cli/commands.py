"""What each ``fxq`` subcommand does; fxq/cli/main.py holds the argument parser."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from typing import Any

import torch
from torch import nn


class CommandError(Exception):
    """A failure the user can fix; printed as one line. ``exit_code`` 1 (failure) or 2 (usage)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def parse_shape(text: str) -> tuple:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; argparse turns the error into a usage error (exit 2)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: write positive integers separated by commas, "
                                         f"e.g. 1,3,224,224")
    return shape


def run_command(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
    if args.command == "demo":
        from fxq.cli.demo import run_demo
        return run_demo(progress=not args.no_progress)
    return {"quantize": quantize, "dump": dump, "compare": compare}[args.command](args)


def load_factory(spec: str) -> nn.Module:
    """Import ``package.module:function`` (the current directory is importable) and call it for the model."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"{spec!r} is not MODULE:FACTORY; write e.g. mypkg.models:build_model", exit_code=2)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import module {module_name!r} from {spec!r}: {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"module {module_name!r} has no function {attribute!r}; FACTORY must name a function "
                           f"that returns the float nn.Module")
    model = factory()
    if not isinstance(model, nn.Module):
        raise CommandError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def load_file(path: str, what: str) -> Any:
    try:
        return torch.load(path, weights_only=False)  # a saved GraphModule is a pickle of code and modules
    except FileNotFoundError as error:
        raise CommandError(f"{what} {path!r} does not exist") from error
    except Exception as error:
        raise CommandError(f"cannot read {what} {path!r} with torch.load: {type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}") from error


def batches_from(data: Any, path: str) -> list:
    if isinstance(data, torch.Tensor):
        return list(data.split(32))
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, (torch.Tensor, tuple)) for b in data):
        return list(data)
    raise CommandError(f"{path!r} must hold a tensor (N, ...) or a list of batches, got {type(data).__name__}")


def _mapping(args: argparse.Namespace) -> Any:
    import fxq
    config = {}
    if args.config:
        try:
            with open(args.config) as file:
                config = json.load(file)
        except (OSError, json.JSONDecodeError) as error:
            raise CommandError(f"cannot read --config {args.config!r}: {error}") from error
    mapping = fxq.get_default_qconfig_mapping(config.get("backend", args.backend))
    for name in config.get("float_modules", []):
        mapping.set_module_name(name, None)
    return mapping


def _prepare(args: argparse.Namespace, model: nn.Module) -> Any:
    import fxq
    return fxq.prepare_fx(model, _mapping(args), (torch.randn(*args.input_shape),))


def quantize(args: argparse.Namespace) -> int:
    import fxq
    if not args.calib and not args.random_calib:
        raise CommandError("no calibration data: pass --calib FILE.pt (a tensor or a list of batches), or "
                           "--random-calib for a smoke test on random inputs", exit_code=2)
    if args.one_pass and not args.distributed:
        raise CommandError("--one-pass changes how --distributed merges histograms; add --distributed (under "
                           "torchrun), or drop --one-pass", exit_code=2)
    if args.distributed:
        from fxq.cli.launch import missing_torchrun_variables
        if missing_torchrun_variables():
            raise CommandError(f"--distributed needs the environment torchrun sets ("
                               f"{', '.join(missing_torchrun_variables())} missing): launch with "
                               f"`torchrun --nproc-per-node 2 -m fxq.cli quantize ... --distributed`", exit_code=2)
    model = load_factory(args.factory)
    if args.calib:
        batches = batches_from(load_file(args.calib, "--calib file"), args.calib)
    else:
        print("fxq quantize: warning: calibrating on random data; the int8 model's accuracy means nothing",
              file=sys.stderr)
        generator = torch.Generator().manual_seed(0)  # the same batches on every rank of a distributed run
        batches = [torch.randn(*args.input_shape, generator=generator) for _ in range(8)]
    prepared = _prepare(args, model)
    if not args.distributed:
        return _calibrate_and_save(args, prepared, batches, rank=0)
    from fxq.cli.launch import process_group
    from fxq.debug.ranks import shard
    with process_group(args.timeout) as rank:
        return _calibrate_and_save(args, prepared, shard(batches), rank)


def _calibrate_and_save(args: argparse.Namespace, prepared: Any, batches: list, rank: int) -> int:
    import fxq
    summary = fxq.calibrate(prepared, batches, progress=sys.stderr.isatty() and rank == 0,
                            distributed=args.distributed, exact_histograms=not args.one_pass)
    if rank == 0:  # every rank holds the same observers after the merge: one converts and saves
        torch.save(fxq.convert_fx(prepared), args.out)
        ranks = f" on {summary.ranks} ranks (merging took {summary.merge_seconds:.2f} s)" if args.distributed else ""
        print(f"fxq quantize: {summary}{ranks}; wrote {args.out}")
    return 0


def dump(args: argparse.Namespace) -> int:
    import fxq
    if args.target.endswith((".pt", ".pth")):
        gm, example = load_file(args.target, "model file"), None
        if not isinstance(gm, torch.fx.GraphModule):
            raise CommandError(f"{args.target!r} holds a {type(gm).__name__}, not a GraphModule saved by fxq "
                               f"quantize")
    else:
        if args.input_shape is None:
            raise CommandError("dump MODULE:FACTORY needs --input-shape, e.g. --input-shape 1,3,224,224",
                               exit_code=2)
        gm, example = _stage(args, load_factory(args.target))
    text = fxq.dump(gm, args.format, path=args.out, example_inputs=example)
    if not args.out:
        sys.stdout.write(text)
    return 0


def _stage(args: argparse.Namespace, model: nn.Module) -> tuple:
    import fxq
    from fxq.graph.tracer import trace
    example = (torch.randn(*args.input_shape),)
    if args.stage == "traced":
        return trace(model), None
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    if args.stage == "prepared":
        return prepared, None
    print("fxq dump: note: calibrated on one random batch, for the graph's structure only", file=sys.stderr)
    fxq.calibrate(prepared, [example], progress=False)
    return fxq.convert_fx(prepared), example


def compare(args: argparse.Namespace) -> int:
    import fxq
    if args.data is None and args.input_shape is None:
        raise CommandError("compare needs inputs: --data FILE.pt or --input-shape N,C,H,W (random)", exit_code=2)
    model = load_factory(args.factory)
    quantized = load_file(args.quantized, "quantized model file")
    if not isinstance(quantized, torch.fx.GraphModule):
        raise CommandError(f"{args.quantized!r} holds a {type(quantized).__name__}, not a GraphModule saved by "
                           f"fxq quantize")
    if args.data:
        batches = batches_from(load_file(args.data, "--data file"), args.data)
    else:
        generator = torch.Generator().manual_seed(0)
        batches = [torch.randn(*args.input_shape, generator=generator) for _ in range(4)]
    print(fxq.compare(model, quantized, batches).table(args.limit))
    return 0
