"""A user's own images: folders or CSV lists of known normals, unlabeled and test images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from sagan_ad.data.augmentation import IntensityAugmentation
from sagan_ad.data.cache import CacheIdentity, OnError
from sagan_ad.data.dicom import DicomMode, WindowMode
from sagan_ad.data.image_io import BitDepth, discover_images
from sagan_ad.data.intensity import IntensityNormalization
from sagan_ad.data.raw import RawDataModule, Record, read_csv
from sagan_ad.data.split import LeakageCheck, MedADSplit
from sagan_ad.synthesis import Synthesizer

CSV_LAYOUT = "a CSV with a 'path' column (relative to the CSV's folder); other columns = metadata"


def _source_records(source: Path, role: str, label: int, force_dicom: bool) -> list[Record]:
    if source.suffix.lower() == ".csv":
        records = []
        for line, row in enumerate(read_csv(source, ("path",), CSV_LAYOUT), start=2):
            if not row["path"]:
                # Path("") is the CSV's own folder: it would be reported as a missing image.
                raise ValueError(f"{source}, line {line}: the path is empty; {CSV_LAYOUT}")
            path = Path(row["path"])
            path = path if path.is_absolute() else source.parent / path
            metadata = {k: v for k, v in row.items() if k != "path"}
            records.append(Record(f"{role}/{row['path']}", path, label, metadata=metadata))
        return records
    if not source.is_dir():
        raise FileNotFoundError(f"{role}={str(source)!r} is neither a folder nor a .csv file")
    found = discover_images(source, force_dicom=force_dicom)
    found.log_skipped(source)
    return [Record(f"{role}/{p.relative_to(source).as_posix()}", p, label) for p in found.images]


class FolderDataModule(RawDataModule):
    """Your own data: known normals, and optionally an unlabeled pool and labelled test images.

    Each source is a folder (images found recursively: PNG / JPEG / TIFF / BMP at 8 or 16 bit,
    DICOM; hidden and system files are skipped and counted in one warning) or a CSV with a
    ``path`` column (relative to the CSV's folder; the other columns are carried as metadata,
    and one of them can be ``group_by``). Without ``unlabeled`` the known normals also serve as
    the unlabeled set (plain one-class training), less those held out for validation. The roles
    are taken as given (no drawing); the same file in two roles is refused, and a patient in
    two (``group_by``, PatientID) is caught by the leakage check. The split used is written to
    ``<cache_dir>/data.json``.

    Args:
        normal: known normals (folder or CSV).
        unlabeled: unlabeled pool, labels unknown (folder or CSV).
        test_normal: normal test images (folder or CSV).
        test_abnormal: abnormal test images (folder or CSV).
        cache_dir: see `RawDataModule`; likewise the DICOM settings, ``dicom_tags``,
            ``on_error``, ``cache_workers``, ``progress``, the `AnomalyDataModule` arguments,
            ``force_dicom``, ``bit_depth``, ``group_by`` (a CSV column or a DICOM keyword; it
            also makes the validation hold-out keep patients whole), ``leakage``,
            ``cache_identity`` and ``cache_save_interval``.

    Examples:
        >>> dm = FolderDataModule("normals/", unlabeled="ward_2024/",
        ...                       test_abnormal="confirmed.csv")  # doctest: +SKIP
    """

    def __init__(
        self,
        normal: str | os.PathLike,
        unlabeled: str | os.PathLike | None = None,
        test_normal: str | os.PathLike | None = None,
        test_abnormal: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        dicom_mode: DicomMode = "standard",
        window: WindowMode = "header",
        fallback_window: Literal["percentile", "minmax"] = "minmax",
        percentiles: tuple[float, float] = (0.5, 99.5),
        dicom_tags: list[str] | None = None,
        on_error: OnError = "raise",
        cache_workers: int | None = None,
        progress: bool = True,
        image_size: int = 64,
        in_channels: int = 1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        val_synthesizer: Synthesizer | None = None,
        seed: int = 0,
        data_on_device: bool = False,
        force_dicom: bool = False,
        bit_depth: BitDepth = "auto",
        group_by: str | None = None,
        leakage: LeakageCheck = "raise",
        cache_identity: CacheIdentity = "stat",
        cache_save_interval: float = 60.0,
        normalization: str | IntensityNormalization = "none",
        augment: IntensityAugmentation | None = None,
    ) -> None:
        super().__init__(
            root=normal,
            cache_dir=cache_dir,
            dicom_mode=dicom_mode,
            window=window,
            fallback_window=fallback_window,
            percentiles=percentiles,
            dicom_tags=dicom_tags,
            on_error=on_error,
            cache_workers=cache_workers,
            progress=progress,
            image_size=image_size,
            in_channels=in_channels,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            val_synthesizer=val_synthesizer,
            seed=seed,
            data_on_device=data_on_device,
            force_dicom=force_dicom,
            bit_depth=bit_depth,
            group_by=group_by,
            leakage=leakage,
            cache_identity=cache_identity,
            cache_save_interval=cache_save_interval,
            normalization=normalization,
            augment=augment,
        )
        self.sources = {
            "normal": (Path(normal), 0),
            "unlabeled": (None if unlabeled is None else Path(unlabeled), -1),
            "test_normal": (None if test_normal is None else Path(test_normal), 0),
            "test_abnormal": (None if test_abnormal is None else Path(test_abnormal), 1),
        }
        self._roles: dict[str, list[str]] = {}

    def records(self) -> list[Record]:
        records = []
        self._roles = {}
        for role, (source, label) in self.sources.items():
            found = (
                []
                if source is None
                else _source_records(source, role, label, self.settings.force_dicom)
            )
            if source is not None:
                self._fail_or_skip(
                    [] if found else [f"{role}={str(source)!r} lists no images"], "empty source(s)"
                )
            records += found
            self._roles[role] = [r.name for r in found]
        return records

    def assign(self, records: dict[str, Record]) -> MedADSplit:
        return MedADSplit(
            known_normal=[n for n in self._roles["normal"] if n in records],
            test_normal=[n for n in self._roles["test_normal"] if n in records],
            test_abnormal=[n for n in self._roles["test_abnormal"] if n in records],
            pool_normal=[n for n in self._roles["unlabeled"] if n in records],
        )

    def unlabeled_set(self, split: MedADSplit) -> tuple[list[str], list[int]]:
        if split.pool_normal:
            return split.pool_normal, [-1] * len(split.pool_normal)
        return split.known_normal, [0] * len(split.known_normal)

    def split_source(self) -> str:
        roles = ", ".join(
            f"{role}={str(source)!r}" for role, (source, _) in self.sources.items() if source
        )
        grouping = f", group_by={self.group_by!r}" if self.group_by else ""
        held = self._validation_source(self._known_names)
        return f"roles as given ({roles}{grouping}); {held}"

    def split_json(self, split: MedADSplit) -> dict:
        data = split.to_json()
        # The user's unlabeled images have unknown labels: not the Med-AD "0" pool.
        data["train"]["unlabeled"] = {"0": [], "1": [], "unknown": split.pool_normal}
        return data
