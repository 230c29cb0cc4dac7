"""Built-in synthetic data: procedural chest-radiograph phantoms with lesion-like anomalies."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sagan_ad.data.images.lesions import add_lesions, check_range
from sagan_ad.data.images.phantoms import make_chest_phantoms
from sagan_ad.data.images.sets import ImageSet, SplitData
from sagan_ad.data.modules.base import AnomalyDataModule
from sagan_ad.data.splits.split import holdout_indices, unlabeled_counts
from sagan_ad.errors import InputError


class SyntheticCXRDataModule(AnomalyDataModule):
    """A ready-made data set that needs no files: chest-radiograph-like phantoms.

    Known normals and the normal part of the unlabeled set are phantoms; abnormal images (in the
    unlabeled set at ``anomaly_ratio`` and in half of the test set) carry 1-2 lesion-like blobs of
    varied size, contrast and position inside the lungs, deliberately unlike the square patches of
    the training synthesizer. Everything is generated from ``seed``.

    The other arguments are those of
    [`AnomalyDataModule`][sagan_ad.data.modules.base.AnomalyDataModule],
    passed on as ``**kwargs``: ``image_size`` is the side of the generated images (at least 32),
    ``in_channels`` 1 or 3 (the grey phantom repeated), ``seed`` also seeds the phantoms, and
    ``split`` takes ``val_fraction``, ``anomaly_ratio`` (the fraction of abnormal images in the
    unlabeled set) and ``unlabeled_size`` (default: ``num_known_normal``).

    Args:
        num_known_normal: known-normal training images (before the validation hold-out).
        num_test: test images, half normal and half abnormal.
        lesion_radius: ``(low, high)`` lesion radius as a fraction of the image side (see
            `sagan_ad.data.images.lesions.add_lesions`). The default, 10-25% of the side, is larger
            than ``add_lesions``' own (4-15%), so that the quickstart's narrow network finds
            most lesions within its few-minute budget; lower both ranges for a harder task.
        lesion_contrast: ``(low, high)`` peak added brightness of a lesion in grey levels
            (default 50-110; ``add_lesions``' own is 25-90).
        validation: ``"lesions"`` (default): the held-out ``val_fraction`` of the known normals
            and as many fresh phantoms with lesions, drawn like the test set but never trained
            or tested on, so that ``val/AUROC`` (hence the best checkpoint) measures the task.
            ``"pseudo"``: those normals and their pseudo anomalies from ``val_synthesizer``, as
            for data sets without labelled validation; on these phantoms SAGAN's patch blend is
            nearly invisible and ``val/AUROC`` stays near 0.5.
        **kwargs: the arguments of `AnomalyDataModule`.

    Examples:
        >>> dm = SyntheticCXRDataModule(num_known_normal=20, num_test=10, image_size=32)
        >>> dm.setup()
        >>> dm.summary()["test/abnormal"]
        5
    """

    split_options = ("val_fraction", "anomaly_ratio", "unlabeled_size")
    split_why = "the phantoms are generated, not drawn from files"

    def __init__(
        self,
        num_known_normal: int = 400,
        num_test: int = 200,
        lesion_radius: tuple[float, float] = (0.1, 0.25),
        lesion_contrast: tuple[float, float] = (50.0, 110.0),
        validation: Literal["lesions", "pseudo"] = "lesions",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_known_normal < 2:
            raise InputError(f"num_known_normal={num_known_normal}: must be >= 2")
        if num_test < 0:
            raise InputError(f"num_test={num_test}: must be >= 0")
        if validation not in ("lesions", "pseudo"):
            raise InputError(f"validation={validation!r}: must be 'lesions' or 'pseudo'")
        self.validation = validation
        self.num_known_normal = num_known_normal
        self.unlabeled_size = self.split.unlabeled_size or num_known_normal
        self.n_unlabeled_abnormal, self.n_unlabeled_normal = unlabeled_counts(
            self.unlabeled_size, self.split.anomaly_ratio
        )
        self.num_test = num_test
        self.lesion_radius = check_range("lesion_radius", lesion_radius, 0.25)
        self.lesion_contrast = check_range("lesion_contrast", lesion_contrast, 255.0)

    def _images(
        self, normal: int, abnormal: int, stream: int, prefix: str
    ) -> tuple[ImageSet, Tensor]:
        """``normal`` phantoms then ``abnormal`` lesioned ones, with lesion masks (N, 1, H, W)."""
        # One random stream per part, so changing one part's size leaves the others unchanged.
        rng = np.random.default_rng([self.seed, stream])
        phantoms = make_chest_phantoms(normal + abnormal, self.image_size, rng)
        masks = np.zeros(phantoms.shape, dtype=bool)
        if abnormal:
            phantoms[normal:], masks[normal:] = add_lesions(
                phantoms[normal:], rng, radius=self.lesion_radius, contrast=self.lesion_contrast
            )
        images = torch.from_numpy(phantoms).unsqueeze(1).expand(-1, self.in_channels, -1, -1)
        labels = [0] * normal + [1] * abnormal
        names = [f"{prefix}_{i:05d}" for i in range(normal + abnormal)]
        return ImageSet(images.contiguous(), labels, names), torch.from_numpy(masks).unsqueeze(1)

    def load(self) -> SplitData:
        # The lesion masks are known, so pixel-level metrics (val/ and test/pixel_AUROC, AUPRO)
        # are computed on real lesions; the model reads them as ``<stage>_masks``.
        known_normal, _ = self._images(self.num_known_normal, 0, 0, "known_normal")
        val = None
        if self.validation == "lesions" and self.split.val_fraction > 0:
            # The same normals that the pseudo-anomaly validation would hold out.
            keep, held = holdout_indices(self.num_known_normal, self.split.val_fraction, self.seed)
            val_normal = known_normal.subset(held)
            lesioned, lesion_masks = self._images(0, len(held), 3, "val")
            known_normal = known_normal.subset(keep)
            val = ImageSet(
                torch.cat([val_normal.images, lesioned.images]),
                val_normal.labels + lesioned.labels,
                val_normal.names + lesioned.names,
            )
            self.val_masks = torch.cat([torch.zeros_like(lesion_masks), lesion_masks])
        test = None
        if self.num_test:
            test_abnormal = self.num_test // 2
            test, self.test_masks = self._images(
                self.num_test - test_abnormal, test_abnormal, 2, "test"
            )
        unlabeled, _ = self._images(
            self.n_unlabeled_normal, self.n_unlabeled_abnormal, 1, "unlabeled"
        )
        return SplitData(known_normal=known_normal, unlabeled=unlabeled, test=test, val=val)
