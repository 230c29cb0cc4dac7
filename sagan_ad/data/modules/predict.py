"""Scoring a folder of image files without labels: ``sagan-ad predict`` on your own images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sagan_ad.data.caching.cache import OnError
from sagan_ad.data.reading.bit_depth import BitDepth, check_bit_depth, data_set_depth, used_bits
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.data.reading.dicom import read_dataset
from sagan_ad.data.reading.dicom_options import DicomOptions
from sagan_ad.data.reading.discovery import IMAGE_SUFFIXES, discover_images
from sagan_ad.data.reading.file_kinds import is_dicom, missing_reason
from sagan_ad.data.reading.image_io import (
    EXIF_ORIENTATION,
    ImageReadError,
    decode_image,
    read_image,
)
from sagan_ad.errors import InputError, MissingFileError
from sagan_ad.protected import protect

DECODED = "decoded"
"""The batch entry that marks its ``image`` as uint8 films as decoded, which the model prepares
with its recorded pre-processing (`sagan_ad.SAGAN.predict_step`)."""

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
"""File extensions `FolderPredictDataModule` lists by default (case-insensitive): the same as
training reads (`sagan_ad.data.reading.discovery.IMAGE_SUFFIXES`), plus files without a suffix
that carry the DICOM magic."""


def original_size(path: str | os.PathLike, force_dicom: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image file as a viewer shows it, read from its header.

    DICOM files (by suffix, magic, or ``force_dicom``; old ACR-NEMA files without file meta
    included) give their ``Rows`` / ``Columns``; other images PIL's size, swapped when the EXIF
    orientation turns the picture by a quarter.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80)).save(p)
        >>> original_size(p)
        (80, 100)
    """
    if not Path(path).is_file():
        raise ImageReadError(f"{path} {missing_reason(path)}")
    try:
        if is_dicom(path, force_dicom):
            header = read_dataset(path, header_only=True)
            return int(header.Rows), int(header.Columns)
        with Image.open(path) as img:
            turned = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1) in (5, 6, 7, 8)
            return (img.width, img.height) if turned else (img.height, img.width)
    except Exception as err:
        raise ImageReadError(f"{path}: cannot read the image size: {err}") from err


def list_images(
    root: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
    force_dicom: bool = False,
) -> list[Path]:
    """Image files under ``root``, sorted by relative path: those with one of ``extensions``,
    files without a suffix that carry the DICOM magic, or every file with ``force_dicom``;
    hidden and system files never (`sagan_ad.data.reading.discovery.discover_images`). What
    was skipped is logged once, as counts.

    Examples:
        >>> list_images(Path("does-not-exist"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.errors.MissingFileError: ...
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root} is not a folder of images")
    found = discover_images(root, extensions, recursive, force_dicom)
    found.log_skipped(root)
    return sorted(found.images, key=lambda p: p.relative_to(root).as_posix())


def _is_sixteen_bit(path: Path, force_dicom: bool) -> bool:
    # Not a regular file (opening a FIFO would block): reported when it is read.
    if not path.is_file() or is_dicom(path, force_dicom):
        return False
    try:
        with Image.open(path) as img:
            raw = str(img.tile[0][3]) if img.tile else ""
            return img.mode.startswith("I") or ";16" in raw
    except Exception:
        # Unreadable files are reported when they are read.
        return False


class ImageFolder(Dataset):
    """Image files read on demand, for prediction.

    Items are ``{"image": uint8 (C, S, S), "label": -1, "index", "name", "path",
    "original_size": (height, width)}``; ``name`` is the path relative to ``root``, so output file
    names can be traced back to the input. A file that cannot be read raises `ImageReadError`
    naming it, or with ``on_error="skip"`` gives an item with ``"skipped"``: the reason (and a
    blank placeholder image, which the predict DataModule's batches leave out). Files are read
    exactly as training reads them (`sagan_ad.data.read_image`). With ``bit_depth="auto"`` the
    folder is one data set: the 16-bit files are read once here to find the largest depth they
    use, and every file is scaled by it.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.linear_gradient("L").resize((50, 40)).save(root / "a.png")
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
        *,
        dicom: DicomOptions | None = None,
        force_dicom: bool = False,
        bit_depth: BitDepth = "auto",
        on_error: OnError = "raise",
    ) -> None:
        check_bit_depth(bit_depth)
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r}: must be 'raise' or 'skip'")
        self.on_error = on_error
        self.root = Path(root)
        self.paths = list_images(self.root, extensions, recursive, force_dicom)
        protect(self.paths, "an image to predict")
        if self.root.is_dir():
            protect(self.root, "the folder of images to predict")
        if not self.paths:
            raise MissingFileError(
                f"no image files ({', '.join(extensions)}, or DICOM without suffix) found in "
                f"{self.root}"
            )
        self.image_size = image_size
        self.in_channels = in_channels
        self.dicom = dicom
        self.force_dicom = force_dicom
        self.bit_depth = bit_depth
        if bit_depth == "auto":
            deep = [p for p in self.paths if _is_sixteen_bit(p, force_dicom)]
            bits = []
            for path in deep:
                try:
                    array = decode_image(path, dicom, force_dicom)
                except ImageReadError:
                    if on_error == "raise":
                        raise
                    continue  # skipped, with its reason, when it is read
                bits.append(used_bits(array) if array.dtype == np.uint16 else None)
            self.bit_depth = data_set_depth(bits, "auto", str(self.root)) or "auto"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        item = {
            "label": -1,
            "index": index,
            "name": path.relative_to(self.root).as_posix(),
            "path": str(path),
        }
        try:
            read = read_image(
                path,
                self.image_size,
                self.in_channels,
                dicom=self.dicom,
                force_dicom=self.force_dicom,
                bit_depth=self.bit_depth,
            )
        except ImageReadError as err:
            if self.on_error == "raise":
                raise ImageReadError(
                    f"{err}; fix or remove it, or set on_error='skip' (--data.on_error skip) "
                    "to score the other images and list the unreadable ones in "
                    "predict/skipped.csv"
                ) from err
            size = (self.in_channels, self.image_size, self.image_size)
            return {**item, "image": torch.zeros(size, dtype=torch.uint8), "skipped": str(err)}
        return {**item, "image": torch.from_numpy(read.image), "original_size": read.original_size}


