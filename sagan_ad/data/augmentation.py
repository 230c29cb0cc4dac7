"""Intensity augmentation of the training streams: random brightness, contrast and gamma.

The changes (albumentations) are drawn per image from the stream position (`stream_seed`), so
that a resumed run, and any number of DataLoader workers, draw exactly the augmentations of an
uninterrupted run. Validation, test and predict images are never augmented; the fixed per-image
normalisation of every stage is `sagan_ad.data.intensity.IntensityNormalization`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sagan_ad.settings import from_mapping

if TYPE_CHECKING:
    import albumentations as A


@dataclass(frozen=True)
class IntensityAugmentation:
    """Random intensity changes of the training images (albumentations), one draw per image.

    Each transform is applied with probability ``p``:

    - ``brightness``: a shift of every pixel by ``U(-brightness, brightness)`` of the full range
      (``A.RandomBrightnessContrast``, additive): the film's mean changes, its contrast does not;
    - ``contrast``: a gain of ``1 + U(-contrast, contrast)`` on the grey levels;
    - ``gamma``: ``x ** g`` on ``[0, 1]`` grey levels with ``g`` drawn from ``gamma``
      (``A.RandomGamma``): a monotone tone change that moves the mid-tones, keeps black and white
      and the order of the grey levels.

    Applied to the known normals and the unlabeled images of the training streams, never to
    validation, test or predict images. With all three off, nothing is applied.

    Args:
        brightness: largest shift, a fraction of the full range, in ``[0, 1]``.
        contrast: largest relative gain change, in ``[0, 1)``.
        gamma: ``(low, high)`` range of the exponent, ``0 < low <= high``; None for no gamma.
        p: probability of each transform per image.

    Examples:
        >>> augment = IntensityAugmentation(brightness=0.2, gamma=(0.7, 1.4))
        >>> batch = torch.full((2, 1, 8, 8), 100, dtype=torch.uint8)
        >>> torch.equal(augment(batch, seed=3), augment(batch, seed=3))
        True
    """

    brightness: float = 0.0
    contrast: float = 0.0
    gamma: tuple[float, float] | None = None
    p: float = 1.0

    def __post_init__(self) -> None:
        where = "data.augment"
        if not 0.0 <= self.brightness <= 1.0:
            raise ValueError(f"{where}.brightness={self.brightness}: must be in [0, 1]")
        if not 0.0 <= self.contrast < 1.0:
            raise ValueError(f"{where}.contrast={self.contrast}: must be in [0, 1)")
        if self.gamma is not None:
            low, high = (float(g) for g in self.gamma)
            if not 0.0 < low <= high:
                raise ValueError(f"{where}.gamma={tuple(self.gamma)}: need 0 < low <= high")
            object.__setattr__(self, "gamma", (low, high))
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{where}.p={self.p}: must be in [0, 1]")

    @classmethod
    def parse(
        cls, spec: Mapping[str, Any] | IntensityAugmentation | None
    ) -> IntensityAugmentation | None:
        """An augmentation from a mapping of its fields (or itself); None when nothing is on.

        Examples:
            >>> IntensityAugmentation.parse({"brightness": 0.2}).describe()
            'brightness=0.2'
            >>> IntensityAugmentation.parse({}) is None
            True
        """
        if spec is None:
            return None
        if isinstance(spec, Mapping):
            spec = from_mapping(cls, spec, "data.augment")
        if not isinstance(spec, cls):
            raise ValueError(
                f"data.augment={spec!r}: give a mapping such as {{brightness: 0.2, gamma: [0.7, "
                "1.4]}"
            )
        return spec if spec.active else None

    @property
    def active(self) -> bool:
        """Whether any transform can change an image."""
        return self.p > 0 and (self.brightness > 0 or self.contrast > 0 or self.gamma is not None)

    def describe(self) -> str:
        """The active settings as one short string."""
        parts = [f"brightness={self.brightness:g}"] * (self.brightness > 0)
        parts += [f"contrast={self.contrast:g}"] * (self.contrast > 0)
        if self.gamma is not None:
            parts.append(f"gamma={self.gamma[0]:g}-{self.gamma[1]:g}")
        if self.p < 1:
            parts.append(f"p={self.p:g}")
        return ", ".join(parts) or "none"

    @functools.cached_property
    def compose(self) -> A.Compose:
        """The albumentations pipeline (seeded per call by `__call__`)."""
        # Imported here: albumentations takes a noticeable share of `import sagan_ad`.
        import albumentations as A

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
        return A.Compose(transforms, seed=0)

    def __call__(self, images: Tensor, seed: int) -> Tensor:
        """Augment uint8 images ``(B, C, H, W)``; the result depends only on them and ``seed``."""
        compose = self.compose
        compose.set_random_seed(int(seed))
        planes = images.permute(0, 2, 3, 1).numpy()
        out = np.stack([compose(image=np.ascontiguousarray(plane))["image"] for plane in planes])
        return torch.from_numpy(out.reshape(planes.shape)).permute(0, 3, 1, 2).contiguous()


def stream_seed(key: Sequence[int]) -> int:
    """A 32-bit seed from a stream position (base seed, rank, stream, batch index).

    Examples:
        >>> stream_seed([0, 0, 1, 5]) == stream_seed([0, 0, 1, 5]) != stream_seed([0, 0, 1, 6])
        True
    """
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])
