"""The cost model's effect: float vs int8 latency with and without it, side by side with torch.ao.

    python tools/bench_cost_model.py [--models narrow_chain,resnet18] [--threads 1]

For each model: fp32, torch.ao int8, fxq int8 and fxq int8 with ``{"cost_model": True}`` (layers slower in int8
than in float stay float), batch 1; prints latencies, the int8/fp32 ratios and how many layers stayed float.
"""
from __future__ import annotations

import argparse
import copy
import warnings

import torch
from tabulate import tabulate

import fxq
from fxq.debug.timing import median_ms
import zoo

MODELS = {"narrow_chain": lambda: zoo.narrow_chain(100), "resnet18": zoo.resnet18,
          "mobilenet_v2": zoo.mobilenet_v2, "bert": zoo.bert}


def _latency_ms(model, example) -> float:
    return median_ms(lambda: model(*example))


def _fxq(model, example, cost_model: bool):
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example,
                              prepare_custom_config={"cost_model": cost_model})
    left_float = sum("fxq_float_reason" in n.meta and n.op == "call_module" for n in prepared.graph.nodes)
    prepared(*example)
    return fxq.convert_fx(prepared), left_float


def _torch_ao(model, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    prepared(*example)
    return convert_fx(prepared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="narrow_chain,resnet18")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        model, example = MODELS[name]()
        fp32 = _latency_ms(model, example)
        torch_ao = _latency_ms(_torch_ao(model, example), example)
        plain, _ = _fxq(model, example, cost_model=False)
        costed, left_float = _fxq(model, example, cost_model=True)
        ours, ours_costed = _latency_ms(plain, example), _latency_ms(costed, example)
        rows.append([name, fp32, torch_ao / fp32, ours / fp32, ours_costed / fp32, left_float])
    print(tabulate(rows, floatfmt=".2f", headers=["model", "fp32 ms", "torch.ao int8/fp32", "fxq int8/fp32",
                                                  "fxq + cost model int8/fp32", "layers left float"]))


if __name__ == "__main__":
    main()
