"""Tiny transformers models with random weights (offline), their inputs, and what "every Linear is int8" counts.

Shared by tools/export_acceptance.py and tests/test_export.py. Every builder returns (model in eval mode, example
inputs, calibration batches, a held-out batch); the data is random (token ids or images) from a fixed seed.

    >>> model, example, calibration, held_out = build("bert")          # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

VOCAB, LENGTH, IMAGE = 100, 16, 32


def _tokens(batch: int) -> tuple:
    return (torch.randint(0, VOCAB, (batch, LENGTH)),)


def _images(batch: int) -> tuple:
    return (torch.randn(batch, 3, IMAGE, IMAGE),)


def _bert(t):
    return t.BertModel(t.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, max_position_embeddings=64)), _tokens


def _distilbert(t):
    return t.DistilBertModel(t.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                max_position_embeddings=64)), _tokens


def _gpt2(t):
    # use_cache=False: the key/value cache is a DynamicCache, which torch.export cannot return
    return t.GPT2Model(t.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                    bos_token_id=0, eos_token_id=0, use_cache=False)), _tokens


def _vit(t):
    return t.ViTModel(t.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  image_size=IMAGE, patch_size=8)), _images


def _resnet(t):
    return t.ResNetModel(t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])), _images


def _convnext(t):
    # depthwise 7x7 convs, LayerNorm over channels (channels-last in the blocks, channels-first between stages),
    # GELU, layer scale; layer_scale_init_value 0.5 so that the blocks matter against the residual at random init
    return t.ConvNextModel(t.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=4,
                                            layer_scale_init_value=0.5, image_size=IMAGE)), _images


BUILDERS: Dict[str, Callable] = {"bert": _bert, "distilbert": _distilbert, "gpt2": _gpt2, "vit": _vit,
                                 "resnet": _resnet, "convnext": _convnext}


def _bert_base(t):
    # BERT-base dimensions (hidden 768, 12 heads, intermediate 3072) at sequence length 128; `layers` from the caller
    return lambda layers: (t.BertModel(t.BertConfig(num_hidden_layers=layers)),
                           lambda batch: (torch.randint(0, 30522, (batch, 128)),))


def _vit_base(t):
    # ViT-B/16 at 224: ViTConfig's defaults
    return lambda layers: (t.ViTModel(t.ViTConfig(num_hidden_layers=layers)), lambda batch: (torch.randn(batch, 3, 224, 224),))


REALISTIC: Dict[str, Callable] = {"bert": _bert_base, "vit": _vit_base}


def build_realistic(name: str, layers: int = 12, calibration_batches: int = 2, seed: int = 0) -> tuple:
    """(model, example, calibration batches, held-out batch) at a realistic size, batch 1, random weights."""
    import transformers

    torch.manual_seed(seed)
    model, inputs = REALISTIC[name](transformers)(layers)
    model.eval()
    return model, inputs(1), [inputs(1) for _ in range(calibration_batches)], inputs(1)


def build(name: str, batch: int = 2, calibration_batches: int = 4, seed: int = 0) -> tuple:
    """(model, example inputs, calibration batches, held-out batch) of the tiny ``name`` model."""
    import transformers

    torch.manual_seed(seed)
    model, inputs = BUILDERS[name](transformers)
    model.eval()
    return model, inputs(batch), [inputs(batch) for _ in range(calibration_batches)], inputs(batch)


def linear_layers(model: nn.Module) -> int:
    """The float model's linear layers: nn.Linear and transformers' Conv1D (GPT-2's transposed linear)."""
    return sum(type(m).__name__ in ("Linear", "Conv1D") for m in model.modules())


def int8_linears(quantized: nn.Module) -> int:
    """The converted model's linear layers that run an int8 kernel: fxq's plain Int8Linear (the default lowering;
    Int8DynamicLinear too, which quantizes its input per token on each call: the transformer mapping's choice
    where calibration finds rows one scale cannot hold) or the quantized-tensor Linear / LinearReLU."""
    from fxq.nn import plain
    from fxq.nn import quantized as qnn

    return sum(isinstance(m, (qnn.Linear, qnn.LinearReLU, plain.Linear)) for m in quantized.modules())


def per_token_linears(quantized: nn.Module) -> int:
    """How many of those quantize their input per token (fxq.nn.plain.DynamicLinear)."""
    from fxq.nn import plain

    return sum(isinstance(m, plain.DynamicLinear) for m in quantized.modules())


def conv1d_as_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with transformers' Conv1D layers (GPT-2: ``x @ W + b``) as the equal nn.Linear, so that
    quantizers that annotate only nn.Linear (pt2e's X86InductorQuantizer) quantize the same layers fxq does."""
    import copy

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "Conv1D":
                linear = nn.Linear(child.weight.shape[0], child.weight.shape[1])
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(module, name, linear)
    return model


def first_output(output) -> torch.Tensor:
    """The main tensor of a model output (last_hidden_state of a ModelOutput, item 0 of a tuple)."""
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output[0] if isinstance(output, (tuple, list)) else output
