"""Scoring a folder of image files without labels: ``sagan-ad predict`` on your own images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pydicom
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from sagan_ad.data.datasets import to_model_range
from sagan_ad.data.image_io import load_image
from sagan_ad.data.intensity import IntensityNormalization

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
"""File extensions `FolderPredictDataModule` lists by default (case-insensitive)."""


def original_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header.

    PIL reads PNG/JPEG (and most raster formats) headers; DICOM files fall back to their
    ``Rows`` / ``Columns`` attributes.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80)).save(p)
        >>> original_size(p)
        (80, 100)
    """
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except UnidentifiedImageError:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.Rows), int(header.Columns)


def list_images(
    root: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
) -> list[Path]:
    """Image files under ``root`` with one of ``extensions``, sorted by relative path.

    Examples:
        >>> list_images(Path("does-not-exist"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of images")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    pattern = "**/*" if recursive else "*"
    return sorted(
        (p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in wanted),
        key=lambda p: p.relative_to(root).as_posix(),
    )


class ImageFolder(Dataset):
    """Image files read on demand, for prediction.

    Items are ``{"image": uint8 (C, S, S), "label": -1, "index", "name", "path",
    "original_size": (height, width)}``; ``name`` is the path relative to ``root``, so output file
    names can be traced back to the input.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("L", (50, 40)).save(root / "a.png")
        >>> item = ImageFolder(root, image_size=32)[0]
        >>> item["name"], item["image"].shape, item["original_size"]
        ('a.png', torch.Size([1, 32, 32]), (40, 50))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        in_channels: int = 1,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        recursive: bool = True,
    ) -> None:
        self.root = Path(root)
        self.paths = list_images(self.root, extensions, recursive)
        if not self.paths:
            raise FileNotFoundError(
                f"no image files ({', '.join(extensions)}) found in {self.root}"
            )
        self.image_size = image_size
        self.in_channels = in_channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        image = load_image(path, self.image_size, self.in_channels)
        return {
            "image": torch.tensor(image),
            "label": -1,
            "index": index,
            "name": path.relative_to(self.root).as_posix(),
            "path": str(path),
            "original_size": original_size(path),
        }


class FolderPredictDataModule(L.LightningDataModule):
    """Predict-only DataModule over a folder of PNG / JPEG / DICOM files (no labels needed).

    Files are decoded lazily by `sagan_ad.data.load_image` (grayscale or RGB, bilinear resize to
    ``image_size``), and each batch carries the file's relative name, its path and its original
    ``(height, width)``, from which outputs are drawn at full size.

    Args:
        root: the folder; subfolders are searched when ``recursive``.
        image_size: side of the model input (must match the model).
        in_channels: 1 (grayscale) or 3 (RGB); must match the model.
        batch_size: images per batch.
        num_workers: DataLoader workers decoding files.
        extensions: file extensions to include.
        recursive: also list files in subfolders.
        normalization: intensity normalisation of the images (see
            `sagan_ad.data.IntensityNormalization`); None (default) applies the one the model
            was trained with, as its checkpoint records it.

    Examples:
        >>> dm = FolderPredictDataModule("scans/", image_size=64)  # doctest: +SKIP
        >>> trainer.predict(model, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 64,
        in_channels: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        recursive: bool = True,
        normalization: str | IntensityNormalization | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.root = Path(root)
        self.image_size = image_size
        self.in_channels = in_channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.extensions = tuple(extensions)
        self.recursive = recursive
        self.normalization = (
            None if normalization is None else IntensityNormalization.parse(normalization)
        )
        self.dataset: ImageFolder | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = ImageFolder(
                self.root, self.image_size, self.in_channels, self.extensions, self.recursive
            )

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_collate,
        )

    def applied_normalization(self) -> IntensityNormalization:
        """``normalization``, or else the model's recorded one (``"none"`` without either)."""
        if self.normalization is not None:
            return self.normalization
        module = self.trainer.lightning_module if self.trainer is not None else None
        return IntensityNormalization.parse(getattr(module, "hparams", {}).get("normalization"))

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        normalization = self.applied_normalization()
        if normalization.method != "none" and batch["image"].dtype == torch.uint8:
            batch["image"] = normalization.apply(batch["image"])
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if batch["image"].dtype == torch.uint8:
            batch["image"] = to_model_range(batch["image"])
        return batch


def _collate(items: list[dict]) -> dict:
    # The default collate would turn the (height, width) tuples into two tensors.
    return {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.tensor([item["label"] for item in items]),
        "index": torch.tensor([item["index"] for item in items]),
        "name": [item["name"] for item in items],
        "path": [item["path"] for item in items],
        "original_size": [item["original_size"] for item in items],
    }
