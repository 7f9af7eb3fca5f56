"""The properties every fuzzed graph must keep, checked by ``check_graph(spec) -> Outcome``.

For one GraphSpec (tools/fuzz_graphs.py), with the same calibration batches for fxq and torch.ao:

1. prepare_fx, calibration, convert_fx and convert_to_reference_fx raise nothing but a documented fxq error
   (``is_documented``), and the converted model runs;
2. its outputs are finite;
3. convert_to_reference_fx and convert_fx with ``keep_roundings`` (which rounds where the reference does) agree
   (SQNR >= ``MIN_SQNR_REFERENCE`` dB), and the default convert_fx, which skips roundings on purpose (fused
   activations, fp32 outputs), is no less accurate against float than the reference (- ``MAX_SQNR_LOSS_VS_REFERENCE``);
4. SQNR vs float >= torch.ao's - ``MAX_SQNR_LOSS_VS_TORCH_AO`` dB, where that comparison is fair
   (tools/fuzz_torch_ao.py: torch.ao converts the graph, and fxq rounds no more values to int8 than it);
5. torch.save/load, deepcopy and a state_dict loaded into a differently calibrated convert give identical outputs;
6. a second prepare + calibrate + convert from scratch gives bit-identical outputs;
7. the user's model is unchanged (module types, state_dict bits, training flag, float output);
8. the converted model carries no root buffer its graph never reads (no qparams of dead or lowered-away nodes).

Documented errors are ``fxq.TraceError``; ``fxq.PassError`` raised by fxq itself (a PassError whose
``__cause__`` is another exception reports a crash inside a pass, which is a bug); and ``ValueError``,
``TypeError`` and ``NotImplementedError`` raised by a ``raise`` in fxq's own source (config checks, unsupported
input). Anything else, or one of those raised from inside torch, is undocumented.

    >>> from hypothesis import find
    >>> from tools.fuzz_graphs import graph_specs
    >>> check_graph(find(graph_specs(), lambda spec: len(spec.steps) == 1)).kind
    'passed'
"""
from __future__ import annotations

import copy
import io
import math
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch

import fxq
import fxq.passes
import fxq.patterns
from tools.fuzz_graphs import FuzzNet, GraphSpec, spec_inputs
from tools.fuzz_torch_ao import compare_with_torch_ao, qconfig_mapping

MIN_SQNR_REFERENCE = 35.0
# quantized::add/mul with a scalar round the scalar to a multiple of the input's scale (the reference adds the exact
# scalar and rounds to the output observer's qparams), a constant error worth a few dB on a small graph
MIN_SQNR_REFERENCE_WITH_SCALARS = 30.0
MAX_SQNR_LOSS_VS_TORCH_AO = 1.0
MAX_SQNR_LOSS_VS_REFERENCE = 0.5
KEEP_ROUNDINGS = {"keep_roundings": True}  # the plain lowering rounds where the reference model does
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH = 8
_FXQ_SOURCES = tuple(os.path.dirname(module.__file__) + os.sep for module in (fxq, fxq.passes, fxq.patterns))

KINDS = ("passed", "documented_error", "undocumented_exception", "non_finite", "property_failure")


@dataclass
class Outcome:
    """``kind`` is one of KINDS; ``failures`` says which properties broke (or which error, at which stage)."""
    kind: str
    failures: List[str] = field(default_factory=list)
    error_type: str = ""
    torch_ao: str = ""  # which tools.fuzz_torch_ao.COMPARISONS case applied to property 4


def is_documented(error: BaseException) -> bool:
    """Is ``error`` one fxq documents (see the module docstring), rather than a crash?"""
    if isinstance(error, fxq.TraceError):
        return True
    if isinstance(error, fxq.PassError):
        return error.__cause__ is None
    if isinstance(error, (ValueError, TypeError, NotImplementedError)):
        frames = traceback.extract_tb(error.__traceback__)
        return bool(frames) and frames[-1].filename.startswith(_FXQ_SOURCES)
    return False


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """SQNR of ``other`` against ``reference`` in dB; inf when they are equal, -inf when the reference is 0."""
    noise = (reference.double() - other.double()).pow(2).mean()
    signal = reference.double().pow(2).mean()
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else float(10 * torch.log10(signal / noise))


