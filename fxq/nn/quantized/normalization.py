"""Quantized BatchNorm2d/3d, BN+ReLU, LayerNorm, InstanceNorm1d/2d/3d and GroupNorm on the `quantized::` norms.

The float statistics and affine parameters stay float buffers (the kernels take them as float);
only activations are int8.

    >>> qbn = BatchNorm2d.from_float(torch.nn.BatchNorm2d(8).eval(), output_scale=0.04, output_zero_point=60)
    >>> qln = LayerNorm.from_float(torch.nn.LayerNorm(16), 0.03, 128)
    >>> qin = InstanceNorm2d.from_float(torch.nn.InstanceNorm2d(8, affine=True), 0.03, 128)
    >>> qgn = GroupNorm.from_float(torch.nn.GroupNorm(2, 8), 0.03, 128)
"""
from typing import List, Optional

import torch
from torch import nn

from fxq.nn.quantized._base import QuantizedModule

__all__ = ["BatchNorm2d", "BatchNorm3d", "BNReLU2d", "BNReLU3d", "LayerNorm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "GroupNorm"]


def _copy(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.detach().clone().float()


class _BatchNorm(QuantizedModule):
    _float_type: type = nn.Module

    def __init__(self, num_features: int, eps: float = 1e-5, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.num_features = num_features
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, {self._output_repr()}"

    @classmethod
    def from_float(cls, bn: nn.Module, output_scale: float, output_zero_point: int) -> "_BatchNorm":
        """Copy an eval-mode float BN's running statistics and affine parameters (or of `[bn, relu]`)."""
        if isinstance(bn, nn.Sequential):
            bn = bn[0]
        if not isinstance(bn, cls._float_type) or bn.running_mean is None:
            raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_float expects {cls._float_type.__name__} with "
                            f"running statistics, got {type(bn).__name__}.")
        module = cls(bn.num_features, bn.eps, output_scale, output_zero_point)
        with torch.no_grad():
            # affine=False means weight 1, bias 0: the defaults above.
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(bn, name)
                if value is not None:
                    getattr(module, name).copy_(value)
        return module


class BatchNorm2d(_BatchNorm):
    """int8 eval-mode batch norm over `(N, C, H, W)`."""

    _float_type = nn.BatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.batch_norm2d(x, self.weight, self.bias, self.running_mean, self.running_var,
                                                self.eps, self.scale, self.zero_point)


class BatchNorm3d(_BatchNorm):
    """int8 eval-mode batch norm over `(N, C, D, H, W)`."""

    _float_type = nn.BatchNorm3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.batch_norm3d(x, self.weight, self.bias, self.running_mean, self.running_var,
                                                self.eps, self.scale, self.zero_point)


class BNReLU2d(BatchNorm2d):
    """int8 `relu(batch_norm2d(x))` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.batch_norm2d_relu(x, self.weight, self.bias, self.running_mean, self.running_var,
                                                     self.eps, self.scale, self.zero_point)


class BNReLU3d(BatchNorm3d):
    """int8 `relu(batch_norm3d(x))` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.batch_norm3d_relu(x, self.weight, self.bias, self.running_mean, self.running_var,
                                                     self.eps, self.scale, self.zero_point)


class LayerNorm(QuantizedModule):
    """int8 layer norm over the trailing `normalized_shape` dimensions."""

    def __init__(self, normalized_shape: List[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.normalized_shape: List[int] = [int(size) for size in normalized_shape]
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        self.register_buffer("weight", torch.ones(self.normalized_shape) if elementwise_affine else None)
        self.register_buffer("bias", torch.zeros(self.normalized_shape) if elementwise_affine else None)

    def extra_repr(self) -> str:
        return f"{tuple(self.normalized_shape)}, eps={self.eps}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps,
                                              self.scale, self.zero_point)

    @classmethod
    def from_float(cls, ln: nn.LayerNorm, output_scale: float, output_zero_point: int) -> "LayerNorm":
        """Copy a float LayerNorm's shape, eps and affine parameters."""
        if not isinstance(ln, nn.LayerNorm):
            raise TypeError(f"fxq.nn.quantized.LayerNorm.from_float expects nn.LayerNorm, got {type(ln).__name__}.")
        module = cls(list(ln.normalized_shape), ln.eps, ln.elementwise_affine, output_scale, output_zero_point)
        # A float LayerNorm may be affine with bias=False: keep exactly what it has.
        module.weight, module.bias = _copy(ln.weight), _copy(ln.bias)
        return module


class _AffineNorm(QuantizedModule):
    """Norms over per-sample statistics with optional per-channel affine parameters (instance, group)."""

    def __init__(self, num_channels: int, eps: float, affine: bool, scale: float, zero_point: int) -> None:
        super().__init__(scale, zero_point)
        self.num_channels, self.eps = num_channels, float(eps)
        self.register_buffer("weight", torch.ones(num_channels) if affine else None)
        self.register_buffer("bias", torch.zeros(num_channels) if affine else None)

    def _copy_affine(self, norm: nn.Module) -> None:
        self.weight, self.bias = _copy(norm.weight), _copy(norm.bias)


class _InstanceNorm(_AffineNorm):
    _float_type: type = nn.Module

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.instance_norm(x, self.weight, self.bias, self.eps, self.scale, self.zero_point)

    @classmethod
    def accepts(cls, norm: nn.Module) -> bool:
        """Not with running statistics: the kernel always normalises with the sample's own."""
        return isinstance(norm, cls._float_type) and not norm.track_running_stats

    @classmethod
    def from_float(cls, norm: nn.Module, output_scale: float, output_zero_point: int) -> "_InstanceNorm":
        """Copy a float InstanceNorm's eps and affine parameters (one without running statistics)."""
        if not cls.accepts(norm):
            raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_float expects {cls._float_type.__name__} "
                            f"without running statistics, got {norm!r}.")
        module = cls(norm.num_features, norm.eps, norm.affine, output_scale, output_zero_point)
        module._copy_affine(norm)
        return module


class InstanceNorm1d(_InstanceNorm):
    """int8 instance norm over `(N, C, L)`."""

    _float_type = nn.InstanceNorm1d


class InstanceNorm2d(_InstanceNorm):
    """int8 instance norm over `(N, C, H, W)`."""

    _float_type = nn.InstanceNorm2d


class InstanceNorm3d(_InstanceNorm):
    """int8 instance norm over `(N, C, D, H, W)`."""

    _float_type = nn.InstanceNorm3d


class GroupNorm(_AffineNorm):
    """int8 group norm: `num_groups` groups of channels, each normalised with its own statistics."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(num_channels, eps, affine, scale, zero_point)
        self.num_groups = num_groups

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.scale,
                                              self.zero_point)

    @classmethod
    def from_float(cls, norm: nn.GroupNorm, output_scale: float, output_zero_point: int) -> "GroupNorm":
        """Copy a float GroupNorm's groups, eps and affine parameters."""
        if not isinstance(norm, nn.GroupNorm):
            raise TypeError(f"fxq.nn.quantized.GroupNorm.from_float expects nn.GroupNorm, got {type(norm).__name__}.")
        module = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, output_scale, output_zero_point)
        module._copy_affine(norm)
        return module
