"""What a SAGAN scores: float images ``(B, C, S, S)`` with values in ``[-1, 1]``.

The score is documented to lie in ``[0, 1]`` only for inputs in that range; an image in
``[0, 255]`` would score around 100 and an image of another size would be scored by a network that
never saw one, so both are refused rather than scored. `check_images` is the eager check of
`sagan_ad.SAGAN`; `images_in_range` is its in-graph counterpart, which the exported scorers use to
turn the score and map of an out-of-range image into NaN (an exported graph cannot raise on
values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sagan_ad.errors import InputError

INPUT_RANGE = (-1.0, 1.0)
"""The value range of the images a SAGAN takes (``sagan_ad.data.to_model_range`` maps uint8 to
it)."""

RANGE_TOLERANCE = 0.01
"""How far outside `INPUT_RANGE` a value may lie (rounding of resized or re-normalised images)."""

_CONVERT = "convert uint8 images with sagan_ad.data.to_model_range(images)"


def check_images(images: Tensor, channels: int, size: int, weights: Tensor | None = None) -> None:
    """Refuse what a SAGAN of ``channels`` channels and side ``size`` cannot score.

    Raises ``ValueError`` naming the expected and the received shape, dtype or value range: a
    tensor of another rank, channel count or size; an integer or boolean tensor (uint8 images
    must be converted to float in ``[-1, 1]``); values outside ``[-1, 1]`` (beyond
    `RANGE_TOLERANCE`), NaN or infinity. Reading the range costs one device synchronisation.
    Given the model's ``weights`` (one of its parameters), a sparse tensor, a tensor on another
    device, or of another float dtype outside autocast, is refused too: torch's own message for
    these ("expected scalar type Double but found Float") says neither what nor how to convert.

    Examples:
        >>> check_images(torch.zeros(2, 1, 32, 32), channels=1, size=32)
        >>> check_images(torch.full((1, 1, 32, 32), 255.0), channels=1, size=32)
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: images must lie in [-1, 1] (got values from 255 to 255): ...
    """
    if not isinstance(images, Tensor):
        raise InputError(
            f"images must be a torch.Tensor of shape (B, {channels}, {size}, {size}), got "
            f"{type(images).__name__}"
        )
    expected = f"(B, {channels}, {size}, {size})"
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise InputError(
            f"images must have shape {expected} (the model's in_channels and image_size), got "
            f"{tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise InputError(f"images must be float in [-1, 1], got dtype {images.dtype}: {_CONVERT}")
    if weights is not None:
        _check_like(images, weights)
    if images.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(images.detach().float()))
    if math.isnan(low) or math.isnan(high):
        raise InputError("images contain NaN values: a SAGAN scores finite images in [-1, 1]")
    if not (INPUT_RANGE[0] - RANGE_TOLERANCE <= low and high <= INPUT_RANGE[1] + RANGE_TOLERANCE):
        raise InputError(
            f"images must lie in [-1, 1] (got values from {low:g} to {high:g}): "
            f"{_CONVERT}, or rescale float images to [-1, 1]"
        )


def _check_like(images: Tensor, weights: Tensor) -> None:
    """Refuse images the model's ``weights`` cannot be applied to (layout, device, dtype)."""
    if images.layout != torch.strided:
        raise InputError(
            f"images must be a dense tensor, got layout {images.layout}: convert with "
            "images.to_dense()"
        )
    if images.device != weights.device:
        raise InputError(
            f"images are on {images.device}, the model on {weights.device}: move them with "
            "images.to(model.device)"
        )
    if images.dtype != weights.dtype and not _autocast(images.device.type):
        raise InputError(
            f"images must be {weights.dtype} like the model's weights, got {images.dtype}: "
            f"convert with images.to({weights.dtype})"
        )


def _autocast(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (it casts the images for the weights)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        # Before torch 2.4 the check took no device type and covered CUDA only.
        cpu = device_type == "cpu" and torch.is_autocast_cpu_enabled()
        return cpu or (device_type == "cuda" and torch.is_autocast_enabled())


def images_in_range(images: Tensor) -> Tensor:
    """Per image, whether every value is finite and inside `INPUT_RANGE` (with the tolerance);
    shape ``(B,)``, traceable (no Python branch on values).

    Examples:
        >>> images = torch.zeros(3, 1, 4, 4)
        >>> images[1, 0, 0, 0], images[2, 0, 0, 0] = 255.0, float("nan")
        >>> images_in_range(images).tolist()
        [True, False, False]
    """
    low, high = INPUT_RANGE[0] - RANGE_TOLERANCE, INPUT_RANGE[1] + RANGE_TOLERANCE
    # NaN fails both comparisons, so it is out of range too.
    return ((images >= low) & (images <= high)).flatten(1).all(dim=1)