class FolderPredictDataModule(L.LightningDataModule):
    """Predict-only DataModule over a folder of image files (no labels needed).

    It lists every format training reads (PNG, JPEG, TIFF, BMP, DICOM with or without suffix;
    hidden and system files skipped) and decodes them lazily exactly as training does
    (`sagan_ad.data.read_image`: grayscale or RGB, bilinear resize to ``image_size``, the same
    DICOM and bit-depth settings); each batch carries the uint8 images as decoded, the file's
    relative name, its path and its original ``(height, width)``, from which outputs are drawn at
    full size. The model prepares the images (its recorded intensity normalisation, then
    ``[-1, 1]``: `sagan_ad.Preprocessing`), so nothing here depends on the model.

    Args:
        root: the folder; subfolders are searched when ``recursive``.
        image_size: side of the model input (must match the model).
        in_channels: 1 (grayscale) or 3 (RGB); must match the model.
        batch_size: images per batch.
        num_workers: DataLoader workers decoding files.
        extensions: file extensions to include.
        recursive: also list files in subfolders.
        decode: the DICOM and bit-depth settings (`sagan_ad.data.DecodeSettings`); they must be
            the model's (``model.preprocessing.decode``), which ``sagan-ad predict`` and
            `sagan_ad.Engine` fill in when it is None (default). Other settings are refused at
            predict start.
        on_error: ``"raise"`` (default): an unreadable file (empty, truncated, not an image, a
            blank film) stops the run, naming it; ``"skip"``: the other files are scored, and
            the skipped ones are listed with their reasons in ``predict/skipped.csv`` beside
            ``predictions.csv`` and in a warning.

    Examples:
        >>> dm = FolderPredictDataModule("scans/", image_size=64,
        ...                              decode=model.preprocessing.decode)  # doctest: +SKIP
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
        decode: DecodeSettings | Mapping[str, Any] | None = None,
        on_error: OnError = "raise",
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise InputError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}: must be >= 1")
        if decode is not None:
            decode = DecodeSettings.parse(decode)
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r}: must be 'raise' or 'skip'")
        self.on_error = on_error
        self.root = Path(root)
        self.image_size = image_size
        self.in_channels = in_channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.extensions = tuple(extensions)
        self.recursive = recursive
        self.decode = decode
        self._built_with: DecodeSettings | None = None
        self.dataset: ImageFolder | None = None

    def setup(self, stage: str | None = None) -> None:
        decode = self.decode or DecodeSettings()
        # Built again when the decode settings changed since (adopted from a checkpoint after
        # a first look at the folder): the films are scored as they are then decoded.
        if self.dataset is None or self._built_with != decode:
            self._built_with = decode
            self.dataset = ImageFolder(
                self.root,
                self.image_size,
                self.in_channels,
                self.extensions,
                self.recursive,
                dicom=decode.dicom,
                force_dicom=decode.force_dicom,
                bit_depth=decode.bit_depth,
                on_error=self.on_error,
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


def _collate(items: list[dict]) -> dict:
    # The default collate would turn the (height, width) tuples into two tensors.
    skipped = [
        {"name": item["name"], "path": item["path"], "reason": item["skipped"]}
        for item in items
        if "skipped" in item
    ]
    if skipped:
        read = [item for item in items if "skipped" not in item]
        batch = _collate(read) if read else _empty(items[0]["image"])
        return {**batch, "skipped": skipped}
    return {
        "image": torch.stack([item["image"] for item in items]),
        DECODED: True,
        "label": torch.tensor([item["label"] for item in items]),
        "index": torch.tensor([item["index"] for item in items]),
        "name": [item["name"] for item in items],
        "path": [item["path"] for item in items],
        "original_size": [item["original_size"] for item in items],
    }


def _empty(placeholder: torch.Tensor) -> dict:
    """A batch of no image (every file of it was skipped)."""
    return {
        DECODED: True,
        "image": placeholder.new_zeros((0, *placeholder.shape)),
        "label": torch.zeros(0, dtype=torch.long),
        "index": torch.zeros(0, dtype=torch.long),
        "name": [],
        "path": [],
        "original_size": [],
    }
