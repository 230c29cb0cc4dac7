"""The SAGAN generator: a patch-wise attention U-Net that restores abnormal regions to normal."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.networks.cpu_kernels import to_channels_last, uses_cpu_kernels
from sagan_ad.networks.layers import (
    AttentionGate,
    FusionBlock,
    PositionEncoding,
    PositionFusion,
    ResidualBlock,
    conv_norm_relu,
    upconv_norm_relu,
)

ENCODER_DOWNSAMPLES = 3
"""Stride-2 stages in the encoder: a patch side must be divisible by ``2 ** 3``."""


def check_generator_geometry(image_size: int, patch_grid: int) -> int:
    """Check that ``image_size`` splits into patches that the encoder can halve 3 times.

    Returns:
        The patch side in pixels.

    Examples:
        >>> check_generator_geometry(64, 2)
        32
    """
    if patch_grid < 1:
        raise InputError(f"patch_grid={patch_grid}: must be a positive integer")
    step = patch_grid * 2**ENCODER_DOWNSAMPLES
    if image_size < step or image_size % step:
        raise InputError(
            f"image_size={image_size} cannot be cut into a {patch_grid}x{patch_grid} patch grid "
            f"whose patches the encoder halves {ENCODER_DOWNSAMPLES} times: image_size must be a "
            f"multiple of patch_grid * {2**ENCODER_DOWNSAMPLES} = {step} (for example 64, 128, 256)"
        )
    return image_size // patch_grid


def to_patches(images: Tensor, grid: int) -> Tensor:
    """Cut ``(B, C, H, W)`` into ``(B * grid**2, C, H/grid, W/grid)``, patches row-major per image.

    Examples:
        >>> to_patches(torch.zeros(2, 1, 8, 8), 2).shape
        torch.Size([8, 1, 4, 4])
    """
    b, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    patches = images.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b * grid * grid, c, ph, pw)


def from_patches(patches: Tensor, grid: int) -> Tensor:
    """Inverse of `to_patches`.

    Examples:
        >>> x = torch.randn(2, 1, 8, 8)
        >>> torch.equal(from_patches(to_patches(x, 2), 2), x)
        True
    """
    n, c, ph, pw = patches.shape
    b = n // (grid * grid)
    images = patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return images.reshape(b, c, grid * ph, grid * pw)


class Generator(nn.Module):
    """SAGAN generator: maps an image in ``[-1, 1]`` to its normal restoration.

    The image is cut into a ``patch_grid x patch_grid`` grid; every patch runs through the same
    encoder / residual bottleneck / attention-gated decoder with multi-level feature fusion; the
    head predicts a residual ``r`` and the output is ``tanh(x + r)``. During training the residual
    is kept at a random ``residual_keep_prob`` fraction of pixels (replaced by ``x`` elsewhere) as
    in the released code; in ``eval()`` mode the forward pass is deterministic.

    Args:
        in_channels: image channels (1 for radiographs, 3 for colour fundus images).
        image_size: square input side; a multiple of ``patch_grid * 8``.
        base_channels: width of the first stage (64 in the paper); later stages double it.
        num_res_blocks: residual blocks in the bottleneck (6 in the paper).
        patch_grid: patches per side (2 in the paper; 1 disables patching).
        position_encoding: how patch position enters the network, see
            `sagan_ad.networks.layers.PositionEncoding`.
        attention_gates: gate the skip connections (the paper's ARRM); ``False`` passes them as is.
        multi_level_fusion: fuse decoder levels 1-3 before the head (the paper's MFF).
        residual_keep_prob: training-time Bernoulli keep probability of the residual (0.95).

    Examples:
        >>> g = Generator(image_size=32, base_channels=8, num_res_blocks=1).eval()
        >>> g(torch.rand(2, 1, 32, 32) * 2 - 1).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        num_res_blocks: int = 6,
        patch_grid: int = 2,
        position_encoding: PositionEncoding = "film",
        attention_gates: bool = True,
        multi_level_fusion: bool = True,
        residual_keep_prob: float = 0.95,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise InputError(f"in_channels={in_channels}: must be at least 1")
        if base_channels < 1 or num_res_blocks < 0:
            raise InputError(
                f"base_channels={base_channels} must be >= 1 and num_res_blocks={num_res_blocks} "
                ">= 0"
            )
        if not 0.0 < residual_keep_prob <= 1.0:
            raise InputError(f"residual_keep_prob={residual_keep_prob}: must be in (0, 1]")
        check_generator_geometry(image_size, patch_grid)
        # Every constructor argument is kept under its own name, so a SAGAN can record the
        # generator in its hyper-parameters and rebuild it from a checkpoint.
        self.in_channels = in_channels
        self.image_size = image_size
        self.base_channels = base_channels
        self.num_res_blocks = num_res_blocks
        self.position_encoding = position_encoding
        self.patch_grid = patch_grid
        self.num_patches = patch_grid * patch_grid
        self.residual_keep_prob = residual_keep_prob
        self.attention_gates = attention_gates
        self.multi_level_fusion = multi_level_fusion
        c = base_channels
        p = self.num_patches

        self.stem = conv_norm_relu(in_channels, c, 7, 1, 3)
        self.down1 = conv_norm_relu(c, 2 * c, 4, 2, 1)
        self.position1 = PositionFusion(2 * c, p, position_encoding)
        self.down2 = conv_norm_relu(2 * c, 4 * c, 4, 2, 1)
        self.position2 = PositionFusion(4 * c, p, position_encoding)
        self.down3 = conv_norm_relu(4 * c, 8 * c, 4, 2, 1)
        self.position3 = PositionFusion(8 * c, p, position_encoding)
        self.bottleneck = nn.Sequential(*(ResidualBlock(8 * c) for _ in range(num_res_blocks)))

        # Decoder level k: gate the skip, fuse it with the decoder features, upsample.
        self.gate1 = AttentionGate(8 * c, 8 * c, 4 * c) if attention_gates else None
        self.fuse1 = FusionBlock(16 * c, 8 * c)
        self.up1 = upconv_norm_relu(8 * c, 4 * c)
        self.gate2 = AttentionGate(4 * c, 4 * c, 2 * c) if attention_gates else None
        self.fuse2 = FusionBlock(8 * c, 4 * c)
        self.up2 = upconv_norm_relu(4 * c, 2 * c)
        self.gate3 = AttentionGate(2 * c, 2 * c, c) if attention_gates else None
        self.fuse3 = FusionBlock(4 * c, 2 * c)
        self.up3 = upconv_norm_relu(2 * c, c)

        if multi_level_fusion:
            self.lift1 = nn.Sequential(upconv_norm_relu(4 * c, 2 * c), upconv_norm_relu(2 * c, c))
            self.lift2 = upconv_norm_relu(2 * c, c)
            self.fuse_levels = FusionBlock(3 * c, c)
        self.head = nn.Conv2d(c, in_channels, 7, 1, 3, bias=False)

    @staticmethod
    def _gated(gate: AttentionGate | None, signal: Tensor, skip: Tensor) -> Tensor:
        return skip if gate is None else gate(signal, skip)

    def residual(self, images: Tensor) -> Tensor:
        """The head's residual ``r`` for whole images (before masking and ``tanh``)."""
        x = to_patches(images, self.patch_grid)
        if uses_cpu_kernels(x):
            # oneDNN runs these narrow convolutions channels-last without reordering them to
            # its blocked layout and back; the norms keep the layout
            # (sagan_ad.networks.cpu_kernels).
            x = to_channels_last(x)
        index = torch.arange(self.num_patches, device=x.device).repeat(images.shape[0])

        s1 = self.position1(self.down1(self.stem(x)), index)
        s2 = self.position2(self.down2(s1), index)
        z = self.bottleneck(self.position3(self.down3(s2), index))

        # The released code gates the bottleneck with itself; the deepest encoder map is unused.
        d1 = self.up1(self.fuse1(torch.cat([z, self._gated(self.gate1, z, z)], dim=1)))
        d2 = self.up2(self.fuse2(torch.cat([d1, self._gated(self.gate2, d1, s2)], dim=1)))
        d3 = self.up3(self.fuse3(torch.cat([d2, self._gated(self.gate3, d2, s1)], dim=1)))
        if self.multi_level_fusion:
            d3 = self.fuse_levels(torch.cat([self.lift1(d1), self.lift2(d2), d3], dim=1))
        return from_patches(self.head(d3), self.patch_grid)

    def forward(self, images: Tensor, residual_mask: bool | None = None) -> Tensor:
        """Restore ``images`` (``(B, C, H, W)`` in ``[-1, 1]``).

        Args:
            images: input batch.
            residual_mask: apply the random residual mask; ``None`` means "in training mode only".
                ``True`` in eval mode reproduces the released code's random inference.
        """
        if images.ndim != 4 or images.shape[1:] != (
            self.in_channels,
            self.image_size,
            self.image_size,
        ):
            raise InputError(
                f"Generator expects images of shape (B, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}), got {tuple(images.shape)}"
            )
        r = self.residual(images)
        if self.training if residual_mask is None else residual_mask:
            keep = torch.rand_like(r[:, :1]) < self.residual_keep_prob
            r = torch.where(keep, r, images)
        return torch.tanh(images + r)