def flat_output(model: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    """The model's outputs (a tensor or a tuple of them) as one flat float tensor."""
    with torch.no_grad():
        outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return torch.cat([output.dequantize().flatten() if output.is_quantized else output.flatten()
                      for output in outputs])


@dataclass
class _Data:
    example: tuple
    calibration: List[tuple]
    evaluation: tuple


def _data(spec: GraphSpec) -> _Data:
    """Evaluation runs on all the calibration data: SQNR then measures rounding, not how well calibration covered
    the range of unseen data (fxq and torch.ao both clip what it never saw); and a few dozen output values
    rather than a handful keep one value rounding the other way from moving SQNR by dBs."""
    calibration = [spec_inputs(spec, index, CALIBRATION_BATCH) for index in range(1, CALIBRATION_BATCHES + 1)]
    evaluation = tuple(torch.cat(tensors) for tensors in zip(*calibration))
    return _Data(spec_inputs(spec, 0), calibration, evaluation)


def quantize_with_fxq(model: FuzzNet, data: _Data):
    """prepare_fx -> calibrate -> (prepared, convert_fx's model)."""
    prepared = fxq.prepare_fx(model, qconfig_mapping(fxq, model.spec), data.example)
    with torch.no_grad():
        for batch in data.calibration:
            prepared(*batch)
    return prepared, fxq.convert_fx(prepared)


def check_graph(spec: GraphSpec) -> Outcome:
    """Check every property on ``spec``; the Outcome lists all that failed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _check(spec)


def _check(spec: GraphSpec) -> Outcome:
    model, data = FuzzNet(spec), _data(spec)
    before = _Snapshot.of(model, data)
    stage = "prepare/calibrate/convert"
    try:
        prepared, converted = quantize_with_fxq(model, data)
        stage = "run the converted model"
        output = flat_output(converted, data.evaluation)
        stage = "convert_to_reference_fx"
        reference = flat_output(fxq.convert_to_reference_fx(prepared), data.evaluation)
        stage = "convert_fx keeping the reference's roundings"
        kept = flat_output(fxq.convert_fx(prepared, convert_custom_config=KEEP_ROUNDINGS), data.evaluation)
    except Exception as error:  # property 1: which errors are allowed is the point of the check
        documented = is_documented(error) and not stage.startswith("run")
        return Outcome("documented_error" if documented else "undocumented_exception",
                       [f"{stage}: {type(error).__name__}: {error}"], type(error).__name__)
    if not torch.isfinite(output).all():
        return Outcome("non_finite", ["the converted model's output is not finite"])
    comparison, theirs = compare_with_torch_ao(spec, model, data, converted, flat_output)
    has_scalars = any(step.op in ("add_scalar", "mul_scalar") for step in spec.steps)
    failures = _numeric_failures(before.output, (output, kept), reference, theirs, has_scalars)
    failures += _lifecycle_failures(model, data, prepared, converted, output)
    failures += before.differences(_Snapshot.of(model, data))
    unread = set(converted._buffers) - {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    if unread:
        failures.append(f"the converted model carries buffers its graph never reads: {sorted(unread)}")
    return Outcome("property_failure" if failures else "passed", failures, torch_ao=comparison)


def _numeric_failures(float_output: torch.Tensor, outputs: tuple, reference: torch.Tensor,
                      torch_ao_output: Optional[torch.Tensor], has_scalars: bool) -> List[str]:
    """Properties 3 and 4: convert_fx vs convert_to_reference_fx, and SQNR vs float against torch.ao's.
    ``outputs`` is (default convert_fx, convert_fx with keep_roundings)."""
    failures = []
    output, kept = outputs
    agreement = sqnr(reference, kept)
    floor = MIN_SQNR_REFERENCE_WITH_SCALARS if has_scalars else MIN_SQNR_REFERENCE
    if agreement < floor:
        failures.append(f"convert_fx (keep_roundings) vs convert_to_reference_fx: {agreement:.1f} dB < {floor} dB")
    ours, the_reference = sqnr(float_output, output), sqnr(float_output, reference)
    if ours < the_reference - MAX_SQNR_LOSS_VS_REFERENCE:
        failures.append(f"SQNR vs float: convert_fx {ours:.1f} dB < convert_to_reference_fx {the_reference:.1f} dB"
                        f" - {MAX_SQNR_LOSS_VS_REFERENCE} dB")
    if torch_ao_output is not None:
        ours, theirs = sqnr(float_output, output), sqnr(float_output, torch_ao_output)
        if ours < theirs - MAX_SQNR_LOSS_VS_TORCH_AO:
            failures.append(f"SQNR vs float: fxq {ours:.1f} dB < torch.ao {theirs:.1f} dB - "
                            f"{MAX_SQNR_LOSS_VS_TORCH_AO} dB")
    return failures


def _lifecycle_failures(model: torch.nn.Module, data: _Data, prepared, converted, output) -> List[str]:
    """Properties 5 and 6: round trips and a second run from scratch give the same bits."""
    copies = {"torch.save/load": lambda: _saved_and_loaded(converted), "deepcopy": lambda: copy.deepcopy(converted),
              "a second prepare/calibrate/convert": lambda: quantize_with_fxq(model, data)[1],
              "state_dict into a recalibrated convert": lambda: _with_state_dict_of(converted, prepared, data)}
    failures = []
    for name, make_copy in copies.items():
        try:
            same = torch.equal(flat_output(make_copy(), data.evaluation), output)
        except Exception as error:  # a round trip that raises breaks the property as much as one that differs
            failures.append(f"{name} raised {type(error).__name__}: {error}")
            continue
        if not same:
            failures.append(f"{name} changed the output")
    return failures


def _saved_and_loaded(converted: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _with_state_dict_of(converted: torch.nn.Module, prepared, data: _Data) -> torch.nn.Module:
    """A convert calibrated on 3x the data, with ``converted``'s state_dict loaded: every qparam must be in it."""
    with torch.no_grad():
        for batch in data.calibration:
            prepared(*(3 * tensor for tensor in batch))
    recalibrated = fxq.convert_fx(prepared)
    recalibrated.load_state_dict(converted.state_dict())
    return recalibrated


@dataclass
class _Snapshot:
    """What must not change in the user's model: module types, state_dict bits, training flag, float output."""
    types: list
    training: bool
    state: dict
    output: torch.Tensor

    @classmethod
    def of(cls, model: torch.nn.Module, data: _Data) -> "_Snapshot":
        return cls([(name, type(module)) for name, module in model.named_modules()], model.training,
                   {key: value.clone() for key, value in model.state_dict().items()},
                   flat_output(model, data.evaluation))

    def differences(self, after: "_Snapshot") -> List[str]:
        same_state = list(self.state) == list(after.state) and all(
            torch.equal(self.state[key], after.state[key]) for key in self.state)
        checks = {"module types": self.types == after.types, "training flag": self.training == after.training,
                  "state_dict": same_state, "float output": torch.equal(self.output, after.output)}
        return [f"the user's model changed: {what}" for what, same in checks.items() if not same]
