"""Pseudo-anomaly synthesis: turn known-normal images into images with a known corrupted region."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from sagan_ad.errors import InputError


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
            raise InputError(
                f"PatchBlendSynthesizer: need 0 < min_half_width ({min_half_width}) < "
                f"max_half_width ({max_half_width}) <= 0.5"
            )
        if not 0.0 < center_fraction <= 1.0:
            raise InputError(
                f"PatchBlendSynthesizer: center_fraction={center_fraction} not in (0, 1]"
            )
        if not 0.0 <= blend_min < blend_max <= 1.0:
            raise InputError(
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
        _check_batch(
            images,
            "PatchBlendSynthesizer",
            min_batch=2,
            why="the blended square comes from another image",
        )
        b, _, h, w = images.shape
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


def _check_batch(images: Tensor, name: str, min_batch: int = 1, why: str = "") -> None:
    if images.ndim != 4:
        raise InputError(f"{name}: expected images (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < min_batch:
        reason = f": {why}" if why else ""
        raise InputError(f"{name} needs at least {min_batch} images per batch{reason}")


def _uniform(low: float, high: float, n: int, generator, device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _rectangles(
    sizes_h: Tensor, sizes_w: Tensor, top: Tensor, left: Tensor, h: int, w: int
) -> Tensor:
    """Boolean masks ``(B, 1, H, W)`` of axis-aligned rectangles."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + sizes_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + sizes_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


class CutPasteSynthesizer(Synthesizer):
    """CutPaste (Li et al., CVPR 2021): a rectangle of an image pasted elsewhere in it.

    The rectangle covers ``U(min_area, max_area)`` of the image with a log-uniform aspect ratio
    in ``[1 / max_aspect, max_aspect]``; source and destination are drawn uniformly inside the
    image. Instead of the original colour jitter, which would tint grayscale images, the pasted
    patch gets one intensity shift ``U(-brightness, brightness)`` on every channel.

    Args:
        min_area: smallest patch area as a fraction of the image.
        max_area: largest patch area as a fraction of the image.
        max_aspect: largest width/height (or height/width) ratio.
        brightness: largest intensity shift (images in ``[-1, 1]``).

    Examples:
        >>> images = torch.rand(2, 1, 32, 32) * 2 - 1
        >>> out, masks = CutPasteSynthesizer()(images, torch.Generator().manual_seed(0))
        >>> out.shape, bool(masks.any())
        (torch.Size([2, 1, 32, 32]), True)
    """

    def __init__(
        self,
        min_area: float = 0.02,
        max_area: float = 0.15,
        max_aspect: float = 3.3,
        brightness: float = 0.1,
    ) -> None:
        if not 0.0 < min_area <= max_area < 1.0:
            raise InputError(
                f"CutPasteSynthesizer: need 0 < min_area ({min_area}) <= max_area ({max_area}) < 1"
            )
        if max_aspect < 1.0 or brightness < 0.0:
            raise InputError(
                f"CutPasteSynthesizer: need max_aspect ({max_aspect}) >= 1 and brightness "
                f"({brightness}) >= 0"
            )
        self.min_area = min_area
        self.max_area = max_area
        self.max_aspect = max_aspect
        self.brightness = brightness

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_batch(images, "CutPasteSynthesizer")
        b, _, h, w = images.shape
        device = images.device
        area = _uniform(self.min_area, self.max_area, b, generator, device) * h * w
        log_aspect = _uniform(-1.0, 1.0, b, generator, device) * math.log(self.max_aspect)
        aspect = torch.exp(log_aspect)
        ph = torch.sqrt(area / aspect).round().clamp(1, h).long()
        pw = torch.sqrt(area * aspect).round().clamp(1, w).long()
        src_top = (torch.rand(b, generator=generator, device=device) * (h - ph + 1)).long()
        src_left = (torch.rand(b, generator=generator, device=device) * (w - pw + 1)).long()
        dst_top = (torch.rand(b, generator=generator, device=device) * (h - ph + 1)).long()
        dst_left = (torch.rand(b, generator=generator, device=device) * (w - pw + 1)).long()
        shift = _uniform(-self.brightness, self.brightness, b, generator, device)
        masks = _rectangles(ph, pw, dst_top, dst_left, h, w)
        rows = (torch.arange(h, device=device) - dst_top[:, None] + src_top[:, None]).clamp(
            0, h - 1
        )
        cols = (torch.arange(w, device=device) - dst_left[:, None] + src_left[:, None]).clamp(
            0, w - 1
        )
        batch = torch.arange(b, device=device)[:, None, None]
        # (B, H, W, C) gathered source pixels, moved back to channels-first.
        moved = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        patch = (moved.permute(0, 3, 1, 2) + shift[:, None, None, None].to(images.dtype)).clamp(
            -1, 1
        )
        return torch.where(masks, patch, images), masks


