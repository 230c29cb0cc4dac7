"""Augmentation of the training streams: intensity (brightness, contrast, gamma) and
acquisition (blur, sharpening, JPEG re-compression, noise, resolution).

The changes (albumentations) are drawn per image from the stream position (`stream_seed`), so
that a resumed run, and any number of DataLoader workers, draw exactly the augmentations of an
uninterrupted run. Validation, test and predict images are never augmented; the fixed per-image
normalisation of every stage is `sagan_ad.data.images.intensity.IntensityNormalization`.

Why acquisition: when the known normals and the abnormal films of the unlabeled set come from
different machines or protocols, the critic can tell them apart by sharpness or noise alone,
and the generator then learns to change sharpness instead of removing the finding (on the
pediatric films of docs/results.md the normal films are sharper, and sharpness alone separates
the classes at 0.92). Drawing blur, sharpening, noise, JPEG and resolution changes on every
training film makes those cues useless to the critic.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.settings import from_mapping

if TYPE_CHECKING:
    import albumentations as A

_RANGES = {"gamma", "blur", "sharpen", "jpeg", "noise", "downscale"}


def _range(value: Any, name: str, low: float, high: float) -> tuple[float, float] | None:
    """A ``(low, high)`` setting checked against its allowed interval (None: off)."""
    if value is None:
        return None
    where = f"data.augment.{name}"
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}={value!r}: give a range [low, high]") from None
    if not low <= first <= second <= high:
        raise InputError(f"{where}={[first, second]}: need {low:g} <= low <= high <= {high:g}")
    return first, second


@dataclass(frozen=True)
class Augmentation:
    """Random intensity and acquisition changes of the training images (albumentations), one
    draw per image.

    Each transform is applied with probability ``p``:

    - ``brightness``: a shift of every pixel by ``U(-brightness, brightness)`` of the full range
      (``A.RandomBrightnessContrast``, additive): the film's mean changes, its contrast does not;
    - ``contrast``: a gain of ``1 + U(-contrast, contrast)`` on the grey levels;
    - ``gamma``: ``x ** g`` on ``[0, 1]`` grey levels with ``g`` drawn from ``gamma``
      (``A.RandomGamma``): a monotone tone change that moves the mid-tones, keeps black and white
      and the order of the grey levels;
    - ``blur``: a Gaussian blur with its sigma, in pixels of the training size, drawn from
      ``blur`` (``A.GaussianBlur``);
    - ``sharpen``: unsharp-mask sharpening with a strength drawn from ``sharpen`` in ``[0, 1]``
      (``A.Sharpen``, 0 = none, 1 = the full Laplacian kernel);
    - ``jpeg``: JPEG re-compression at a quality drawn from ``jpeg`` in ``[1, 100]``
      (``A.ImageCompression``);
    - ``noise``: additive Gaussian noise whose standard deviation, a fraction of the full range,
      is drawn from ``noise`` (``A.GaussNoise``);
    - ``downscale``: down- and up-sampling by a factor drawn from ``downscale`` in ``(0, 1]``
      (``A.Downscale``, area down, linear up): the resolution of another detector.

    Applied, in that order, to the known normals and the unlabeled images of the training
    streams, never to validation, test or predict images. With all of them off, nothing is
    applied.

    Args:
        brightness: largest shift, a fraction of the full range, in ``[0, 1]``.
        contrast: largest relative gain change, in ``[0, 1)``.
        gamma: ``(low, high)`` range of the exponent, ``0 < low <= high``; None for no gamma.
        blur: ``(low, high)`` sigma range in pixels, in ``[0.1, 10]``; None for no blur.
        sharpen: ``(low, high)`` strength range in ``[0, 1]``; None for no sharpening.
        jpeg: ``(low, high)`` quality range in ``[1, 100]``; None for no re-compression.
        noise: ``(low, high)`` noise standard deviation range in ``[0, 1]``; None for none.
        downscale: ``(low, high)`` scale range in ``[0.1, 1]``; None for no resampling.
        p: probability of each transform per image.

    Examples:
        >>> augment = Augmentation(brightness=0.2, gamma=(0.7, 1.4), blur=(0.3, 1.0))
        >>> batch = torch.full((2, 1, 8, 8), 100, dtype=torch.uint8)
        >>> torch.equal(augment(batch, seed=3), augment(batch, seed=3))
        True
        >>> Augmentation.parse({"jpeg": [60, 95], "noise": [0, 0.02]}).describe()
        'jpeg=60-95, noise=0-0.02'
    """

    brightness: float = 0.0
    contrast: float = 0.0
    gamma: tuple[float, float] | None = None
    blur: tuple[float, float] | None = None
    sharpen: tuple[float, float] | None = None
    jpeg: tuple[float, float] | None = None
    noise: tuple[float, float] | None = None
    downscale: tuple[float, float] | None = None
    p: float = 1.0

    def __post_init__(self) -> None:
        where = "data.augment"
        if not 0.0 <= self.brightness <= 1.0:
            raise InputError(f"{where}.brightness={self.brightness}: must be in [0, 1]")
        if not 0.0 <= self.contrast < 1.0:
            raise InputError(f"{where}.contrast={self.contrast}: must be in [0, 1)")
        if self.gamma is not None:
            low, high = (float(g) for g in self.gamma)
            if not 0.0 < low <= high:
                raise InputError(f"{where}.gamma={tuple(self.gamma)}: need 0 < low <= high")
            object.__setattr__(self, "gamma", (low, high))
        limits = {
            "blur": (0.1, 10.0),
            "sharpen": (0.0, 1.0),
            "jpeg": (1.0, 100.0),
            "noise": (0.0, 1.0),
            "downscale": (0.1, 1.0),
        }
        for name, (low, high) in limits.items():
            object.__setattr__(self, name, _range(getattr(self, name), name, low, high))
        if not 0.0 <= self.p <= 1.0:
            raise InputError(f"{where}.p={self.p}: must be in [0, 1]")

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | Augmentation | None) -> Augmentation | None:
        """An augmentation from a mapping of its fields (or itself); None when nothing is on.

        Examples:
            >>> Augmentation.parse({"brightness": 0.2}).describe()
            'brightness=0.2'
            >>> Augmentation.parse({}) is None
            True
        """
        if spec is None:
            return None
        if isinstance(spec, Mapping):
            spec = from_mapping(cls, spec, "data.augment")
        if not isinstance(spec, cls):
            raise InputError(
                f"data.augment={spec!r}: give a mapping such as {{brightness: 0.2, gamma: [0.7, "
                "1.4], blur: [0.3, 1.0]}"
            )
        return spec if spec.active else None

    @property
    def active(self) -> bool:
        """Whether any transform can change an image."""
        ranges = any(getattr(self, name) is not None for name in _RANGES)
        return self.p > 0 and (self.brightness > 0 or self.contrast > 0 or ranges)

    def describe(self) -> str:
        """The active settings as one short string."""
        parts = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "p" or value is None or value == 0.0:
                continue
            text = f"{value[0]:g}-{value[1]:g}" if isinstance(value, tuple) else f"{value:g}"
            parts.append(f"{spec.name}={text}")
        if self.p < 1:
            parts.append(f"p={self.p:g}")
        return ", ".join(parts) or "none"

    @functools.cached_property
    def compose(self) -> A.Compose:
        """The albumentations pipeline (seeded per call by `__call__`)."""
        # Imported here: albumentations takes a noticeable share of `import sagan_ad`.
        import albumentations as A
        import cv2

        transforms: list[A.BasicTransform] = []
        if self.brightness > 0 or self.contrast > 0:
            transforms.append(
                A.RandomBrightnessContrast(
                    brightness_limit=(-self.brightness, self.brightness),
                    contrast_limit=(-self.contrast, self.contrast),
                    brightness_by_max=True,
                    p=self.p,
                )
            )
        if self.gamma is not None:
            # albumentations takes the exponent in percent.
            limits = (100.0 * self.gamma[0], 100.0 * self.gamma[1])
            transforms.append(A.RandomGamma(gamma_limit=limits, p=self.p))
        if self.blur is not None:
            transforms.append(A.GaussianBlur(blur_limit=0, sigma_limit=self.blur, p=self.p))
        if self.sharpen is not None:
            transforms.append(A.Sharpen(alpha=self.sharpen, lightness=(1.0, 1.0), p=self.p))
        if self.jpeg is not None:
            quality = (round(self.jpeg[0]), round(self.jpeg[1]))
            transforms.append(A.ImageCompression(quality_range=quality, p=self.p))
        if self.noise is not None:
            transforms.append(A.GaussNoise(std_range=self.noise, p=self.p))
        if self.downscale is not None:
            pair = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
            transforms.append(
                A.Downscale(scale_range=self.downscale, interpolation_pair=pair, p=self.p)
            )
        return A.Compose(transforms, seed=0)

    def __call__(self, images: Tensor, seed: int) -> Tensor:
        """Augment uint8 images ``(B, C, H, W)``; the result depends only on them and ``seed``."""
        compose = self.compose
        compose.set_random_seed(int(seed))
        planes = images.permute(0, 2, 3, 1).numpy()
        out = np.stack([compose(image=np.ascontiguousarray(plane))["image"] for plane in planes])
        return torch.from_numpy(out.reshape(planes.shape)).permute(0, 3, 1, 2).contiguous()


IntensityAugmentation = Augmentation
"""The name of `Augmentation` before it took acquisition changes too (kept for existing code)."""


def stream_seed(key: Sequence[int]) -> int:
    """A 32-bit seed from a stream position (base seed, rank, stream, batch index).

    Examples:
        >>> stream_seed([0, 0, 1, 5]) == stream_seed([0, 0, 1, 5]) != stream_seed([0, 0, 1, 6])
        True
    """
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])
