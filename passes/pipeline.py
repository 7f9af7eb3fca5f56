"""The pass manager: the order of the passes, timing, checking and dumping after each one.

Set ``debug_dump_dir`` (or the environment variable ``FXQ_DUMP_DIR``) to get ``NN-<pass>.txt`` with the graph
after every pass (fxq.debug.dump's table, then the code), numbered in pipeline order, and ``timing.txt`` with the
time and statistics of each pass. The graph is linted once after the last pass; ``FXQ_CHECK_PASSES=1`` (or a dump
directory) lints after every pass, so a broken graph names the pass that broke it.

Convert runs carry provenance (fxq.debug.provenance): each op's name and qconfig ride in node meta through the
passes and are kept on the converted model, for fxq.compare and the dumps' qconfig column.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from torch import fx

from fxq.debug.dump import format_table
from fxq.debug.graph_records import node_records
from fxq.graph.lazy_code import make_eager
from fxq.debug import provenance
from fxq.passes import (assign_qconfig, choose_default_mapping, cleanup, fuse, insert_observers, lower, record_values, to_reference)
from fxq.passes import (convert_standalone, observe_custom_modules, observe_io, prepare_standalone,
                        quantize_custom_modules, quantized_io)
from fxq.passes import cost_model, equalize, insert_equalization_observers, insert_smoothing_observers, smooth
from fxq.passes import functionalize_inplace, reshape_views, tag_declared_quantizers, warn_nothing_quantized
from fxq.passes import convert_qat_modules, float_outputs, swap_qat_modules
from fxq.passes import layer_modules, per_token_fallback, plain_fuse, plain_values
from fxq.passes.context import PassContext

Pass = Callable[[fx.GraphModule, PassContext], fx.GraphModule]

PREPARE = [
    functionalize_inplace.run,  # first: later passes may then assume a node's value never changes after it runs
    record_values.run,     # later passes read the shapes and dtypes it records
    fuse.run,              # before qconfigs: a fused module gets one qconfig, looked up by its fused type too
    choose_default_mapping.run,  # after fuse (GPT-2's addmm is a linear by then), before assign_qconfig reads it
    layer_modules.run,     # export + equalization / SmoothQuant only: their aten linears and norms as modules to rescale
    assign_qconfig.run,
    cost_model.run,        # opt-in: layers slower in int8 than in float lose their qconfig before observers go in
    insert_observers.run,
    insert_smoothing_observers.run,  # after insert_observers: records sit behind norms' output observers
    swap_qat_modules.run,  # prepare_qat_fx only; after the observers, whose table matches the float chains
    insert_equalization_observers.run,  # after insert_observers: equalization observers sit behind input observers
    observe_custom_modules.run,  # after insert_observers: reuses the observers already on its inputs
    prepare_standalone.run,
    observe_io.run,        # after the ops' observers: the model's quantized inputs/outputs reuse any already there
    tag_declared_quantizers.run,  # tags a module declares (fxq_qtags) win over the default ones
    warn_nothing_quantized.run,  # last: looks at what all the others inserted
]

CONVERT = [
    convert_qat_modules.run,  # first: freezes fake-quants and hands QAT modules over as reference modules
    smooth.run,            # before to_reference: rescales weights and rebuilds the norms' output observers
    equalize.run,          # before to_reference: rescales weights and the observers to_reference reads
    per_token_fallback.run,  # after smooth / equalize (they rebuild observers), before to_reference reads the modes
    to_reference.run,      # observers -> quantize/dequantize pairs; weighted modules -> reference modules
    lower.run,             # reference patterns -> quantized kernels
    float_outputs.run,     # after lower: FloatOutputQConfig linears whose readers dequantize return fp32 instead
    reshape_views.run,     # after lower: int8 kernels return channels-last tensors, which x.view(n, -1) rejects
    quantize_custom_modules.run,  # after lower: leaves take the quantized tensors lowering left around them
    convert_standalone.run,
    quantized_io.run,
    cleanup.run,
    plain_values.run,      # plain lowering only: fxq's uint8 quantize / dequantize ops, no quantized tensor
    plain_fuse.run,        # plain lowering only: activations, residual adds and float outputs into the kernels
]
REFERENCE_CONVERT = CONVERT[:CONVERT.index(to_reference.run) + 1]  # convert_to_reference_fx stops here


class PassError(RuntimeError):
    """A pass failed or left a broken graph; says which pass and which ran before it."""


def run_passes(gm: fx.GraphModule, passes: Sequence[Pass], ctx: PassContext,
               dump_dir: Optional[str] = None, stage: str = "") -> fx.GraphModule:
    """Run ``passes`` in order, checking the graph after each; dump and time them when asked."""
    dump_dir = dump_dir or os.environ.get("FXQ_DUMP_DIR")
    directory = _prepare_dump_dir(dump_dir, stage)
    timings, done = [], []
    check_each_pass = directory is not None or os.environ.get("FXQ_CHECK_PASSES") == "1"
    converting = ctx.convert_config is not None
    if converting:
        provenance.stamp(gm, ctx.state.qconfigs)
    for index, run in enumerate(passes, 1):
        name = run.__module__.rsplit(".", 1)[-1]
        ctx.current_pass = name
        start = time.perf_counter()
        try:
            gm = run(gm, ctx)
            if check_each_pass:
                gm.graph.lint()
        except (PassError, ValueError, TypeError, NotImplementedError):
            raise  # errors about the user's model or config already say what to fix
        except Exception as error:
            if directory is not None:
                (directory / f"{index:02d}-{name}-FAILED.txt").write_text(str(gm.graph))
            raise PassError(f"pass '{name}' failed (after {done or 'no other pass'}): "
                            f"{type(error).__name__}: {error}") from error
        timings.append((name, time.perf_counter() - start))
        done.append(name)
        if directory is not None:
            gm.recompile()  # the Python code is only regenerated when someone reads it
            table = format_table(node_records(gm, qconfigs=ctx.state.qconfigs if ctx.state else None))
            header = f"# traced by: {ctx.tracer}\n" if ctx.tracer else ""
            header += f"# qconfig mapping: {ctx.mapping_note}\n" if ctx.mapping_note else ""
            (directory / f"{index:02d}-{name}.txt").write_text(header + table + "\n" + gm.code)
    if not check_each_pass:
        _check_graph(gm, stage)
    gm = make_eager(gm)  # the code, generated once the graph is final
    if converting:
        provenance.keep(gm)
    if directory is not None:
        _write_timings(directory, timings, ctx)
    return gm


def _check_graph(gm: fx.GraphModule, stage: str) -> None:
    """One lint after all passes: linting after each of them was a tenth of prepare_fx on large graphs."""
    try:
        gm.graph.lint()
    except Exception as error:
        raise PassError(f"the graph after the {stage or 'fxq'} passes is broken: {type(error).__name__}: {error}. "
                        "Set FXQ_CHECK_PASSES=1 (or pass debug_dump_dir) to check after every pass and name the "
                        "pass that broke it") from error


def _prepare_dump_dir(dump_dir: Optional[str], stage: str) -> Optional[Path]:
    if not dump_dir:
        return None
    directory = Path(dump_dir) / stage if stage else Path(dump_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_timings(directory: Path, timings: list, ctx: PassContext) -> None:
    lines = [f"{'pass':<20} {'ms':>10}  what it did"]
    for name, seconds in timings:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(ctx.stats.get(name, {}).items()))
        lines.append(f"{name:<20} {seconds * 1e3:>10.2f}  {counts}")
    (directory / "timing.txt").write_text("\n".join(lines) + "\n")
    if ctx.warnings:
        (directory / "warnings.txt").write_text("\n".join(ctx.warnings) + "\n")
