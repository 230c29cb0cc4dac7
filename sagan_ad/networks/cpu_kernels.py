"""The networks' CPU kernels: the same functions and parameters, computed faster on a CPU.

Which kernel PyTorch runs depends on layouts and shapes, and on a CPU the defaults lose much
of the training step on the networks of the CPU configs (narrow, at 64 px):

- The generator runs channels-last (`to_channels_last`, called by
  `sagan_ad.networks.generator.Generator.residual`): oneDNN's convolutions take channels-last
  tensors
  as they are, while for the default layout they reorder every narrow activation to a blocked
  layout and back.
- Its instance norms keep that layout (`instance_norm`, `InstanceNorm2d`). PyTorch's
  ``instance_norm`` views its input as ``(1, N * C, H, W)``, which copies a channels-last
  tensor to the default layout (and the next convolution copies it back).
- The critic's last convolutions see inputs that fit in one kernel window (the 256 to 512
  channel 4x4 convolution on a 2x2 map at 64 px); computed as one matrix product
  (`SingleWindowConv2d`), they skip oneDNN's reorders of their large weights.

`uses_cpu_kernels` decides, per call: float32 tensors on the CPU in eager mode. On a GPU,
in other precisions, and under tracing, export or ``torch.compile``, the networks run
PyTorch's own operators, so exported graphs hold plain convolutions and instance norms;
`pytorch_kernels` does the same for a block of code (the reference of tests and benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

_enabled = True
# torch.compiler.is_compiling arrived in PyTorch 2.3; before it, compiling runs the kernels.
_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


@contextmanager
def pytorch_kernels() -> Iterator[None]:
    """Run the networks on PyTorch's own operators on the CPU too, within the block: the
    reference these kernels are tested and benchmarked against.

    Examples:
        >>> with pytorch_kernels():
        ...     uses_cpu_kernels(torch.zeros(1, 1, 2, 2))
        False
    """
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def uses_cpu_kernels(x: Tensor) -> bool:
    """Whether the CPU kernels apply to ``x``: a float32 tensor on the CPU, in eager mode,
    outside `pytorch_kernels`.

    Examples:
        >>> uses_cpu_kernels(torch.zeros(1, 1, 2, 2))
        True
        >>> uses_cpu_kernels(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16))
        False
    """
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not _compiling()
    )


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` (``(N, C, H, W)``) with channels-last strides, which convolutions follow.

    With one channel both layouts hold the same memory and ``Tensor.contiguous`` keeps the
    default strides, so the tensor is re-viewed instead of copied.

    Examples:
        >>> to_channels_last(torch.zeros(2, 1, 4, 4)).stride()
        (16, 1, 4, 1)
        >>> to_channels_last(torch.zeros(2, 3, 4, 4)).stride()
        (48, 1, 12, 3)
    """
    n, c, h, w = x.shape
    if c == 1:
        return x.contiguous().view(n, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def _per_channel(values: Tensor) -> Tensor:
    """``(N, C)`` values as ``(N, C, 1, 1)``, which broadcasts against either layout."""
    return values[:, :, None, None]


class _InstanceNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:
        size = x.shape[2] * x.shape[3]
        # Two passes, like PyTorch's kernel: the mean, then the variance about it. Element-wise
        # results take the layout of ``x``.
        centred = x - _per_channel(x.sum(dim=(2, 3)) / size)
        rstd = torch.rsqrt((centred * centred).sum(dim=(2, 3)) / size + eps)
        scale = rstd if weight is None else rstd * weight
        if bias is None:
            y = centred * _per_channel(scale)
        else:
            y = torch.addcmul(bias[:, None, None], centred, _per_channel(scale))
        ctx.save_for_backward(centred, rstd, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, dy: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        centred, rstd, weight = ctx.saved_tensors
        size = centred.shape[2] * centred.shape[3]
        dy_sum = dy.sum(dim=(2, 3))
        # The sum of dy * x_hat over H, W is rstd * dot.
        dot = (dy * centred).sum(dim=(2, 3))
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            gain = rstd if weight is None else rstd * weight
            # dx = gain * (dy - mean(dy) - x_hat * mean(dy * x_hat)), x_hat = centred * rstd
            dx = torch.addcmul(_per_channel(gain * dy_sum / -size), dy, _per_channel(gain))
            dx.addcmul_(centred, _per_channel(gain * rstd * rstd * dot / -size))
        if ctx.needs_input_grad[1]:
            dweight = (dot * rstd).sum(dim=0)
        if ctx.needs_input_grad[2]:
            dbias = dy_sum.sum(dim=0)
        return dx, dweight, dbias, None


def instance_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Instance norm of ``(N, C, H, W)`` ``x`` (biased variance, optional per-channel affine),
    returned in ``x``'s memory layout (contiguous or channels-last).

    The same function as ``torch.nn.functional.instance_norm`` without running statistics.

    Examples:
        >>> x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        >>> y = instance_norm(x)
        >>> y.is_contiguous(memory_format=torch.channels_last)
        True
        >>> torch.allclose(y, F.instance_norm(x), atol=1e-5)
        True
    """
    return _InstanceNorm.apply(x, weight, bias, eps)


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and state-dict keys) that runs `instance_norm`
    where `uses_cpu_kernels` says so; elsewhere, or with running statistics, PyTorch's module.

    Examples:
        >>> norm = InstanceNorm2d(8, affine=True)
        >>> x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        >>> norm(x).is_contiguous(memory_format=torch.channels_last)
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.track_running_stats or input.dim() != 4 or not uses_cpu_kernels(input):
            return super().forward(input)
        return instance_norm(input, self.weight, self.bias, self.eps)


class SingleWindowConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that, where `uses_cpu_kernels` says
    so, computes a convolution whose one output position sees the whole input as one matrix
    product: the input, zero-padded to the kernel's window, times the flattened weights.

    Examples:
        >>> conv = SingleWindowConv2d(4, 8, 4, 2, 1)
        >>> x = torch.randn(3, 4, 2, 2)
        >>> conv(x).shape
        torch.Size([3, 8, 1, 1])
        >>> torch.allclose(conv(x), conv._conv_forward(x, conv.weight, conv.bias), atol=1e-6)
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        padding = self._window_padding(input)
        if padding is None:
            return super().forward(input)
        window = F.pad(input, padding)
        return F.linear(window.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]

    def _window_padding(self, input: Tensor) -> tuple[int, int, int, int] | None:
        """The ``F.pad`` amounts that make the input the kernel's window, when the output is one
        position whose window holds the whole input (and the CPU kernels apply)."""
        if (
            input.dim() != 4
            or self.groups != 1
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or self.dilation != (1, 1)
            or not uses_cpu_kernels(input)
        ):
            return None
        amounts: list[int] = []
        # F.pad lists the last dimension first.
        for size, kernel, stride, pad in zip(
            input.shape[:1:-1],
            self.kernel_size[::-1],
            self.stride[::-1],
            self.padding[::-1],
            strict=True,
        ):
            if (size + 2 * pad - kernel) // stride != 0 or size + pad > kernel:
                return None
            amounts += [pad, kernel - pad - size]
        return amounts[0], amounts[1], amounts[2], amounts[3]
