"""The options that every DataModule reading image files shares, defined once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagan_ad.data.caching.cache import ImageCache, PreprocessSettings
from sagan_ad.data.caching.settings import CacheSettings
from sagan_ad.data.modules.base import AnomalyDataModule
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.data.storage import make_folder


class FileDataModule(AnomalyDataModule):
    """Base of the DataModules that decode image files: `MedADDataModule` and
    `RawDataModule` (and so `RSNADataModule`, `VinDrCXRDataModule`, `LAGDataModule` and
    `FolderDataModule`).

    It holds the settings they share: how files are decoded (``decode``, which fit records in
    the model; with the image size and DICOM tags it makes ``settings``, a
    `PreprocessSettings`) and where the decoded images are kept (``cache``). The other
    arguments are those of [`AnomalyDataModule`][sagan_ad.data.modules.base.AnomalyDataModule]
    (``split``: here also ``anomaly_ratio``, ``unlabeled_size`` and ``leakage``, what to do
    when a group, a PatientID or a SOPInstanceUID is on two sides), passed on as ``**kwargs``.

    Args:
        decode: DICOM windowing, forced DICOM and bit depth (`sagan_ad.data.DecodeSettings`;
            YAML ``decode: {dicom_mode: benchmark, bit_depth: 12}``, command line
            ``--data.decode.dicom_mode benchmark``, or a mapping of its fields); None: the
            defaults.
        dicom_tags: DICOM header keywords carried as metadata (for example ``ViewPosition``).
        cache: the cache of decoded images (`sagan_ad.data.CacheSettings`: ``dir``,
            ``workers``, ``identity``, ``save_interval``, ``progress``; YAML
            ``cache: {dir: cache/}``, command line ``--data.cache.dir cache/``); None: the
            defaults.
        **kwargs: the arguments of `AnomalyDataModule`.
    """

    split_options = ("val_fraction", "anomaly_ratio", "unlabeled_size", "leakage")

    def __init__(
        self,
        decode: DecodeSettings | Mapping[str, Any] | None = None,
        dicom_tags: list[str] | None = None,
        cache: CacheSettings | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.decode = DecodeSettings.parse(decode)
        self.cache = CacheSettings.parse(cache)
        self.dicom_tags = tuple(dicom_tags or ())
        self.groups: dict[str, str] = {}
        self.identities: dict[str, dict[str, str]] = {}
        self._manifest: dict | None = None

    @property
    def cache_dir(self) -> Path | None:
        """The cache folder: ``cache.dir``, else `default_cache_dir`."""
        if self.cache.dir is not None:
            return Path(self.cache.dir).expanduser()
        return self.default_cache_dir()

    @property
    def split_file(self) -> Path | None:
        """``split.file`` as a path (None without one)."""
        return None if self.split.file is None else Path(self.split.file)

    def default_cache_dir(self) -> Path | None:
        """The cache folder without ``cache.dir``: None, decode into memory at every start."""
        return None

    def image_cache(self, folder: Path) -> ImageCache:
        """The `ImageCache` in ``folder`` that decodes with `settings` and the ``cache``
        settings; the DataModule's cache folder is taken first (`make_folder`), so that a
        ``cache.dir`` holding other files is refused before anything is decoded into it."""
        if self.cache_dir is not None:
            make_folder(self.cache_dir)
        return ImageCache(
            folder,
            self.settings,
            self.cache.workers,
            self.cache.progress,
            identity=self.cache.identity,
            save_interval=self.cache.save_interval,
        )

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
