"""Instance normalisation that keeps its input's memory layout: the generator's CPU kernel.

On the CPU the generator runs channels-last (see `sagan_ad.generator.Generator.residual`):
oneDNN's convolutions take channels-last tensors without reordering them, while for the
default layout they reorder every narrow activation to a blocked layout and back. PyTorch's
``instance_norm`` views its input as ``(1, N * C, H, W)``, which copies a channels-last tensor
to the default layout, so every following convolution would copy it back. `instance_norm` here
computes the same function on the tensor's own layout: the statistics are reductions over
``H, W``, and the per-sample, per-channel scale and shift run along the rows of memory (a
channel-last row is ``W * C`` values), so the short channel axis never limits vectorisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


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
        >>> torch.allclose(y, torch.nn.functional.instance_norm(x), atol=1e-5)
        True
    """
    return _InstanceNorm.apply(x, weight, bias, eps)


def keeps_layout(x: Tensor) -> bool:
    """Whether the CPU kernels apply to ``x``: a float32 tensor on the CPU, in eager mode.

    Tracing, export and ``torch.compile`` see PyTorch's own operators instead, so exported
    graphs hold a plain instance norm and the compiler fuses as it chooses.

    Examples:
        >>> keeps_layout(torch.zeros(1, 1, 2, 2))
        True
        >>> keeps_layout(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16))
        False
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
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


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and state-dict keys) that keeps the layout on the
    CPU via `instance_norm`; elsewhere, or with running statistics, it is PyTorch's module.

    Examples:
        >>> norm = InstanceNorm2d(8, affine=True)
        >>> x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        >>> norm(x).is_contiguous(memory_format=torch.channels_last)
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.track_running_stats or input.dim() != 4 or not keeps_layout(input):
            return super().forward(input)
        return instance_norm(input, self.weight, self.bias, self.eps)
