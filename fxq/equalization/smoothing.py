"""SmoothQuant (Xiao et al., 2023): move activation outliers into the next linears' weights.

A few channels of a transformer's LayerNorm output (and of its FFN's GELU output) are 10-100x larger than the
rest, so a per-tensor int8 scale spends its range on them. For a value X feeding linears L_i, channel j is
divided by ``s[j] = max|X_j|^alpha / max_i max|W_i[:, j]|^(1 - alpha)`` and every L_i's weight column j is
multiplied by it: the float model computes the same thing and the activation the int8 kernels see is flat.
All linears reading one value (q, k and v) share its factor. Where X comes from a LayerNorm, RMSNorm or Linear
module (directly, or through the channel-keeping views and eval dropouts torch.export puts in front of GPT-2's and
BERT's linears), the division is folded into its weight and bias, so no op is added; elsewhere (a GELU, a model input)
a ``mul`` by 1/s goes in front of X's quantize. A user of X that is not such a linear (a post-norm residual add,
the model output) reads ``X * s``, in float.

    >>> import torch
    >>> smoothing_scale(torch.tensor([100., 1., 0.]), torch.tensor([1., 1., 1.]), 0.5).tolist()
    [10.0, 1.0, 1.0]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import fx, nn

from fxq.equalization.observers import ChannelRangeObserver
from fxq.nn import fused

NORM_MODULES = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# Smooth only when the estimated int8 error drops by 20% (~1 dB): smaller estimated gains were within the estimate's
# own error (the zoo MLP lost 1.3 dB to a smoothing the estimate called 5% better).
REQUIRED_GAIN = 0.8
# ... and only where some channel's range is this many times the median channel's: the estimate does not model
# HistogramObserver's clipping, and on outlier-free inputs (the zoo MLP's) it called a 2.5 dB loss a gain.
OUTLIER_RATIO = 6.0
DEFAULT_ALPHA = 0.5  # tools/bench_transformer.py --alphas: MiniLM's mean cosine peaks at 0.5 (see its docstring)


@dataclass(frozen=True)
class SmoothQuant:
    """``prepare_fx(..., _equalization_config=fxq.SmoothQuant(alpha=0.5))``: calibrated outlier smoothing.

    ``alpha`` (0..1) is how much of the activation range moves into the weights, or ``"search"``: each producer
    tries :data:`ALPHA_GRID` on rows kept from calibration and takes the alpha whose int8 linear outputs are
    closest to float. Either way a producer is only smoothed when that lowers this error on the kept rows.
    ``select`` (mpath queries) limits smoothing to the producers (norms / linears) it matches; ``exclude`` drops
    producers. Combine with input-weight equalization through ``input_weight``.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 8),),
    ...                           _equalization_config=fxq.SmoothQuant(alpha=0.5))
    >>> _ = prepared(torch.randn(16, 8))
    >>> quantized = fxq.convert_fx(prepared)
    """

    alpha: Union[float, str] = DEFAULT_ALPHA
    select: Sequence[str] = ()
    exclude: Sequence[str] = ()
    input_weight: Optional[object] = None

    def __post_init__(self) -> None:
        if self.alpha != "search" and not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"SmoothQuant(alpha={self.alpha!r}): alpha must be a number in [0, 1] or 'search'")
        for name in ("select", "exclude"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))


class SmoothingObserver(ChannelRangeObserver):
    """Per-channel range of a producer's output (last dim), plus up to ``rows`` rows for the alpha search."""

    def __init__(self, alpha: Union[float, str] = DEFAULT_ALPHA, rows: int = 512) -> None:
        super().__init__(ch_axis=-1)
        self.alpha, self.rows = alpha, rows
        self.register_buffer("sample", torch.tensor([]))
        self._resizable = self._resizable + ("sample",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        if self.sample.numel() < self.rows * x.shape[-1]:
            flat = x.detach().float().reshape(-1, x.shape[-1])
            kept = self.sample.reshape(-1, x.shape[-1])
            self.sample = torch.cat([kept, flat[:self.rows - kept.shape[0]]])
        return x

    def absmax(self) -> torch.Tensor:
        return torch.maximum(self.min_val.abs(), self.max_val.abs())


def smoothing_scale(x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """``x^alpha / w^(1 - alpha)`` per channel; 1 where that is 0, inf or NaN (dead channels, zero columns)."""
    scale = (x_absmax.double().pow(alpha) / w_absmax.double().pow(1 - alpha)).float()
    usable = torch.isfinite(scale) & (scale > 0)
    return torch.where(usable, scale, torch.ones_like(scale))


def choose_alpha(sample: torch.Tensor, x_absmax: torch.Tensor, weights: Sequence[torch.Tensor],
                 candidates: Sequence[float]) -> Optional[float]:
    """The alpha of ``candidates`` whose int8 outputs (per-tensor activations, per-channel weights) on the kept
    rows ``sample`` are closest to float, summed over the linears ``weights``; None when the activation has no
    outlier channel or smoothing does not clearly lower that error (it would do nothing useful, so it does nothing).

    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 8, generator=generator); x[:, 0] *= 50
    >>> choose_alpha(x, x.abs().amax(0), [torch.randn(4, 8, generator=generator)], (0.5,))
    0.5
    """
    if x_absmax.max() < OUTLIER_RATIO * x_absmax.median():
        return None  # no outlier channels: nothing for smoothing to fix
    w_absmax = torch.stack([w.detach().abs().amax(dim=0) for w in weights]).amax(dim=0)
    exact = [sample @ w.detach().T for w in weights]

    def error(alpha: Optional[float]) -> float:
        scale = torch.ones_like(x_absmax) if alpha is None else smoothing_scale(x_absmax, w_absmax, alpha)
        x = _fake_quantize_affine(sample / scale)
        total = 0.0
        for w, target in zip(weights, exact):
            w = w.detach() * scale
            w = _fake_quantize(w, w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.5)
            total += float((x @ w.T - target).pow(2).sum())
        return total

    errors = {alpha: error(alpha) for alpha in candidates}
    best = min(errors, key=errors.get)
    return best if errors[best] < REQUIRED_GAIN * error(None) else None


def _fake_quantize_affine(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor uint8 over [min(x, 0), max(x, 0)], as the activation observers quantize."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = max(high - low, 1e-12) / 255
    zero = round(-low / step)
    return (torch.clamp(torch.round(x / step) + zero, 0, 255) - zero) * step


def _fake_quantize(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    step = torch.as_tensor(step).clamp_min(1e-12)
    return torch.clamp(torch.round(x / step), -128, 127) * step


def is_producer(node: fx.Node, modules: dict) -> bool:
    """A LayerNorm / RMSNorm / Linear (or fused LinearReLU: relu(x / s) = relu(x) / s) module with a weight: its
    output channels can be scaled in place."""
    if node.op == "call_module":
        module = producer_module(modules[node.target])
        return isinstance(module, NORM_MODULES + (nn.Linear,)) and getattr(module, "weight", None) is not None
    return False


# Ops that leave every value in its last-dim channel, so a factor folded into the norm behind them still applies:
# a view / reshape whose new last dim is the old one (torch.export's ``view(-1, C)`` in front of GPT-2's Conv1D),
# and dropout in eval mode (``aten.dropout(x, p, False)``, BERT's after its embedding norm).
_VIEWS = (torch.ops.aten.view.default, torch.ops.aten.reshape.default)
_DROPOUTS = (torch.ops.aten.dropout.default,)


def producer_path(value: fx.Node, modules: dict, calls: Counter, width: int) -> list:
    """``[value, ..., P]``: from ``value`` back through channel-keeping ops to a producer module P (see
    :func:`is_producer`) called once, with ``width`` output channels; ``[]`` when there is none."""
    path = [value]
    while not is_producer(path[-1], modules):
        if not _keeps_channels(path[-1], width):
            return []
        path.append(path[-1].args[0])
    module = producer_module(modules[path[-1].target])
    channels = module.weight.shape[0] if isinstance(module, nn.Linear) or module.weight.ndim == 1 else None
    return path if calls[path[-1].target] == 1 and channels == width else []


def _keeps_channels(node: fx.Node, width: int) -> bool:
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.target in _VIEWS:
        shape = node.args[1] if len(node.args) > 1 else None
        return isinstance(shape, (list, tuple)) and len(shape) > 0 and shape[-1] == width
    return node.target in _DROPOUTS and len(node.args) > 2 and node.args[2] is False


def producer_module(module: nn.Module) -> nn.Module:
    return module[0] if isinstance(module, fused.LinearReLU) else module


def scale_producer(module: nn.Module, scale: torch.Tensor) -> None:
    """Divide the module's output channel j by ``scale[j]`` (norm: weight and bias; linear: weight rows and bias).
    New Parameters, never in place: the copy being converted shares storage with the user's model."""
    shape = (-1,) + (1,) * (module.weight.ndim - 1)
    module.weight = nn.Parameter(module.weight.detach() / scale.reshape(shape), module.weight.requires_grad)
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(module.bias.detach() / scale, module.bias.requires_grad)


def scale_consumer(module: nn.Linear, scale: torch.Tensor) -> None:
    """Multiply the linear's weight column j by ``scale[j]`` (new Parameter)."""
    module.weight = nn.Parameter(module.weight.detach() * scale, module.weight.requires_grad)

