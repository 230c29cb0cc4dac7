"""The record of a finished setup: what a raw-file DataModule set up (its images at the cache's
resolution, split, identities, the warnings it gave), kept under a digest of everything the setup
read, so that a second setup of unchanged data and settings reads one file instead of every
film.

What the digest covers (`SetupRecord.key`):

- the DataModule's class and every setting it holds (its public attributes, with the size and
  modification time of each setting that names a file: a split file, a CSV of paths);
- the listing of its folders: every file's path, size, modification time, inode and mode
  (one ``stat`` per file, as the image cache's manifest; folders of sagan-ad's outputs and the
  cache folder itself are left out, as discovery leaves them out);
- the files it read outside those folders (the images a CSV lists), by the same ``stat``;
- the versions of sagan_ad (and a digest of its code), Python, NumPy, torch, pydicom, OpenCV,
  Pillow and the DICOM decoders, which decide how a file is decoded.

A file changed in place keeps its size and time only if whoever changed it set them back: the
same trust as `ImageCache`'s default ``cache_identity="stat"`` (with ``"content"`` the record is
not used). Anything else that changed sets up again and replaces the record.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import logging
import os
import platform
import stat as stat_module
import zipfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sagan_ad.data.cache_files import make_folder, paused_gc
from sagan_ad.data.record_state import (
    UnrecordableError,
    captured_warnings,
    decode,
    encode,
    replay,
)
from sagan_ad.protected import OUTPUT_MARKER, protect

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
MAX_RECORD_BYTES = 1 << 30
"""Largest record written (its images, at the cache's resolution): above it a second setup
reads the image cache as before, rather than keep a second copy of a large data set."""
STATE = frozenset(
    {"known_normal", "unlabeled", "val", "val_masks", "test", "test_masks", "groups", "identities"}
)
"""The public attributes a setup sets (its private ``_`` attributes are state too): not
settings, so not part of the digest."""
_LIBRARIES = (
    ("numpy",),
    ("torch",),
    ("pydicom",),
    ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless"),
    ("pillow",),
    ("pylibjpeg",),
    ("pylibjpeg-libjpeg",),
    ("pylibjpeg-openjpeg",),
    ("python-gdcm",),
)
# What reading a damaged record raises (cut short, not a zip, not JSON, another layout).
_DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile)


def _canonical(value: Any, out: list[str]) -> None:
    """Append a text that identifies ``value`` (settings: plain values, paths, sagan_ad's own
    dataclasses and components) to ``out``; raise `UnrecordableError` for anything else."""
    if value is None or isinstance(value, bool | int | float | str | enum.Enum):
        out.append(repr(value))
    elif isinstance(value, os.PathLike):
        path = os.path.abspath(os.fspath(value))
        out.append(f"Path({path!r}")
        # A file named by a setting (a split file, a CSV of paths) is read: its time counts.
        # A folder's files are in the listing (`listed_folders`), or are outputs (the cache).
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            found = None
        if found is not None and stat_module.S_ISREG(found.st_mode):
            out.append(f",{found.st_size},{found.st_mtime_ns},{found.st_ino}")
        out.append(")")
    elif isinstance(value, list | tuple):
        out.append(type(value).__name__ + "[")
        for item in value:
            _canonical(item, out)
            out.append(",")
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for key in sorted(value, key=repr):
            _canonical(key, out)
            out.append(":")
            _canonical(value[key], out)
            out.append(",")
        out.append("}")
    elif isinstance(value, set | frozenset):
        _canonical(sorted(value, key=repr), out)
    elif dataclasses.is_dataclass(value) or type(value).__module__.startswith("sagan_ad."):
        kind = type(value)
        out.append(f"{kind.__module__}.{kind.__qualname__}")
        fields = (
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            if dataclasses.is_dataclass(value)
            else vars(value)
        )
        _canonical(fields, out)
    else:
        raise UnrecordableError(f"a setting of type {type(value).__name__}")


@functools.cache
def _code_digest() -> str:
    """The digest of sagan_ad's own code (a setup also runs its synthesis and statistics): an
    edited checkout sets up again."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _versions() -> str:
    """The versions of what decodes a file (from the installed distributions: the modules may
    not be imported yet)."""
    from sagan_ad import __version__

    found = [f"sagan_ad={__version__}", f"python={platform.python_version()}"]
    for names in _LIBRARIES:
        for name in names:
            try:
                found.append(f"{name}={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            found.append(f"{names[0]}=absent")
    return " ".join(found)


def _listing(roots: Sequence[Path], skipped: Sequence[Path], digest: Any) -> None:
    """Feed the listing of ``roots`` (folders) into ``digest``: each file's path relative to
    its root, size, time, inode and mode; folders followed through links, each once."""
    skip = {os.path.abspath(p) for p in skipped}
    visited: set[tuple[int, int]] = set()
    for root in roots:
        top = os.path.abspath(root)
        digest.update(f"\0root {top}\n".encode())
        # Discovery reads nothing inside sagan-ad's outputs, wherever the marker is above.
        marked = [
            p
            for p in [top, *map(str, Path(top).parents)]
            if os.path.isfile(os.path.join(p, OUTPUT_MARKER))
        ]
        digest.update(f"marked {marked}\n".encode())
        folders = [top]
        while folders:
            folder = folders.pop()
            try:
                found = os.stat(folder)
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as err:
                digest.update(f"unlisted {folder} {err.errno}\n".encode())
                continue
            if (found.st_dev, found.st_ino) in visited or folder in skip:
                continue
            visited.add((found.st_dev, found.st_ino))
            if any(entry.name == OUTPUT_MARKER for entry in entries):
                digest.update(f"outputs {folder}\n".encode())
                continue
            lines = []
            for entry in entries:
                try:
                    info = entry.stat()
                except OSError as err:
                    lines.append(f"{entry.path} unreadable {err.errno}")
                    continue
                if stat_module.S_ISDIR(info.st_mode):
                    folders.append(entry.path)
                    lines.append(f"{entry.path}/")
                else:
                    lines.append(
                        f"{entry.path} {info.st_size} {info.st_mtime_ns} {info.st_ino} "
                        f"{info.st_mode}"
                    )
            digest.update(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


def file_signatures(paths: Sequence[str | os.PathLike]) -> list[list]:
    """``[path, size, time, inode]`` of each file (``[path]`` where it cannot be stat'ed): how
    the record finds a change in files read outside the listed folders."""
    signatures = []
    for path in map(os.fspath, paths):
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            signatures.append([path])
        else:
            signatures.append([path, found.st_size, found.st_mtime_ns, found.st_ino])
    return signatures


class SetupRecord:
    """The record of a DataModule's last setup, in ``<cache_dir>/setup.npz``.

    Args:
        path: the record file.
        settings: the DataModule's settings (its attributes but `STATE` and private ones);
            ``None``: this setup is never recorded.
        folders: the folders it lists (their every file is part of the digest).
        skipped: folders inside those never listed (the cache folder).

    Examples:
        >>> import tempfile
        >>> data, cache = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        >>> record = SetupRecord(cache / "setup.npz", {"seed": 0}, [data], [])
        >>> record.read() is None  # nothing recorded yet
        True
        >>> record.write({"names": ["a.png"]}, [], [])
        True
        >>> SetupRecord(cache / "setup.npz", {"seed": 0}, [data], []).read()["state"]
        {'names': ['a.png']}
        >>> SetupRecord(cache / "setup.npz", {"seed": 1}, [data], []).read() is None
        True
        >>> _ = (data / "new.png").write_bytes(b"")  # another listing
        >>> SetupRecord(cache / "setup.npz", {"seed": 0}, [data], []).read() is None
        True
    """

    def __init__(
        self,
        path: Path,
        settings: dict[str, Any] | None,
        folders: Sequence[Path],
        skipped: Sequence[Path],
    ) -> None:
        self.path = Path(path)
        self._settings = settings
        self._folders = list(folders)
        self._skipped = list(skipped)
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The digest of settings, listing and versions (raises `UnrecordableError`)."""
        if self._settings is None:
            raise UnrecordableError("not recorded for this DataModule")
        if self._key is None:
            text: list[str] = []
            _canonical(self._settings, text)
            digest = hashlib.sha256(f"{RECORD_FORMAT} {_versions()} {_code_digest()}\n".encode())
            digest.update("".join(text).encode("utf-8", "surrogateescape"))
            _listing(self._folders, self._skipped, digest)
            self._key = digest.hexdigest()
        return self._key

    def read(self, state: bool = True) -> dict[str, Any] | None:
        """The record, where it was written for this key and its other files are unchanged:
        ``{"files", "logs", "state"}`` (the state as `decode` gives it back; without its
        arrays, which are not read, with ``state=False``)."""
        try:
            key = self.key
        except UnrecordableError:
            return None
        if not self.path.is_file():
            return None
        try:
            # Without the cycle collector: the record's tens of thousands of names and dicts
            # would start a full collection over every object torch made (see `paused_gc`).
            with paused_gc(), np.load(self.path, allow_pickle=False) as stored:
                record = json.loads(stored["record"].tobytes())
                if record.get("key") != key:
                    return None
                count = record["arrays"] if state else 0
                arrays = [stored[f"a{i}"] for i in range(count)]
        except _DAMAGED as err:
            log.warning("the setup record %s cannot be read (%s): setting up again", self.path, err)
            return None
        if file_signatures([s[0] for s in record["files"]]) != record["files"]:
            return None
        with paused_gc():
            decoded = decode(record["state"], arrays) if state else None
        return {**record, "state": decoded}

    def write(self, state: dict[str, Any], files: Sequence[str | os.PathLike], logs: list) -> bool:
        """Record ``state`` (see `encode`) with the signatures of ``files`` and the ``logs`` of
        the setup; whether it was written (not above `MAX_RECORD_BYTES`, nor for unrecordable
        settings or state). Written to a temporary file and renamed."""
        arrays: list[np.ndarray] = []
        try:
            record = {
                "key": self.key,
                "files": file_signatures(files),
                "logs": logs,
                "state": encode(state, arrays),
                "arrays": len(arrays),
            }
        except UnrecordableError as err:
            log.debug("setup not recorded: %s", err)
            return False
        if sum(a.nbytes for a in arrays) > MAX_RECORD_BYTES:
            self.path.unlink(missing_ok=True)
            return False
        make_folder(self.path.parent)
        text = np.frombuffer(json.dumps(record).encode(), np.uint8)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("wb") as f:
                np.savez(f, record=text, **{f"a{i}": a for i, a in enumerate(arrays)})
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        return True


def record_of(datamodule: Any) -> SetupRecord:
    """The record of a raw-file DataModule's last setup: kept for sagan_ad's own DataModules
    with ``cache_identity="stat"``; a subclass of yours sets up in full every time, as its
    code is not part of the digest. ``datamodule`` has ``cache_dir``, ``cache_identity`` and
    ``listed_folders()``."""
    kind = type(datamodule)
    own = kind.__module__.startswith("sagan_ad.") and datamodule.cache_identity == "stat"
    settings = {
        key: value
        for key, value in vars(datamodule).items()
        if not key.startswith("_") and key not in STATE and key not in _lightning()
    }
    # "class" is no attribute name, so it never hides a setting.
    settings["class"] = f"{kind.__module__}.{kind.__qualname__}"
    return SetupRecord(
        datamodule.cache_dir / "setup.npz",
        settings if own else None,
        datamodule.listed_folders(),
        [datamodule.cache_dir],
    )


def set_up_recorded(datamodule: Any, set_up: Callable[[], None]) -> None:
    """Set ``datamodule`` up from its record where the record serves, else by ``set_up()``
    (reading the files), then record what that set up. Besides the record's `STATE`, the
    DataModule keeps ``_read_files`` (every file it listed) and ``_used_files`` (those it
    read, protected from being overwritten) in its private state."""
    record = record_of(datamodule)
    # The listing and the record's names and dicts form no cycle (see `paused_gc`).
    with paused_gc():
        recorded = record.read()
        if recorded is not None:
            for key, value in recorded["state"].items():
                setattr(datamodule, key, value)
            protect(datamodule._used_files, "an image of the data")
            replay(recorded["logs"])
    if recorded is not None:
        return
    with captured_warnings() as logs:
        set_up()
    folders = tuple(os.path.join(os.path.abspath(f), "") for f in datamodule.listed_folders())
    outside = [p for p in datamodule._read_files if not os.path.abspath(p).startswith(folders)]
    state = {
        key: value
        for key, value in vars(datamodule).items()
        if (key in STATE or key.startswith("_")) and key not in _lightning()
    }
    try:
        record.write(state, outside, logs)
    except OSError as err:
        log.warning("the setup record %s could not be written (%s)", record.path, err)


@functools.cache
def _lightning() -> frozenset[str]:
    """The attributes every LightningDataModule has: neither settings nor set-up state."""
    import lightning as L

    return frozenset(vars(L.LightningDataModule()))
