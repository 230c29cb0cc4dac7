"""Pseudo-anomaly synthesis: turn known-normal images into images with a known corrupted region."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Synthesizer(ABC):
    """Interface of a pseudo-anomaly synthesizer.

    A synthesizer takes a batch of normal images ``(B, C, H, W)`` in ``[-1, 1]`` and returns the
    corrupted images (same shape and dtype) and boolean masks ``(B, 1, H, W)`` of the corrupted
    pixels. All randomness comes from the ``generator`` argument so that results are reproducible;
    it works on whatever device the images are on.
    """

    @abstractmethod
    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(corrupted_images, masks)``."""


def _uniform_int(low: int, high: int, n: int, generator: torch.Generator | None, device) -> Tensor:
    return torch.randint(low, high, (n,), generator=generator, device=device)


class PatchBlendSynthesizer(Synthesizer):
    """SAGAN's pseudo anomaly: blend a square from another normal image into each image.

    For each image: a square of half-width ``w`` drawn uniformly from
    ``[round(min_half_width * W), round(max_half_width * W))`` pixels, centred uniformly in the
    central ``center_fraction`` of the image on each axis and clipped to it; the source is a
    different, randomly chosen image of the batch at the same location; one blend weight
    ``a ~ U(blend_min, blend_max)`` per image: ``x' = (1 - a M) x + a M src``.

    Args:
        min_half_width: smallest half-width as a fraction of the image side (0.05).
        max_half_width: exclusive upper bound of the half-width fraction (0.2).
        center_fraction: fraction of each axis, centred, from which the square's centre is drawn.
        blend_min: lower bound of the blend weight.
        blend_max: upper bound of the blend weight.

    Examples:
        >>> synth = PatchBlendSynthesizer()
        >>> images = torch.rand(4, 1, 64, 64) * 2 - 1
        >>> corrupted, masks = synth(images, torch.Generator().manual_seed(0))
        >>> corrupted.shape, masks.shape, masks.dtype
        (torch.Size([4, 1, 64, 64]), torch.Size([4, 1, 64, 64]), torch.bool)
    """

    def __init__(
        self,
        min_half_width: float = 0.05,
        max_half_width: float = 0.2,
        center_fraction: float = 0.6,
        blend_min: float = 0.0,
        blend_max: float = 1.0,
    ) -> None:
        if not 0.0 < min_half_width < max_half_width <= 0.5:
            raise ValueError(
                f"PatchBlendSynthesizer: need 0 < min_half_width ({min_half_width}) < "
                f"max_half_width ({max_half_width}) <= 0.5"
            )
        if not 0.0 < center_fraction <= 1.0:
            raise ValueError(
                f"PatchBlendSynthesizer: center_fraction={center_fraction} not in (0, 1]"
            )
        if not 0.0 <= blend_min < blend_max <= 1.0:
            raise ValueError(
                f"PatchBlendSynthesizer: need 0 <= blend_min ({blend_min}) < "
                f"blend_max ({blend_max}) <= 1"
            )
        self.min_half_width = min_half_width
        self.max_half_width = max_half_width
        self.center_fraction = center_fraction
        self.blend_min = blend_min
        self.blend_max = blend_max

    def half_width_range(self, side: int) -> tuple[int, int]:
        """Half-width bounds ``[low, high)`` in pixels for an image side (``(3, 13)`` at 64)."""
        low = max(1, round(self.min_half_width * side))
        return low, max(low + 1, round(self.max_half_width * side))

    def center_range(self, side: int) -> tuple[int, int]:
        """Centre bounds ``[low, high)`` in pixels for an image side (``(13, 51)`` at 64)."""
        margin = (1.0 - self.center_fraction) / 2
        low = round(margin * side)
        return low, max(low + 1, round((1.0 - margin) * side))

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        if images.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        if b < 2:
            raise ValueError(
                "PatchBlendSynthesizer needs at least 2 images per batch: the blended square comes "
                "from another image"
            )
        device = images.device
        half = _uniform_int(*self.half_width_range(min(h, w)), b, generator, device)
        cy = _uniform_int(*self.center_range(h), b, generator, device)
        cx = _uniform_int(*self.center_range(w), b, generator, device)
        # Adding 1..B-1 modulo B picks, uniformly, any image but the image itself.
        offset = _uniform_int(1, b, b, generator, device)
        source = images[(torch.arange(b, device=device) + offset) % b]
        u = torch.rand(b, generator=generator, device=device, dtype=torch.float32)
        alpha = (self.blend_min + (self.blend_max - self.blend_min) * u).to(images.dtype)

        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        in_rows = (rows >= (cy - half)[:, None]) & (rows < (cy + half)[:, None])
        in_cols = (cols >= (cx - half)[:, None]) & (cols < (cx + half)[:, None])
        masks = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
        weight = alpha[:, None, None, None] * masks.to(images.dtype)
        return (1 - weight) * images + weight * source, masks
