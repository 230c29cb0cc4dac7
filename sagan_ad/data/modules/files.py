"""The options that every DataModule reading image files shares, defined once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagan_ad.data.caching.cache import CacheIdentity, PreprocessSettings
from sagan_ad.data.modules.base import AnomalyDataModule, check_numbers
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.data.splits.leakage import LeakageCheck, check_data_options
from sagan_ad.errors import InputError


class FileDataModule(AnomalyDataModule):
    """Base of the DataModules that decode image files: `MedADDataModule` and
    `RawDataModule` (and so `RSNADataModule`, `VinDrCXRDataModule`, `LAGDataModule` and
    `FolderDataModule`).

    It holds the options they share: how files are decoded (``decode``, which fit records in
    the model; with the image size and DICOM tags it makes ``settings``, a
    `PreprocessSettings`), how their cache recognises a file, what the leakage check does, and
    how the unlabeled mixture is drawn from the pools. The other arguments are those of
    [`AnomalyDataModule`][sagan_ad.data.modules.base.AnomalyDataModule], passed on as ``**kwargs``.

    Args:
        anomaly_ratio: fraction of abnormal images in the unlabeled set (0.6 in the paper).
        unlabeled_size: size of the unlabeled set (default: number of known normals).
        decode: DICOM windowing, forced DICOM and bit depth (`sagan_ad.data.DecodeSettings`;
            YAML ``decode: {dicom_mode: benchmark, bit_depth: 12}``, command line
            ``--data.decode.dicom_mode benchmark``, or a mapping of its fields); None: the
            defaults.
        dicom_tags: DICOM header keywords carried as metadata (for example ``ViewPosition``).
        leakage: what to do when a group (``group_by``), a PatientID or a SOPInstanceUID is
            on two sides (training, validation, test): ``"raise"`` (default), ``"warn"`` or
            ``"ignore"``.
        cache_identity: how the cache recognises an unchanged file: ``"stat"`` (path, size
            and modification time), ``"verify"`` (and the same bytes) or ``"content"`` (the
            bytes alone); see `ImageCache`.
        cache_save_interval: seconds between saves of a running cache build (an interrupted
            build resumes from the last save).
        **kwargs: the arguments of `AnomalyDataModule`.
    """

    def __init__(
        self,
        anomaly_ratio: float = 0.6,
        unlabeled_size: int | None = None,
        decode: DecodeSettings | Mapping[str, Any] | None = None,
        dicom_tags: list[str] | None = None,
        leakage: LeakageCheck = "raise",
        cache_identity: CacheIdentity = "stat",
        cache_save_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_numbers(
            whole={"unlabeled_size": unlabeled_size}, real={"anomaly_ratio": anomaly_ratio}
        )
        if not 0.0 <= anomaly_ratio <= 1.0:
            raise InputError(f"anomaly_ratio={anomaly_ratio}: must be in [0, 1]")
        if unlabeled_size is not None and unlabeled_size < 1:
            raise InputError(f"unlabeled_size={unlabeled_size}: must be >= 1")
        check_data_options(leakage, cache_identity, cache_save_interval)
        self.decode = DecodeSettings.parse(decode)
        self.anomaly_ratio = anomaly_ratio
        self.unlabeled_size = unlabeled_size
        self.dicom_tags = tuple(dicom_tags or ())
        self.leakage = leakage
        self.cache_identity = cache_identity
        self.cache_save_interval = cache_save_interval
        self.groups: dict[str, str] = {}
        self.identities: dict[str, dict[str, str]] = {}
        self._manifest: dict | None = None

    @property
    def settings(self) -> PreprocessSettings:
        """Everything that decides the cached pixels: the image size, channels, ``decode`` and
        ``dicom_tags``."""
        return PreprocessSettings(
            image_size=self.image_size,
            in_channels=self.in_channels,
            dicom=self.decode.dicom,
            force_dicom=self.decode.force_dicom,
            dicom_tags=self.dicom_tags,
            bit_depth=self.decode.bit_depth,
        )

    def split_manifest(self) -> dict | None:
        """What `load` recorded: see `AnomalyDataModule.split_manifest` (None before)."""
        return self._manifest
