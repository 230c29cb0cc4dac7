"""The record of a finished setup: what a raw-file DataModule set up (its images at the cache's
resolution, split, identities, the warnings it gave), kept under a digest of everything the setup
read, so that a second setup of unchanged data and settings reads one file instead of every
film.

What the digest covers (`SetupRecord.key`):

- the DataModule's class and every setting its setup reads (its public attributes, with the size and
  modification time of each setting that names a file: a split file, a CSV of paths);
- the listing of its folders: every file's path, size, modification time, inode and mode
  (one ``stat`` per file, as the image cache's manifest; folders of sagan-ad's outputs and the
  cache folder itself are left out, as discovery leaves them out);
- the files it read outside those folders (the images a CSV lists), by the same ``stat``;
- the versions of sagan_ad (and a digest of its code), Python, NumPy, torch, pydicom, OpenCV,
  Pillow and the DICOM decoders, which decide how a file is decoded.

A file changed in place keeps its size and time only if whoever changed it set them back: the
same trust as `ImageCache`'s default ``cache.identity="stat"`` (with ``"content"`` the record is
not used). Anything else that changed sets up again and replaces the record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sagan_ad.data.caching.record_state import (
    UnrecordableError,
    captured_setup,
    decode,
    encode,
    replay,
)
from sagan_ad.data.caching.setup_digest import (
    canonical,
    code_digest,
    file_signatures,
    listing,
    versions,
)
from sagan_ad.data.messages import log_once
from sagan_ad.data.storage import atomic_write_text, make_folder, paused_gc

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
NOT_READ = frozenset({"batch_size", "eval_batch_size", "num_workers"})
"""Settings a setup does not read (how data is batched, not what it holds): not part of the
digest either."""

RACY_NS = 2_000_000_000
"""A file modified less than this before the listing may change again within its time's
resolution (2 s on FAT, 1 s on some network file systems) without its time changing: a setup
that read such a file is not recorded (the next one is)."""
# What reading a damaged record raises (cut short, not a zip, not JSON, another layout).
_DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile)


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
        self._listed: set[str] = set()
        self._newest = self._started = 0

    @property
    def key(self) -> str:
        """The digest of settings, listing and versions (raises `UnrecordableError`)."""
        if self._settings is None:
            raise UnrecordableError("not recorded for this DataModule")
        if self._key is None:
            text: list[str] = []
            canonical(self._settings, text)
            digest = hashlib.sha256(f"{RECORD_FORMAT} {versions()} {code_digest()}\n".encode())
            digest.update("".join(text).encode("utf-8", "surrogateescape"))
            self._started = time.time_ns()
            self._listed, self._newest = listing(self._folders, self._skipped, digest)
            self._key = digest.hexdigest()
        return self._key

    def read(self, state: bool = True) -> dict[str, Any] | None:
        """The record, where it was written for this key and its other files are unchanged:
        ``{"files", "done", "state"}`` (the state as `decode` gives it back; without its
        arrays, which are not read, with ``state=False``)."""
        # Without the cycle collector: the listing and the record's tens of thousands of names
        # and dicts would start a full collection over every object torch made (`paused_gc`).
        with paused_gc(), small_pages():
            return self._read(state)

    def _read(self, state: bool) -> dict[str, Any] | None:
        try:
            key = self.key
        except UnrecordableError:
            return None
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                record = json.loads(stored["record"].tobytes())
                if record.get("key") != key:
                    return None
                count = record["arrays"] if state else 0
                arrays = [stored[f"a{i}"] for i in range(count)]
        except _DAMAGED as err:
            log_once(f"the setup record {self.path} cannot be read ({err}): setting up again")
            return None
        if file_signatures([s[0] for s in record["files"]]) != record["files"]:
            return None
        return {**record, "state": decode(record["state"], arrays) if state else None}

    def write(self, state: dict[str, Any], files: Sequence[list], done: dict[str, list]) -> bool:
        """Record ``state`` (see `encode`) with ``files`` (the `file_signatures` of the files
        the setup read, taken before it read them: those outside the listing are kept) and what
        the setup ``done`` besides (`captured_setup`); whether it was written. Not written for
        unrecordable settings or state, above `MAX_RECORD_BYTES`, or where a file read was
        modified within `RACY_NS` of the listing. Written to a temporary file and renamed."""
        arrays: list[np.ndarray] = []
        try:
            key = self.key
            outside = [s for s in files if os.path.abspath(s[0]) not in self._listed]
            newest = max([self._newest, *(s[2] for s in outside if len(s) > 2)])
            if newest > self._started - RACY_NS:
                raise UnrecordableError("a file read was modified just before the setup")
            text = json.dumps(
                {
                    "key": key,
                    "files": outside,
                    "done": done,
                    "state": encode(state, arrays),
                    "arrays": len(arrays),
                }
            )
        except UnrecordableError as err:
            log.debug("setup not recorded: %s", err)
            return False
        if sum(a.nbytes for a in arrays) > MAX_RECORD_BYTES:
            self.path.unlink(missing_ok=True)
            return False
        make_folder(self.path.parent)
        # A name of its own per writer: ranks on several machines may share the folder.
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as f:
                payload = np.frombuffer(text.encode(), np.uint8)
                np.savez(f, record=payload, **{f"a{i}": a for i, a in enumerate(arrays)})
            os.replace(temporary, self.path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return True


@contextmanager
def small_pages() -> Iterator[None]:
    """Within the block, NumPy's new arrays do not ask for transparent huge pages. Read once,
    the record's arrays gain nothing from them, and where the kernel compacts memory on demand
    for such requests (``defrag`` set to ``madvise``) a process started just after a large one
    paid up to 0.4 s of system time for them: the record read in 0.22 s every time without them,
    in 0.28 then 0.16 s with them (docs/performance.md, "Data pipeline"). Without NumPy's
    switch (a private function), nothing changes."""
    switch = getattr(getattr(np, "_core", None), "multiarray", None)
    switch = getattr(switch, "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)


def record_of(datamodule: Any) -> SetupRecord:
    """The record of a raw-file DataModule's last setup: kept for sagan_ad's own DataModules
    with ``cache.identity="stat"``; a subclass of yours sets up in full every time, as its
    code is not part of the digest. ``datamodule`` has ``cache_dir``, ``cache`` (its
    `sagan_ad.data.CacheSettings`) and ``listed_folders()``."""
    kind = type(datamodule)
    own = kind.__module__.startswith("sagan_ad.") and datamodule.cache.identity == "stat"
    settings = {
        key: value
        for key, value in vars(datamodule).items()
        if not key.startswith("_") and key not in STATE | NOT_READ and key not in _lightning()
    }
    # The folder as used (a path given as text or as a Path is one folder).
    settings["cache"] = {"dir": datamodule.cache_dir, "identity": datamodule.cache.identity}
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
    DataModule keeps ``_read_files`` (the `file_signatures` of every file it listed, taken
    before reading them) in its private state, and its split in ``_manifest``."""
    record = record_of(datamodule)
    recorded = record.read()
    if recorded is not None:
        for key, value in recorded["state"].items():
            setattr(datamodule, key, value)
        with paused_gc():  # the protections replayed: thousands of paths, no cycle
            replay(recorded["done"])
        _rewrite_split(datamodule)
        return
    # A warning that this process does not log cannot be kept: such a setup is not recorded.
    heard = logging.getLogger("sagan_ad").isEnabledFor(logging.WARNING)
    with captured_setup() as done:
        set_up()
    if not heard:
        return
    state = {
        key: value
        for key, value in vars(datamodule).items()
        if (key in STATE or key.startswith("_")) and key not in _lightning()
    }
    try:
        record.write(state, datamodule._read_files, done)
    except Exception as err:  # a record that cannot be kept must not fail the setup it records
        log.warning("the setup record %s could not be written (%s)", record.path, err)


def _rewrite_split(datamodule: Any) -> None:
    """Write the split back to ``<cache_dir>/data.json`` where another setup (of another
    DataModule sharing the folder) replaced it, or someone removed it: it is the file a user
    gives back as ``split.file`` to repeat a run."""
    path, given = datamodule.split_path, datamodule.split_file
    text = json.dumps(datamodule._manifest["split"], indent=1)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    # A split file given back from the cache folder is the user's input: never rewritten.
    if given is None or os.path.abspath(given) != os.path.abspath(path):
        atomic_write_text(path, text)


@functools.cache
def _lightning() -> frozenset[str]:
    """The attributes every LightningDataModule has: neither settings nor set-up state."""
    import lightning as L

    return frozenset(vars(L.LightningDataModule()))
