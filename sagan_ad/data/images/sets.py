"""Decoded images in memory: a labelled set (`ImageSet`) and the sets of a split (`SplitData`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.image_statistics import image_statistics


@dataclass
class ImageSet:
    """Images in memory with labels (1 = abnormal, 0 = normal, -1 = unknown) and names.

    Attributes:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: one label per image.
        names: one name per image (file name or generated id), used in outputs.
        metadata: optional per-image columns (for example ``{"view": "PA", "sex": "F"}``),
            carried to outputs and used for subgroup metrics.
        boxes: optional per-image ground-truth boxes, float arrays ``(k, 4)`` of
            ``x0, y0, x1, y1`` in the original image's pixel coordinates.
        original_sizes: optional per-image ``(height, width)`` of the original image, the frame
            of ``boxes`` and of full-resolution outputs.
        decoded_stats: optional ``(N, K)`` float trivial statistics of each image as decoded
            (the columns of `sagan_ad.image_statistics.STATISTICS`, or its first ``K``: mean and
            standard deviation at least), taken before any intensity normalisation: what the
            shortcut audit compares the model with; see `statistics`.
    """

    images: Tensor
    labels: list[int]
    names: list[str]
    metadata: list[dict[str, str]] | None = None
    boxes: list[np.ndarray] | None = None
    original_sizes: list[tuple[int, int]] | None = None
    decoded_stats: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise InputError(
                f"ImageSet.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if not len(self.images) == len(self.labels) == len(self.names):
            raise InputError(
                f"ImageSet: {len(self.images)} images, {len(self.labels)} labels and "
                f"{len(self.names)} names must match"
            )
        for field_name in ("metadata", "boxes", "original_sizes", "decoded_stats"):
            values = getattr(self, field_name)
            if values is not None and len(values) != len(self.images):
                raise InputError(
                    f"ImageSet.{field_name} has {len(values)} entries for {len(self.images)} images"
                )

    def __len__(self) -> int:
        return len(self.images)

    def statistics(self) -> Tensor:
        """``decoded_stats``, or the statistics of ``images`` as held when it was never set.

        Examples:
            >>> s = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 1], ["a", "b"])
            >>> s.statistics().shape  # one column per name of STATISTICS
            torch.Size([2, 6])
        """
        return image_statistics(self.images) if self.decoded_stats is None else self.decoded_stats

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)

        def pick(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in indices]

        return ImageSet(
            self.images[index],
            pick(self.labels),
            pick(self.names),
            pick(self.metadata),
            pick(self.boxes),
            pick(self.original_sizes),
            None if self.decoded_stats is None else self.decoded_stats[index],
        )


@dataclass
class SplitData:
    """What a DataModule's `AnomalyDataModule.load` returns.

    Attributes:
        known_normal: the known-normal training images.
        unlabeled: the unlabeled training mixture (its labels are used only for reporting).
        test: the labelled test set, if any.
        val: a labelled validation set, if the source provides one; otherwise the DataModule
            holds out ``val_fraction`` of the known normals and adds pseudo anomalies.
    """

    known_normal: ImageSet
    unlabeled: ImageSet
    test: ImageSet | None = None
    val: ImageSet | None = None
