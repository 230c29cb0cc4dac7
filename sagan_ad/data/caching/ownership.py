"""Which folders the cache may write into: a new or empty one, or one the cache wrote itself.

The cache replaces its files (``data.json``, ``twins.json``, ``headers.json``, ``setup.npz``,
the image shards and their index) without asking; pointed at a folder of the user's, such as a
Med-AD release root, it would replace that release's ``data.json``. A folder it takes is marked
by `CACHE_MARKER`; a folder that a version before the marker wrote is known by the files only
the cache writes (`_written_by_cache`), and marked when taken.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sagan_ad.errors import FileError

__all__ = ["CACHE_MARKER", "NotACacheFolderError", "claim_cache_folder"]

CACHE_MARKER = ".sagan-ad-cache"
"""The file that marks a folder written by sagan-ad's cache (`claim_cache_folder`)."""

CACHE_NAMES = frozenset(
    {
        "data.json",
        "twins.json",
        "headers.json",
        "setup.npz",
        "images",
        "settings.json",
        "index.json",
    }
)
"""What the cache writes directly into a folder it takes (DataModule cache folders, the image
cache's root and settings folders), besides shards and temporaries."""

_SETTINGS_FOLDER = re.compile(r"[0-9a-f]{16}")
"""The name of an image cache's settings folder (`PreprocessSettings.key`)."""


class NotACacheFolderError(FileError, FileExistsError):
    """``cache.dir`` (or an `ImageCache` root) is a folder of other files: the message names it,
    the file the cache would replace, and what to choose instead."""


def claim_cache_folder(folder: Path) -> None:
    """Create ``folder`` or take it as a cache folder, marking it; refuse a folder holding
    files the cache did not write.

    Raises:
        NotACacheFolderError: ``folder`` holds other files (names one, and the cache's file it
            would replace).
        OSError: ``folder`` cannot be created or marked.

    Examples:
        >>> import tempfile
        >>> release = Path(tempfile.mkdtemp())
        >>> _ = (release / "data.json").write_text("{}")
        >>> claim_cache_folder(release)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.data.caching.ownership.NotACacheFolderError: cannot use ... as a cache folder...
        >>> claim_cache_folder(release / "cache")
        >>> (release / "cache" / CACHE_MARKER).is_file()
        True
    """
    marker = folder / CACHE_MARKER
    if marker.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    entries = sorted(os.listdir(folder))
    if CACHE_MARKER in entries:  # another process (a rank of the same run) took it meanwhile
        return
    if entries and not _written_by_cache(folder, entries):
        replaced = [n for n in entries if n in CACHE_NAMES and (folder / n).is_file()]
        held = ", ".join(entries[:3]) + (
            f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        )
        risk = f", and the cache would replace its {', '.join(replaced)}" if replaced else ""
        raise NotACacheFolderError(
            f"cannot use {folder} as a cache folder (cache.dir): it holds {held}, which the "
            f"cache did not write{risk}; choose another cache.dir: a new or empty folder, or one "
            f"the cache wrote (it holds {CACHE_MARKER})"
        )
    try:
        marker.write_text(
            "A folder of sagan-ad's cache: its files are rebuilt from the data and may be "
            "deleted.\n",
            encoding="utf-8",
        )
    except OSError:
        # A cache an earlier version wrote, shared on a read-only mount, is still read; an
        # empty folder that cannot be written fails at the cache's first write, naming it.
        if not entries:
            raise


def _written_by_cache(folder: Path, entries: list[str]) -> bool:
    # Before the marker, a DataModule's cache folder ended each setup with its record, and an
    # image cache root held settings folders named by a 16-digit settings digest (even a build
    # killed before it wrote a file leaves one); a release or image folder holds neither.
    if "setup.npz" in entries:
        return True
    roots = [folder, folder / "images"] if "images" in entries else [folder]
    return any(
        _SETTINGS_FOLDER.fullmatch(name) and (root / name).is_dir()
        for root in roots
        if root.is_dir()
        for name in os.listdir(root)
    )
