"""Common machinery of the sagan_ad DataModules: streams, loaders, the validation split."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from sagan_ad.data.images.augmentation import Augmentation
from sagan_ad.data.images.intensity import IntensityNormalization
from sagan_ad.data.images.sets import ImageSet, SplitData
from sagan_ad.data.modules.datasets import (
    DeviceTrainingStream,
    LabelledImages,
    TrainingStream,
    collate_evaluation,
    to_model_range,
)
from sagan_ad.data.setting_groups import check_numbers
from sagan_ad.data.splits.settings import SplitSettings
from sagan_ad.data.splits.split import holdout_indices
from sagan_ad.errors import InputError
from sagan_ad.image_statistics import image_statistics
from sagan_ad.synthesis import PatchBlendSynthesizer, Synthesizer


class AnomalyDataModule(L.LightningDataModule):
    """Base class of the sagan_ad DataModules (subclass and implement `load`).

    It holds every image in memory as uint8 (a 64 px data set of thousands of images is a few MB),
    serves training as an endless stream of ``{"normal", "unlabeled"}`` batches with independent
    seeded shuffles (started at the model's ``iteration``, so a resumed run sees the same
    batches as an uninterrupted one), and converts batches to float ``[-1, 1]`` on the target
    device. Without a labelled validation set it holds out ``split.val_fraction`` of the known
    normals and builds the validation set from them: each held-out normal (label 0) and a
    pseudo-anomalous copy of it (label 1) made once by ``val_synthesizer`` with a fixed seed, so
    the validation metric is comparable across runs and never touches the test set.

    Batches: training ``{"normal": (B, C, H, W), "unlabeled": (B, C, H, W)}``; evaluation
    ``{"image", "label", "index", "name", "statistics"}`` and, where the data know them,
    ``"mask"``, ``"boxes"``, ``"original_size"`` and ``"metadata"`` (`LabelledImages`); images
    float in ``[-1, 1]`` after transfer.

    Args:
        image_size: side of the square images fed to the model.
        in_channels: 1 (grayscale) or 3 (RGB).
        batch_size: known normals and unlabeled images per training batch (each).
        eval_batch_size: batch size of validation/test/predict loaders (default: ``batch_size``).
        num_workers: DataLoader workers (the data are in memory: 0 is usually fastest).
        split: how the images are assigned to training, validation and test
            (`sagan_ad.data.SplitSettings`; YAML ``split: {val_fraction: 0.2}``, command line
            ``--data.split.val_fraction 0.2``, or a mapping of its fields); None: the defaults.
            Each DataModule takes the settings that mean something for its data
            (``split_options``; here ``val_fraction``, the fraction of known normals held out
            for validation when the source has no labelled validation set, 0 for none) and
            refuses the others by name.
        val_synthesizer: makes the validation pseudo anomalies (default: SAGAN's patch blend).
        seed: seed of the hold-out, the validation pseudo anomalies and the training order.
        data_on_device: keep the uint8 training images on the Trainer's device and gather the
            batches there (`DeviceTrainingStream`): no host-to-device copy per step. The same
            batches as without it; needs ``num_workers=0`` and no ``augment``. The data must fit in
            device memory (uint8: 10,000 images of 256 px take 0.66 GB).
        normalization: intensity normalisation of every image (a method name or the fields of
            `sagan_ad.data.IntensityNormalization`), applied once in `setup` after the per-image
            statistics of the decoded images are taken; ``"none"`` (default) is the paper. The
            model records it when it is fitted and refuses data prepared otherwise.
        augment: random intensity and acquisition changes of the training streams (the
            fields of `sagan_ad.data.Augmentation`: brightness, contrast, gamma, blur, sharpen,
            jpeg, noise, downscale), drawn per image from the stream position, so a resumed
            run and any number of workers see the same images; None for none.
    """

    split_options: ClassVar[tuple[str, ...]] = ("val_fraction",)
    """The `SplitSettings` fields that mean something for this DataModule's data; a changed
    field outside them is refused by name."""
    split_why: ClassVar[str] = ""
    """Why the other split settings mean nothing here, for that refusal."""

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split: SplitSettings | Mapping[str, Any] | None = None,
        val_synthesizer: Synthesizer | None = None,
        seed: int = 0,
        data_on_device: bool = False,
        normalization: str | IntensityNormalization = "none",
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        check_numbers(
            whole={
                "image_size": image_size,
                "in_channels": in_channels,
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "num_workers": num_workers,
                "seed": seed,
            },
        )
        if seed < 0:
            raise InputError(f"seed={seed}: must be >= 0")
        if in_channels not in (1, 3):
            raise InputError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
        if image_size < 8:
            raise InputError(f"image_size={image_size}: must be at least 8")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise InputError(f"batch_size={batch_size}, eval_batch_size={eval_batch_size}: >= 1")
        if num_workers < 0:
            raise InputError(f"num_workers={num_workers}: must be >= 0")
        if data_on_device and num_workers:
            raise InputError("data_on_device needs num_workers=0: workers cannot hold its tensors")
        self.split = SplitSettings.parse(split)
        self.split.refuse_outside(self.split_options, type(self).__name__, self.split_why)
        self.normalization = IntensityNormalization.parse(normalization)
        self.augment = Augmentation.parse(augment)
        if data_on_device and self.augment is not None:
            raise InputError(
                f"data_on_device=True with augment ({self.augment.describe()}): the augmentation "
                "runs on the CPU while the batches are gathered, so set data_on_device to false, "
                "or turn augment off"
            )
        self.image_size = image_size
        self.in_channels = in_channels
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_synthesizer = val_synthesizer or PatchBlendSynthesizer()
        self.seed = seed
        self.data_on_device = data_on_device
        self.known_normal: ImageSet | None = None
        self.unlabeled: ImageSet | None = None
        self.val: ImageSet | None = None
        self.val_masks: Tensor | None = None
        self.test: ImageSet | None = None
        self.test_masks: Tensor | None = None

    @abstractmethod
    def load(self) -> SplitData:
        """Read the data set into memory (called once per process by `setup`)."""

    def setup(self, stage: str | None = None) -> None:
        if self.known_normal is not None:
            return
        data = self.load()
        self.unlabeled, self.test = data.unlabeled, data.test
        if data.val is not None or self.split.val_fraction == 0.0:
            self.known_normal, self.val = data.known_normal, data.val
        else:
            keep, held = self.holdout(data.known_normal)
            self.known_normal = data.known_normal.subset(keep)
            self.val, self.val_masks = self._pseudo_anomaly_validation(
                data.known_normal.subset(held)
            )
        self._normalize_intensity()

    def _normalize_intensity(self) -> None:
        """Record the decoded statistics of each evaluated image (validation and test, what the
        shortcut audit needs), then apply ``normalization`` to every set."""
        for part in ("known_normal", "unlabeled", "val", "test"):
            data = getattr(self, part)
            if data is None:
                continue
            if data.decoded_stats is None and part in ("val", "test"):
                data.decoded_stats = image_statistics(data.images)
            if self.normalization.method != "none":
                data.images = self.normalization.apply(data.images)

    def holdout(self, known: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the known normals kept for training and held out for validation
        (`holdout_indices`; DataModules that know patients hold out whole patients)."""
        return holdout_indices(len(known), self.split.val_fraction, self.seed)

    def sides(self) -> dict[str, list[str]]:
        """The names of the images on each side of the split once set up: ``training`` (known
        normals and the unlabeled set), ``validation`` (a pseudo anomaly counts as the image it
        was made from) and ``test``; for leakage checks."""
        val = [] if self.val is None else self.val.names
        return {
            "training": self.known_normal.names + self.unlabeled.names,
            "validation": [name.removesuffix("#pseudo_anomaly") for name in val],
            "test": [] if self.test is None else self.test.names,
        }

    def split_manifest(self) -> dict[str, Any] | None:
        """Where the split used came from and what it is, after `setup`, for the run's records.

        Returns:
            ``{"source": <one line: drawn with which seed, counts and grouping, or read from
            which file>, "split": <the data.json dict actually used>}``, or ``None`` where there
            is no split file to speak of (synthetic data).

        Examples:
            >>> dm = MedADDataModule("data/RSNA")  # doctest: +SKIP
            >>> dm.setup(); dm.split_manifest()["source"]  # doctest: +SKIP
            'read from data/RSNA/data.json; ...'
        """
        return None

    def _pseudo_anomaly_validation(self, normals: ImageSet) -> tuple[ImageSet, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        corrupted, masks = self.val_synthesizer(to_model_range(normals.images), generator)
        corrupted_u8 = ((corrupted + 1) * 127.5).round().clamp_(0, 255).to(torch.uint8)
        images = torch.cat([normals.images, corrupted_u8])
        names = normals.names + [f"{name}#pseudo_anomaly" for name in normals.names]
        labels = [0] * len(normals) + [1] * len(normals)
        all_masks = torch.cat([torch.zeros_like(masks), masks])
        return ImageSet(images, labels, names), all_masks

    def summary(self) -> dict[str, int]:
        """Image counts of every part of the split (for logs and sanity checks)."""
        self.setup()
        counts = {
            "train/known_normal": len(self.known_normal),
            "train/unlabeled": len(self.unlabeled),
        }
        counts["train/unlabeled_abnormal"] = sum(1 for label in self.unlabeled.labels if label == 1)
        for part, data in (("val", self.val), ("test", self.test)):
            if data is not None:
                counts[f"{part}/normal"] = sum(1 for label in data.labels if label == 0)
                counts[f"{part}/abnormal"] = sum(1 for label in data.labels if label == 1)
        return counts

    def _eval_loader(self, data: ImageSet, masks: Tensor | None = None) -> DataLoader:
        # Everything evaluation knows of an image travels in its batch, so the model never
        # reads the DataModule.
        images = LabelledImages(
            data.images,
            data.labels,
            data.names,
            statistics=data.statistics(),
            masks=masks,
            boxes=data.boxes,
            original_sizes=data.original_sizes,
            metadata=data.metadata,
        )
        return DataLoader(
            images,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self._loader_generator(),
            collate_fn=collate_evaluation,
        )

    def _loader_generator(self) -> torch.Generator:
        # Each new loader iterator draws its workers' base seed from this generator instead of
        # the global RNG. Persistent workers start their iterator once, at the first batch,
        # which a resumed run reaches at another iteration: a draw from the global RNG would
        # then shift every later random number of training (the generator's residual mask).
        return torch.Generator().manual_seed(self.seed)

    def _training_device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def train_dataloader(self) -> DataLoader:
        # Each SAGAN iteration trains on exactly one batch, and a resumed module has restored its
        # iteration counter before the loader is built: starting the stream there continues the
        # data order of the interrupted run exactly.
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        start_batch = int(getattr(module, "iteration", 0))
        if self.data_on_device:
            device = self._training_device()
            stream: TrainingStream = DeviceTrainingStream(
                self.known_normal.images.to(device),
                self.unlabeled.images.to(device),
                self.batch_size,
                self.seed,
                start_batch=start_batch,
            )
        else:
            stream = TrainingStream(
                self.known_normal.images,
                self.unlabeled.images,
                self.batch_size,
                self.seed,
                start_batch=start_batch,
                augment=self.augment,
            )
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self._loader_generator(),
        )

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val is None else self._eval_loader(self.val, self.val_masks)

    def test_dataloader(self) -> DataLoader:
        if self.test is None or len(self.test) == 0:
            raise InputError(
                f"{type(self).__name__} has no test set: add labelled test images to the split "
                "(test.'0' / test.'1' in data.json) or skip testing"
            )
        return self._eval_loader(self.test, self.test_masks)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict):
            for key in ("normal", "unlabeled", "image"):
                if key in batch and batch[key].dtype == torch.uint8:
                    batch[key] = to_model_range(batch[key])
        return batch
