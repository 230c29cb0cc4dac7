"""Anomaly score and anomaly map from an image and its restoration."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sagan_ad.errors import InputError


def anomaly_map(images: Tensor, restored: Tensor, residual_sigma: float = 0.0) -> Tensor:
    """Per-pixel anomaly map ``|x - G(x)| / 2``, averaged over channels, shape ``(B, 1, H, W)``.

    Images live in ``[-1, 1]``, so the map lies in ``[0, 1]``. With ``residual_sigma`` the
    signed residual ``x - G(x)`` is low-passed by a Gaussian of that many pixels before its
    absolute value: fine detail the generator does not reproduce (noise, sharp edges: how a film
    was acquired) averages out, while a change the size of a finding (an opacity the generator
    removed) stays.

    Examples:
        >>> import torch
        >>> x = torch.zeros(1, 1, 2, 2)
        >>> anomaly_map(x, torch.ones(1, 1, 2, 2)).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
        >>> checker = torch.tensor([[1.0, -1.0] * 4, [-1.0, 1.0] * 4] * 4).view(1, 1, 8, 8)
        >>> float(anomaly_map(checker, torch.zeros(1, 1, 8, 8), residual_sigma=2.0).max()) < 0.1
        True
    """
    if images.shape != restored.shape:
        raise InputError(
            f"images {tuple(images.shape)} and restored {tuple(restored.shape)} differ in shape"
        )
    residual = images - restored
    if residual_sigma:
        residual = smooth_map(residual, residual_sigma)
    return residual.abs().mean(dim=1, keepdim=True) / 2


def score_region(maps: Tensor, border: float = 0.0) -> Tensor:
    """The part of anomaly maps ``(B, 1, H, W)`` that scores: ``border`` of the height and of
    the width left out at each edge (0: the whole map).

    On a chest film the edges hold the shoulders, the collimation and burnt-in text, which the
    generator restores worst and which are not where a lung finding is; leaving them out scores
    the lung fields.

    Examples:
        >>> import torch
        >>> score_region(torch.zeros(1, 1, 10, 20), border=0.2).shape
        torch.Size([1, 1, 6, 12])
    """
    if not 0.0 <= border < 0.5:
        raise InputError(f"border={border}: must be in [0, 0.5)")
    height, width = maps.shape[-2:]
    top, left = int(border * height), int(border * width)
    return maps[..., top : height - top, left : width - left]


def map_to_score(maps: Tensor, top_fraction: float = 1.0) -> Tensor:
    """Image score from anomaly maps ``(B, 1, H, W)``: the mean of the largest ``top_fraction``
    of each map's values (at least one).

    ``1.0`` (default) is the mean over all pixels, the paper's score. A small fraction scores
    a local finding by its own pixels instead of diluting it over the whole image; smoothing the
    map first (`smooth_map`) keeps single noisy pixels from filling the top.

    Examples:
        >>> import torch
        >>> map_to_score(torch.full((3, 1, 4, 4), 0.25)).tolist()
        [0.25, 0.25, 0.25]
        >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 0, :2] = 1.0
        >>> map_to_score(m).item(), map_to_score(m, top_fraction=0.125).item()
        (0.125, 1.0)
    """
    if not 0.0 < top_fraction <= 1.0:
        raise InputError(f"top_fraction={top_fraction}: must be in (0, 1]")
    flat = maps.flatten(1)
    if top_fraction == 1.0:
        return flat.mean(dim=1)
    k = max(1, math.ceil(top_fraction * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


def anomaly_score(images: Tensor, restored: Tensor) -> Tensor:
    """Image score ``mean |x - G(x)| / 2`` in ``[0, 1]``, shape ``(B,)``; higher = more abnormal.

    Examples:
        >>> import torch
        >>> anomaly_score(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)).tolist()
        [0.5, 0.5]
    """
    return map_to_score(anomaly_map(images, restored))


def smooth_map(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of anomaly maps ``(B, 1, H, W)`` (reflecting borders); ``sigma`` in
    pixels, 0 returns ``maps`` unchanged.

    Single-pixel restoration noise is spread out and lesion-sized blobs stand out, which helps
    the pointing game and the readability of heat maps.

    Examples:
        >>> import torch
        >>> m = torch.zeros(1, 1, 9, 9); m[0, 0, 4, 4] = 1.0
        >>> s = smooth_map(m, 1.0)
        >>> round(float(s.sum()), 4), bool(s[0, 0, 4, 4] < 1)
        (1.0, True)
    """
    if sigma < 0:
        raise InputError(f"sigma={sigma}: must be >= 0")
    if sigma == 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = maps.shape[1]
    padded = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def score_and_map(
    images: Tensor,
    restored: Tensor,
    map_sigma: float = 0.0,
    top_fraction: float = 1.0,
    residual_sigma: float = 0.0,
    border: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Image scores ``(B,)`` and anomaly maps ``(B, 1, H, W)`` as `sagan_ad.SAGAN` computes them:
    the map of the (``residual_sigma``-low-passed) residual, smoothed with ``map_sigma``; the
    score the mean of the largest ``top_fraction`` of its values inside the `score_region` of
    ``border``.

    Examples:
        >>> import torch
        >>> scores, maps = score_and_map(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
        >>> scores.tolist(), maps.shape
        ([0.5, 0.5], torch.Size([2, 1, 4, 4]))
    """
    maps = smooth_map(anomaly_map(images, restored, residual_sigma), map_sigma)
    return map_to_score(score_region(maps, border), top_fraction), maps
