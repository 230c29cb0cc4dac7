"""Trivial statistics of a film: what one number per image can say about acquisition.

On real radiographs the classes often differ in how the films were made as well as in the
finding: exposure (brightness), contrast, detector and reconstruction (sharpness, noise, fine
detail). Each statistic here is a single number per image that a scanner, a protocol or a
resizing step moves, and that a disease detector should not be reducible to. The shortcut audit
(`sagan_ad.evaluation.audit`) gives the AUROC of each on the very images a model is evaluated on,
and the matched subset (`sagan_ad.evaluation.matching`) pairs abnormal and normal films on all of
them.

The statistics are taken on the images as decoded at the evaluation size (for example 64 px),
before any intensity normalisation, in ``[0, 1]`` grey levels, over every channel:

- ``mean_intensity``: the mean grey level (exposure, the brightness of the film);
- ``contrast``: the standard deviation of the grey levels;
- ``centre_contrast``: the standard deviation of the central crop (half the height and half the
  width), which the film's borders, collimation and text do not reach;
- ``sharpness_vertical`` / ``sharpness_horizontal``: the mean absolute difference between
  vertically / horizontally adjacent pixels (edge strength: blur, detector resolution, resizing);
- ``high_frequency``: the root-mean-square of the film minus its 3x3 local mean (fine detail and
  noise, the energy a blur removes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sagan_ad.errors import InputError

STATISTICS: tuple[str, ...] = (
    "mean_intensity",
    "contrast",
    "centre_contrast",
    "sharpness_vertical",
    "sharpness_horizontal",
    "high_frequency",
)
"""The names of the columns of `image_statistics`, in order."""

WORDS: dict[str, tuple[str, str, str]] = {
    "mean_intensity": ("mean intensity", "brighter", "darker"),
    "contrast": ("global contrast", "more contrast", "less contrast"),
    "centre_contrast": ("centre-crop contrast", "more contrast", "less contrast"),
    "sharpness_vertical": ("vertical sharpness", "sharper", "blurrier"),
    "sharpness_horizontal": ("horizontal sharpness", "sharper", "blurrier"),
    "high_frequency": ("high-frequency energy", "more fine detail", "less fine detail"),
}
"""For each statistic: its name in sentences, and what a higher and a lower value mean."""

_CHUNK = 256


def describe_statistic(name: str, direction: float) -> str:
    """A statistic in words with its direction (+1: higher values are abnormal, -1: lower).

    Examples:
        >>> describe_statistic("sharpness_vertical", -1.0)
        'vertical sharpness (blurrier = abnormal)'
        >>> describe_statistic("mean_intensity", 1.0)
        'mean intensity (brighter = abnormal)'
    """
    label, higher, lower = WORDS[name]
    return f"{label} ({higher if direction > 0 else lower} = abnormal)"


def _statistics(planes: np.ndarray) -> np.ndarray:
    """The statistics of uint8 images ``(N, C, H, W)`` as float64 ``(N, 6)``."""
    count, height, width = planes.shape[0], planes.shape[2], planes.shape[3]
    x = planes.astype(np.float32) * np.float32(1 / 255)
    # The mean and standard deviation from exact integer sums: they round only once.
    grey = planes.reshape(count, -1).astype(np.int64)
    pixels = max(grey.shape[1], 1)
    mean = grey.sum(1) / pixels
    spread = np.sqrt(np.maximum(np.einsum("ij,ij->i", grey, grey) / pixels - mean**2, 0.0))
    top, left = height // 4, width // 4
    centre = x[..., top : max(height - top, top + 1), left : max(width - left, left + 1)]
    vertical = np.abs(np.diff(x, axis=2)).reshape(count, -1)
    horizontal = np.abs(np.diff(x, axis=3)).reshape(count, -1)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    local = sum(
        padded[..., dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)
    )
    detail = (x - local * np.float32(1 / 9)).reshape(count, -1)
    zero = np.zeros(count)
    return np.stack(
        [
            mean / 255.0,
            spread / 255.0,
            centre.reshape(count, -1).std(1, dtype=np.float64),
            vertical.mean(1, dtype=np.float64) if vertical.shape[1] else zero,
            horizontal.mean(1, dtype=np.float64) if horizontal.shape[1] else zero,
            np.sqrt(np.square(detail).mean(1, dtype=np.float64)),
        ],
        axis=1,
    )


def image_statistics(images: Tensor) -> Tensor:
    """The `STATISTICS` of uint8 images ``(N, C, H, W)``: ``(N, 6)`` float32, grey levels in
    ``[0, 1]`` (a statistic of a uniform image is 0 but for its mean).

    Examples:
        >>> flat = torch.full((1, 1, 8, 8), 51, dtype=torch.uint8)
        >>> [round(v, 3) for v in image_statistics(flat)[0].tolist()]
        [0.2, 0.0, 0.0, 0.0, 0.0, 0.0]
        >>> stripes = torch.tensor([0, 255] * 4, dtype=torch.uint8).repeat(8, 1).view(1, 1, 8, 8)
        >>> s = dict(zip(STATISTICS, image_statistics(stripes)[0].tolist()))
        >>> s["sharpness_horizontal"], s["sharpness_vertical"]
        (1.0, 0.0)
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise InputError(
            f"image_statistics takes uint8 images (N, C, H, W), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    planes = images.detach().cpu().numpy()
    # In chunks: a float copy of a few thousand 256 px films would take gigabytes.
    parts = [_statistics(planes[i : i + _CHUNK]) for i in range(0, len(planes), _CHUNK)]
    if not parts:
        return torch.zeros(0, len(STATISTICS))
    return torch.from_numpy(np.concatenate(parts)).float()
