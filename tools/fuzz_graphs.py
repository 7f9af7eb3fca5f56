"""Random well-typed graphs for property-based tests: a hypothesis strategy and the model it describes.

``graph_specs()`` draws a ``GraphSpec``: an input shape and a list of steps, each an op of tools/fuzz_table.py
applied to earlier values (with the shapes it needs), in one of its spellings, sometimes calling a module an
earlier step already called. ``FuzzNet(spec)`` is an ordinary ``nn.Module`` whose forward runs the steps in
order; both fxq's tracer and torch.ao's unroll that loop into a plain graph.

    >>> from hypothesis import find
    >>> spec = find(graph_specs(), lambda spec: len(spec.steps) == 2)
    >>> FuzzNet(spec)(*spec_inputs(spec, 0)).shape == spec.shapes[-1]
    True

Every construct of tools/fuzz_table.py is drawn (issue 14's fixes let the generator stop leaving out module
reuse and views after int8 convs); a view is drawn only on a contiguous value, as in eager PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from hypothesis import strategies as st
from torch import nn

from tools.fuzz_table import RULES

BATCH = 2
MAX_STEPS = 8
INPUT_SHAPES = {4: st.tuples(st.integers(1, 4), st.integers(2, 8), st.integers(2, 8)),
                3: st.tuples(st.integers(1, 6), st.integers(2, 10)),
                2: st.tuples(st.integers(1, 12))}


@dataclass(frozen=True)
class Step:
    """``values.append(op(values[inputs[0]], ...))``; ``owner`` names the attribute holding its module/weights."""
    op: str
    spelling: str
    inputs: Tuple[int, ...]
    params: Tuple[Tuple[str, object], ...] = ()
    owner: Optional[str] = None

    def __repr__(self) -> str:
        params = "".join(f", {key}={value!r}" for key, value in self.params)
        owner = f" self.{self.owner}" if self.owner else ""
        return f"{self.op}[{self.spelling}{owner}]({', '.join(f'v{i}' for i in self.inputs)}{params})"


@dataclass(frozen=True)
class GraphSpec:
    """What FuzzNet builds: ``shapes[i]`` is value i's shape (value 0 is the input, value i+1 is step i's)."""
    shapes: Tuple[Tuple[int, ...], ...]
    steps: Tuple[Step, ...]
    outputs: Tuple[int, ...]
    seed: int = 0
    contiguous: Tuple[bool, ...] = field(default=(), repr=False)
    float_modules: Tuple[str, ...] = ()  # set_module_name(name, None) for these: float islands in an int8 graph

    def __repr__(self) -> str:
        floats = f", float_modules={self.float_modules}" if self.float_modules else ""
        lines = [f"GraphSpec(seed={self.seed}{floats}): v0 = input{self.shapes[0]}"]
        lines += [f"  v{i + 1} = {step!r}  # {self.shapes[i + 1]}" for i, step in enumerate(self.steps)]
        lines.append(f"  return {', '.join(f'v{i}' for i in self.outputs)}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints falsifying examples with this
        printer.text(repr(self))


class FuzzNet(nn.Module):
    """The model a GraphSpec describes, with weights drawn from ``spec.seed``; the global RNG is left alone."""

    def __init__(self, spec: GraphSpec):
        super().__init__()
        self.spec = spec  # plain data: tracing unrolls the loop over its steps
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for step in spec.steps:
                if step.owner and not hasattr(self, step.owner):
                    rule = RULES[step.op]
                    self.add_module(step.owner, rule.make(dict(step.params), spec.shapes[step.inputs[0]],
                                                          step.spelling))
        self.eval()

    def forward(self, x):
        values = [x]
        for step in self.spec.steps:
            owned = getattr(self, step.owner) if step.owner else None
            inputs = [values[index] for index in step.inputs]
            values.append(RULES[step.op].call(owned, dict(step.params), step.spelling, inputs))
        outputs = [values[index] for index in self.spec.outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def spec_inputs(spec: GraphSpec, batch_seed: int, batch: int = BATCH) -> tuple:
    """A batch of inputs for ``spec``, reproducible from ``batch_seed`` (the graph's ops never mix samples)."""
    generator = torch.Generator().manual_seed(spec.seed * 1000 + batch_seed)
    return (torch.randn((batch,) + spec.shapes[0][1:], generator=generator),)


@st.composite
def graph_specs(draw, max_steps: int = MAX_STEPS) -> GraphSpec:
    """Draw a GraphSpec of 1..max_steps ops; it shrinks toward fewer steps, earlier rules and recent inputs."""
    rank = draw(st.sampled_from([4, 3, 2]))
    shapes = [(BATCH,) + draw(INPUT_SHAPES[rank])]
    contiguous, steps = [True], []
    for index in range(draw(st.integers(1, max_steps))):
        step = _draw_step(draw, shapes, contiguous, steps)
        result = _run_step(step, shapes)
        steps.append(step)
        shapes.append(tuple(result.shape))
        contiguous.append(result.is_contiguous() and all(contiguous[i] for i in step.inputs))
    outputs = (len(shapes) - 1,)
    if draw(st.integers(0, 4)) == 0:  # sometimes a tuple of two outputs, the second maybe the input itself
        outputs += (draw(st.integers(0, len(shapes) - 2)),)
    modules = sorted({step.owner for step in steps if step.spelling == "module"})
    float_modules = draw(st.lists(st.sampled_from(modules), max_size=2, unique=True)) if modules else []
    return GraphSpec(tuple(shapes), tuple(steps), outputs, draw(st.integers(0, 999)), tuple(contiguous),
                     tuple(float_modules))


def _draw_step(draw, shapes: List[tuple], contiguous: List[bool], steps: List[Step]) -> Step:
    reusable = [step for step in steps if step.owner is not None]
    if reusable and draw(st.integers(0, 3)) == 0:  # call an earlier step's module (or weights) again
        again = draw(st.sampled_from(reusable))
        sources = [index for index, shape in enumerate(shapes) if shape == shapes[again.inputs[0]]]
        return Step(again.op, again.spelling, (draw(st.sampled_from(sources[::-1])),), again.params, again.owner)
    source = len(shapes) - 1 - draw(st.integers(0, len(shapes) - 1))  # shrinks toward the latest value
    shape = shapes[source]
    rules = [rule for rule in RULES.values() if len(shape) in rule.ranks and rule.fits(shape)
             and (rule.partner is None or any(rule.partner(shape, other) for other in shapes))]
    rule = draw(st.sampled_from(rules))
    spellings = [spelling for spelling in rule.spellings if rule.spelling_fits(spelling, shape)
                 and not (spelling == "view" and not contiguous[source])]
    spelling = draw(st.sampled_from(spellings))
    params = tuple(sorted(rule.params(draw, shape, spelling).items()))
    inputs = (source,)
    if rule.partner is not None:
        partners = [index for index, other in enumerate(shapes) if rule.partner(shape, other)]
        inputs += (draw(st.sampled_from(partners[::-1])),)
    owns_something = rule.make is not None and rule.make(dict(params), shape, spelling) is not None
    return Step(rule.name, spelling, inputs, params, f"m{len(steps) + 1}" if owns_something else None)


def _run_step(step: Step, shapes: List[tuple]) -> torch.Tensor:
    """The step's float output on zeros: its shape and memory layout."""
    rule = RULES[step.op]
    owned = rule.make(dict(step.params), shapes[step.inputs[0]], step.spelling) if rule.make else None
    with torch.no_grad():
        return rule.call(owned, dict(step.params), step.spelling, [torch.zeros(shapes[i]) for i in step.inputs])
