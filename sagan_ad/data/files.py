"""The options that every DataModule reading image files shares, defined once."""

from __future__ import annotations

from typing import Any, Literal

from sagan_ad.data.base import AnomalyDataModule, check_numbers
from sagan_ad.data.bit_depth import BitDepth
from sagan_ad.data.cache import CacheIdentity, PreprocessSettings
from sagan_ad.data.dicom import DicomMode, DicomOptions, WindowMode
from sagan_ad.data.leakage import LeakageCheck, check_data_options
from sagan_ad.errors import InputError


class FileDataModule(AnomalyDataModule):
    """Base of the DataModules that decode image files: `MedADDataModule` and
    `RawDataModule` (and so `RSNADataModule`, `VinDrCXRDataModule`, `LAGDataModule` and
    `FolderDataModule`).

    It holds the options they share: how files are decoded (``self.settings``, a
    `PreprocessSettings`), how their cache recognises a file, what the leakage check does, and
    how the unlabeled mixture is drawn from the pools. The other arguments are those of
    [`AnomalyDataModule`][sagan_ad.data.base.AnomalyDataModule], passed on as ``**kwargs``.

    Args:
        anomaly_ratio: fraction of abnormal images in the unlabeled set (0.6 in the paper).
        unlabeled_size: size of the unlabeled set (default: number of known normals).
        dicom_mode: ``"standard"`` or ``"benchmark"`` (see `DicomOptions`).
        window: ``"header"``, ``"percentile"`` or ``"minmax"`` (see `DicomOptions`).
        fallback_window: window of files without window tags in ``"header"`` mode.
        percentiles: low and high percentile of the percentile window.
        dicom_tags: DICOM header keywords carried as metadata (for example ``ViewPosition``).
        force_dicom: read every file as DICOM (files without suffix nor preamble).
        bit_depth: how 16-bit PNG / TIFF are scaled: ``"auto"`` (the largest depth the data
            set's files use, so 12-bit exports keep their contrast), ``"dtype"`` (by 65535, as
            version 0.1 did) or a number of bits (see `sagan_ad.data.bit_depth.scale_bits`).
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
        dicom_mode: DicomMode = "standard",
        window: WindowMode = "header",
        fallback_window: Literal["percentile", "minmax"] = "minmax",
        percentiles: tuple[float, float] = (0.5, 99.5),
        dicom_tags: list[str] | None = None,
        force_dicom: bool = False,
        bit_depth: BitDepth = "auto",
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
        self.anomaly_ratio = anomaly_ratio
        self.unlabeled_size = unlabeled_size
        self.settings = PreprocessSettings(
            image_size=self.image_size,
            in_channels=self.in_channels,
            dicom=DicomOptions(dicom_mode, window, fallback_window, tuple(percentiles)),
            force_dicom=force_dicom,
            dicom_tags=tuple(dicom_tags or ()),
            bit_depth=bit_depth,
        )
        self.leakage = leakage
        self.cache_identity = cache_identity
        self.cache_save_interval = cache_save_interval
        self.groups: dict[str, str] = {}
        self.identities: dict[str, dict[str, str]] = {}
        self._manifest: dict | None = None

    def split_manifest(self) -> dict | None:
        """What `load` recorded: see `AnomalyDataModule.split_manifest` (None before)."""
        return self._manifest
