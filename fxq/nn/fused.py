"""Float fused modules produced by fusion, and batch-norm folding.

The fused modules are `nn.Sequential` subclasses, so they print and run exactly like the float
modules they group; their type is what the lowering tables match to pick a fused int8 kernel.

    >>> import torch
    >>> conv, bn = torch.nn.Conv2d(3, 8, 3).eval(), torch.nn.BatchNorm2d(8).eval()
    >>> folded = fold_bn_into_conv(conv, bn)          # conv and bn are left untouched
    >>> fused = ConvReLU2d(folded, torch.nn.ReLU())
"""
import copy
from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = [
    "LinearReLU", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "BNReLU2d", "BNReLU3d",
    "fold_bn_into_conv", "fold_bn_into_linear",
]


class _Fused(nn.Sequential):
    """A float `first -> relu` pair; checks the member types so a wrong fusion fails where it is made."""

    _first_type: type = nn.Module

    def __init__(self, first: nn.Module, relu: nn.Module) -> None:
        if not isinstance(first, self._first_type) or not isinstance(relu, nn.ReLU):
            raise TypeError(
                f"fxq.nn.fused.{type(self).__name__} expects ({self._first_type.__name__}, ReLU), got "
                f"({type(first).__name__}, {type(relu).__name__}); check the fusion pattern that built it."
            )
        super().__init__(first, relu)


class LinearReLU(_Fused):
    """`nn.Linear` followed by `nn.ReLU`, lowered to one `quantized::linear_relu`."""

    _first_type = nn.Linear


class ConvReLU1d(_Fused):
    """`nn.Conv1d` followed by `nn.ReLU`, lowered to one `quantized::conv1d_relu`."""

    _first_type = nn.Conv1d


class ConvReLU2d(_Fused):
    """`nn.Conv2d` followed by `nn.ReLU`, lowered to one `quantized::conv2d_relu`."""

    _first_type = nn.Conv2d


class ConvReLU3d(_Fused):
    """`nn.Conv3d` followed by `nn.ReLU`, lowered to one `quantized::conv3d_relu`."""

    _first_type = nn.Conv3d


class BNReLU2d(_Fused):
    """`nn.BatchNorm2d` followed by `nn.ReLU`, lowered to one `quantized::batch_norm2d_relu`."""

    _first_type = nn.BatchNorm2d


class BNReLU3d(_Fused):
    """`nn.BatchNorm3d` followed by `nn.ReLU`, lowered to one `quantized::batch_norm3d_relu`."""

    _first_type = nn.BatchNorm3d


def _fold(weight: torch.Tensor, bias, bn, out_axis: int) -> Tuple[nn.Parameter, nn.Parameter]:
    if weight.shape[out_axis] != bn.num_features:
        raise ValueError(
            f"cannot fold {type(bn).__name__}({bn.num_features}) into a layer with "
            f"{weight.shape[out_axis]} output channels; the BN must directly follow that layer."
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot fold {type(bn).__name__}: it has no running statistics (track_running_stats=False); "
            "keep it unfused or build it with track_running_stats=True."
        )
    # torch.nn's own folding arithmetic (PyTorch AO folds with it too): the same operations in the same order
    # give bit-identical folded weights, so the int8 weights and everything downstream match PyTorch AO's.
    with torch.no_grad():
        if weight.dim() == 2:  # a linear layer
            if bias is None:
                bias = torch.zeros(bn.num_features, dtype=weight.dtype)
            gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
            new_weight, new_bias = fuse_linear_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                          gamma, beta)
        else:
            new_weight, new_bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                        bn.weight, bn.bias)
    return nn.Parameter(new_weight.detach(), weight.requires_grad), nn.Parameter(new_bias.detach(), weight.requires_grad)


def _copy_without_parameters(module: nn.Module) -> nn.Module:
    """A deep copy that shares the parameters (about to be replaced) instead of cloning them."""
    return copy.deepcopy(module, {id(p): p for p in module.parameters()})


def fold_bn_into_conv(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """Return a new conv computing `bn(conv(x))` in eval mode; `conv` and `bn` are not modified.

        >>> conv, bn = torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8).eval()
        >>> folded = fold_bn_into_conv(conv, bn)
        >>> folded.bias is not None
        True
    """
    if conv.transposed:
        raise NotImplementedError(f"fold_bn_into_conv: {type(conv).__name__} (transposed conv) is not supported.")
    folded = _copy_without_parameters(conv)
    folded.weight, folded.bias = _fold(conv.weight, conv.bias, bn, out_axis=0)
    return folded


def fold_bn_into_weights(weight: torch.Tensor, bias: Optional[torch.Tensor],
                         bn: Any) -> Tuple[nn.Parameter, nn.Parameter]:
    """(weight, bias) of a conv or linear layer with an eval-mode batch norm after it folded in; ``bn`` is anything
    with a batch norm's ``num_features``, ``running_mean``, ``running_var``, ``eps``, ``weight`` and ``bias`` (the
    arguments of torch.export's ``aten.batch_norm``). The inputs are not modified.

        >>> bn = torch.nn.BatchNorm2d(8).eval()
        >>> w, b = fold_bn_into_weights(torch.randn(8, 3, 3, 3), None, bn)
        >>> w.shape, b.shape
        (torch.Size([8, 3, 3, 3]), torch.Size([8]))
    """
    return _fold(weight, bias, bn, out_axis=0)


def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Return a new Linear computing `bn(linear(x))` in eval mode; the inputs are not modified.

        >>> folded = fold_bn_into_linear(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6).eval())
        >>> folded.weight.shape
        torch.Size([6, 4])
    """
    folded = _copy_without_parameters(linear)
    folded.weight, folded.bias = _fold(linear.weight, linear.bias, bn, out_axis=0)
    return folded