class FPISynthesizer(Synthesizer):
    """Foreign patch interpolation (Tan et al., 2020): a rectangle of another image blended in.

    Unlike SAGAN's square patch, the rectangle's height and width are drawn independently
    (``U(min_size, max_size)`` of each side) anywhere in the image; the source is another image
    of the batch at the same place, with one weight ``a ~ U(0, 1)`` per image:
    ``x' = (1 - a M) x + a M src``. Grayscale-correct by construction (a convex combination of
    two images of the same modality).

    Args:
        min_size: smallest side as a fraction of the image side.
        max_size: largest side as a fraction of the image side.

    Examples:
        >>> images = torch.rand(3, 1, 32, 32) * 2 - 1
        >>> out, masks = FPISynthesizer()(images, torch.Generator().manual_seed(0))
        >>> out.shape == images.shape
        True
    """

    def __init__(self, min_size: float = 0.1, max_size: float = 0.5) -> None:
        if not 0.0 < min_size <= max_size <= 1.0:
            raise InputError(
                f"FPISynthesizer: need 0 < min_size ({min_size}) <= max_size ({max_size}) <= 1"
            )
        self.min_size = min_size
        self.max_size = max_size

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_batch(images, "FPISynthesizer", min_batch=2)
        b, _, h, w = images.shape
        device = images.device
        ph = (_uniform(self.min_size, self.max_size, b, generator, device) * h).round()
        pw = (_uniform(self.min_size, self.max_size, b, generator, device) * w).round()
        ph, pw = ph.clamp(1, h).long(), pw.clamp(1, w).long()
        top = (torch.rand(b, generator=generator, device=device) * (h - ph + 1)).long()
        left = (torch.rand(b, generator=generator, device=device) * (w - pw + 1)).long()
        offset = _uniform_int(1, b, b, generator, device)
        source = images[(torch.arange(b, device=device) + offset) % b]
        alpha = torch.rand(b, generator=generator, device=device).to(images.dtype)
        masks = _rectangles(ph, pw, top, left, h, w)
        weight = alpha[:, None, None, None] * masks.to(images.dtype)
        return (1 - weight) * images + weight * source, masks


def perlin_noise(
    height: int,
    width: int,
    cells: tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A 2D Perlin noise field ``(height, width)`` with ``cells`` gradient cells per axis.

    Examples:
        >>> perlin_noise(32, 32, (4, 4), torch.Generator().manual_seed(0)).shape
        torch.Size([32, 32])
    """
    cy, cx = cells
    angles = 2 * math.pi * torch.rand(cy + 1, cx + 1, generator=generator, device=device)
    grad_y, grad_x = torch.sin(angles), torch.cos(angles)
    ys = torch.arange(height, device=device) * (cy / height)
    xs = torch.arange(width, device=device) * (cx / width)
    y0, x0 = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> Tensor:
        iy, ix = (y0 + dy)[:, None], (x0 + dx)[None, :]
        return grad_y[iy, ix] * (fy - dy) + grad_x[iy, ix] * (fx - dx)

    def fade(t: Tensor) -> Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return top * (1 - v) + bottom * v


class PerlinBlobSynthesizer(Synthesizer):
    """Perlin-noise blobs (as in DRAEM): irregular smooth regions filled with a smooth texture.

    Per image: a Perlin field with ``2**k`` cells per axis (``k`` uniform in
    ``[min_scale, max_scale]``), thresholded at the quantile that keeps an area fraction
    ``U(min_area, max_area)``, gives the blob mask ``M``; a second Perlin field scaled to
    ``[-1, 1]`` is the texture ``t``, the same on every channel so grayscale stays grayscale;
    ``x' = (1 - b M) x + b M t`` with ``b ~ U(blend_min, blend_max)``.

    Args:
        min_scale: smallest log2 number of noise cells per axis.
        max_scale: largest log2 number of noise cells per axis.
        min_area: smallest blob area as a fraction of the image.
        max_area: largest blob area as a fraction of the image.
        blend_min: lower bound of the blend weight.
        blend_max: upper bound of the blend weight.

    Examples:
        >>> images = torch.zeros(2, 1, 32, 32)
        >>> out, masks = PerlinBlobSynthesizer()(images, torch.Generator().manual_seed(0))
        >>> bool(masks.any()), out.shape
        (True, torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        min_scale: int = 1,
        max_scale: int = 4,
        min_area: float = 0.02,
        max_area: float = 0.2,
        blend_min: float = 0.3,
        blend_max: float = 1.0,
    ) -> None:
        if not 0 <= min_scale <= max_scale <= 8:
            raise InputError(
                f"PerlinBlobSynthesizer: need 0 <= min_scale ({min_scale}) <= max_scale "
                f"({max_scale}) <= 8"
            )
        if not 0.0 < min_area <= max_area < 1.0:
            raise InputError(
                f"PerlinBlobSynthesizer: need 0 < min_area ({min_area}) <= max_area "
                f"({max_area}) < 1"
            )
        if not 0.0 <= blend_min <= blend_max <= 1.0:
            raise InputError(
                f"PerlinBlobSynthesizer: need 0 <= blend_min ({blend_min}) <= blend_max "
                f"({blend_max}) <= 1"
            )
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.min_area = min_area
        self.max_area = max_area
        self.blend_min = blend_min
        self.blend_max = blend_max

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_batch(images, "PerlinBlobSynthesizer")
        b, _, h, w = images.shape
        device = images.device
        scales = _uniform_int(self.min_scale, self.max_scale + 1, 2 * b, generator, device)
        fields, textures = [], []
        for i in range(b):
            for out, scale in ((fields, scales[2 * i]), (textures, scales[2 * i + 1])):
                cells = (2 ** int(scale), 2 ** int(scale))
                out.append(perlin_noise(h, w, cells, generator, device))
        noise = torch.stack(fields).flatten(1)
        area = _uniform(self.min_area, self.max_area, b, generator, device)
        keep = (area * h * w).ceil().long().clamp(1, h * w)
        threshold = noise.sort(dim=1).values.gather(1, (h * w - keep)[:, None])
        masks = (noise >= threshold).view(b, 1, h, w)
        texture = torch.stack(textures)
        low = texture.flatten(1).min(1).values[:, None, None]
        high = texture.flatten(1).max(1).values[:, None, None]
        texture = ((texture - low) / (high - low).clamp_min(1e-6) * 2 - 1).unsqueeze(1)
        beta = _uniform(self.blend_min, self.blend_max, b, generator, device)
        weight = beta[:, None, None, None] * masks.to(images.dtype)
        corrupted = (1 - weight) * images + weight * texture.to(images.dtype)
        return corrupted, masks
