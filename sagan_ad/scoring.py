"""Anomaly score and anomaly map from an image and its restoration."""

from __future__ import annotations

from torch import Tensor


def anomaly_map(images: Tensor, restored: Tensor) -> Tensor:
    """Per-pixel anomaly map ``|x - G(x)| / 2``, averaged over channels, shape ``(B, 1, H, W)``.

    Images live in ``[-1, 1]``, so the map lies in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> x = torch.zeros(1, 1, 2, 2)
        >>> anomaly_map(x, torch.ones(1, 1, 2, 2)).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if images.shape != restored.shape:
        raise ValueError(
            f"images {tuple(images.shape)} and restored {tuple(restored.shape)} differ in shape"
        )
    return (images - restored).abs().mean(dim=1, keepdim=True) / 2


def map_to_score(maps: Tensor) -> Tensor:
    """Image score from anomaly maps ``(B, 1, H, W)``: the mean over pixels (the paper's score).

    Examples:
        >>> import torch
        >>> map_to_score(torch.full((3, 1, 4, 4), 0.25)).tolist()
        [0.25, 0.25, 0.25]
    """
    return maps.mean(dim=(1, 2, 3))


def anomaly_score(images: Tensor, restored: Tensor) -> Tensor:
    """Image score ``mean |x - G(x)| / 2`` in ``[0, 1]``, shape ``(B,)``; higher = more abnormal.

    Examples:
        >>> import torch
        >>> anomaly_score(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)).tolist()
        [0.5, 0.5]
    """
    return map_to_score(anomaly_map(images, restored))
