"""Building blocks shared by the SAGAN generator: residual blocks, attention gates, position fusion.

All normalisation is ``InstanceNorm2d`` without running statistics, so a block computes the same
function in ``train()`` and ``eval()`` mode (the released code tracked running statistics, which
would silently change the network when switched to eval mode).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.networks.cpu_kernels import InstanceNorm2d

PositionEncoding = Literal["film", "reference", "none"]
"""How patch position enters the generator.

- ``"film"`` (default): a learned per-patch scale and shift applied *after* the instance norm, so
  position survives normalisation and changes the output.
- ``"reference"``: the released code's binary codes concatenated as constant channels before a 1x1
  conv and InstanceNorm. The norm removes any constant shift, so the codes have no effect; kept to
  reproduce published numbers and parameter counts.
- ``"none"``: the same 1x1 conv + InstanceNorm + ReLU without any position input.
"""

POSITION_ENCODINGS: tuple[str, ...] = ("film", "reference", "none")


def instance_norm(channels: int, affine: bool = True) -> InstanceNorm2d:
    """InstanceNorm2d that always normalises with the statistics of the instance at hand (and
    keeps the channels-last layout of the generator's CPU path)."""
    return InstanceNorm2d(channels, affine=affine, track_running_stats=False)


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
) -> nn.Sequential:
    """Bias-free convolution, affine instance norm and ReLU (the generator's main-path unit)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
        instance_norm(out_channels),
        nn.ReLU(inplace=True),
    )


def upconv_norm_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """4x4 stride-2 transposed convolution that doubles the resolution, then norm and ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
        instance_norm(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv + InstanceNorm layers with an identity shortcut (the bottleneck block).

    Examples:
        >>> block = ResidualBlock(8)
        >>> block(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FusionBlock(nn.Module):
    """Residual fusion of concatenated features: ``s = relu(norm(conv(x)))``, ``s + norm(conv(s))``.

    Changes the channel count, so the shortcut starts after the first convolution.

    Examples:
        >>> FusionBlock(16, 8)(torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = conv_norm_relu(in_channels, out_channels, 3, 1, 1)
        self.refine = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            instance_norm(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        s = self.reduce(x)
        return s + self.refine(s)


class AttentionGate(nn.Module):
    """Additive attention gate (Attention U-Net): weights skip features by a spatial map in (0, 1).

    Args:
        gate_channels: channels of the gating (decoder) signal.
        skip_channels: channels of the skip features to be weighted.
        inter_channels: channels of the hidden 1x1 projections.

    Examples:
        >>> gate = AttentionGate(8, 8, 4)
        >>> skip = torch.randn(2, 8, 4, 4)
        >>> gate(torch.randn(2, 8, 4, 4), skip).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.project_gate = nn.Sequential(
            nn.Conv2d(gate_channels, inter_channels, 1), instance_norm(inter_channels, affine=False)
        )
        self.project_skip = nn.Sequential(
            nn.Conv2d(skip_channels, inter_channels, 1), instance_norm(inter_channels, affine=False)
        )
        self.psi = nn.Sequential(
            nn.Conv2d(inter_channels, 1, 1), instance_norm(1, affine=False), nn.Sigmoid()
        )

    def attention(self, gate: Tensor, skip: Tensor) -> Tensor:
        """The spatial attention map, shape ``(N, 1, H, W)``."""
        return self.psi(torch.relu(self.project_gate(gate) + self.project_skip(skip)))

    def forward(self, gate: Tensor, skip: Tensor) -> Tensor:
        return skip * self.attention(gate, skip)


def code_bits(num_patches: int) -> int:
    """Number of bits of the released code's binary patch codes (3 for a 2x2 grid)."""
    return int(math.log2(num_patches)) + 1


def binary_codes(num_patches: int) -> Tensor:
    """Binary codes of the patch indices, most significant bit first, shape ``(P, bits)``.

    Examples:
        >>> binary_codes(4).tolist()
        [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    """
    bits = code_bits(num_patches)
    index = torch.arange(num_patches).unsqueeze(1)
    shifts = torch.arange(bits - 1, -1, -1)
    return ((index >> shifts) & 1).float()


class PositionFusion(nn.Module):
    """1x1 conv, InstanceNorm and ReLU that tell the features which patch they come from.

    Args:
        channels: feature channels (kept).
        num_patches: patches per image (``patch_grid ** 2``).
        mode: see `PositionEncoding`.

    Examples:
        >>> fuse = PositionFusion(8, num_patches=4, mode="film")
        >>> feats = torch.randn(8, 8, 4, 4)
        >>> fuse(feats, torch.arange(4).repeat(2)).shape
        torch.Size([8, 8, 4, 4])
    """

    def __init__(self, channels: int, num_patches: int, mode: PositionEncoding) -> None:
        super().__init__()
        if mode not in POSITION_ENCODINGS:
            raise InputError(f"position_encoding={mode!r}: choose one of {POSITION_ENCODINGS}")
        self.mode = mode
        extra = code_bits(num_patches) if mode == "reference" else 0
        self.conv = nn.Conv2d(channels + extra, channels, 1)
        self.norm = instance_norm(channels, affine=False)
        self.register_buffer("codes", binary_codes(num_patches), persistent=False)
        self.film: nn.Embedding | None = None
        if mode == "film":
            self.film = nn.Embedding(num_patches, 2 * channels)
            # Non-zero start so that position matters from the first step; small so that the
            # network starts close to the position-free function.
            nn.init.normal_(self.film.weight, std=0.1)

    def forward(self, x: Tensor, patch_index: Tensor) -> Tensor:
        if self.mode == "reference":
            code = self.codes[patch_index].to(x.dtype)[:, :, None, None]
            x = torch.cat([x, code.expand(-1, -1, x.shape[-2], x.shape[-1])], dim=1)
        y = self.norm(self.conv(x))
        if self.film is not None:
            scale, shift = self.film(patch_index).to(y.dtype)[:, :, None, None].chunk(2, dim=1)
            y = y * (1 + scale) + shift
        return torch.relu(y)
