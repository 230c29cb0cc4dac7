"""Where and how a file-reading DataModule keeps its decoded images, as one settings group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from sagan_ad.data.caching.cache import CacheIdentity
from sagan_ad.data.setting_groups import SettingsGroup, check_choice, check_flag, check_numbers
from sagan_ad.errors import InputError


@dataclass(frozen=True)
class CacheSettings(SettingsGroup):
    """The cache of decoded images: the ``cache`` of every file-reading DataModule (YAML
    ``data.cache: {dir: cache/, workers: 2}``, command line ``--data.cache.dir cache/``).

    Attributes:
        dir: the cache folder (see `sagan_ad.data.ImageCache`). `MedADDataModule` decodes into
            memory at every start without one; the raw releases and `FolderDataModule` default to
            ``$SAGAN_AD_CACHE`` or ``~/.cache/sagan_ad``, then one folder per class and root.
        workers: decoding processes (default: every core).
        identity: how the cache recognises an unchanged file: ``"stat"`` (path, size and
            modification time), ``"verify"`` (and the same bytes) or ``"content"`` (the bytes
            alone).
        save_interval: seconds between saves of a running cache build (an interrupted build
            resumes from the last save).
        progress: a progress bar while decoding.

    Examples:
        >>> CacheSettings(dir="cache/", workers=2).changed()
        {'dir': 'cache/', 'workers': 2}
        >>> CacheSettings(workers=0)
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: cache.workers=0: must be >= 1 (or None: every core)
    """

    group: ClassVar[str] = "cache"

    dir: str | os.PathLike | None = None
    workers: int | None = None
    identity: CacheIdentity = "stat"
    save_interval: float = 60.0
    progress: bool = True

    def __post_init__(self) -> None:
        check_numbers(
            whole={"cache.workers": self.workers}, real={"cache.save_interval": self.save_interval}
        )
        if self.workers is not None and self.workers < 1:
            raise InputError(f"cache.workers={self.workers}: must be >= 1 (or None: every core)")
        check_choice("cache", "identity", self.identity, ("stat", "verify", "content"))
        if not self.save_interval > 0:
            raise InputError(f"cache.save_interval={self.save_interval}: must be > 0 seconds")
        check_flag("cache", "progress", self.progress)
