"""Files as the data package handles them: a source file's identity (the same file under two
paths; path, size and modification time; a digest of its bytes), atomic writes, and JSON stores
read back leniently."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from sagan_ad.atomic import atomic_path
from sagan_ad.data.caching.ownership import NotACacheFolderError, claim_cache_folder
from sagan_ad.errors import FileError
from sagan_ad.protected import writable_target

log = logging.getLogger(__name__)


def file_identity(path: str | os.PathLike) -> tuple:
    """What makes two paths the same file: device and inode when the file exists (so symbolic
    and hard links and, on case-insensitive file systems, case variants match), else the
    normalised absolute path.

    Examples:
        >>> file_identity("/no/such/dir/./x.png") == file_identity("/no/such/x.png/../dir/x.png")
        True
    """
    written = os.path.normcase(os.path.normpath(os.path.abspath(path)))
    # As written first (links in the path count), then normalised (``missing/../x.png``).
    for candidate in (path, written):
        try:
            stat = os.stat(candidate)
        except (OSError, ValueError):
            continue
        return ("inode", stat.st_dev, stat.st_ino)
    return ("path", written)


def file_key(path: str | os.PathLike) -> str:
    """Identity of a file by its path, size and modification time (what ``"stat"`` compares)."""
    stat = os.stat(path)
    text = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


def content_digest(path: str | os.PathLike) -> str:
    """A digest of the file's bytes (what ``"verify"`` and ``"content"`` compare, and the
    leakage check's `SAME_BYTES`): the `bytes_digest` of its content, read in blocks.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"
        >>> _ = p.write_bytes(b"abc")
        >>> content_digest(p) == bytes_digest(b"abc")
        True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:DIGEST_CHARS]


DIGEST_CHARS = 40
"""Hex characters kept of a SHA-256 digest (160 bits). SHA-256 rather than BLAKE2b: CPUs with
SHA extensions hash it about three times as fast, and every file is hashed when first cached."""


def bytes_digest(data: bytes) -> str:
    """`content_digest` of a file's bytes already in memory.

    Examples:
        >>> bytes_digest(b"abc")[:12]
        'ba7816bf8f01'
    """
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` by what ``write`` puts into a temporary file beside it
    (`sagan_ad.atomic.atomic_path`: a crash leaves the old file or none, and the next write
    into the folder removes a dead writer's temporary); a write that fails names the file and
    ``cache.dir``."""
    target = writable_target(path, "cache.dir")
    try:
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as err:
        raise _unwritable(target, err) from err


def _unwritable(path: Path, err: OSError) -> FileError:
    what = " (a folder is in the way)" if path.is_dir() else ""
    return FileError(
        f"cannot write {path}{what}: {err.strerror or err}; choose another cache.dir, or free "
        "or repair that folder"
    )


def make_folder(folder: Path, owner: Path | None = None) -> None:
    """Create a cache folder or take an existing one (`claim_cache_folder`: refused when it
    holds files the cache did not write), or raise an `OSError` that names it and what to do.

    Args:
        folder: the folder to create.
        owner: the cache folder that ``folder`` lies in, claimed instead of it (the image
            cache's settings folders live in its root).
    """
    try:
        claim_cache_folder(owner or folder)
        folder.mkdir(parents=True, exist_ok=True)
    except NotACacheFolderError:  # it names the folder and what to do already
        raise
    except OSError as err:
        raise FileError(
            f"cannot create the cache folder {folder}: {err.strerror or err} (a file in the "
            "way, or no permission); choose another cache.dir"
        ) from err


def read_json_store(path: Path, what: str) -> dict:
    """The JSON object kept at ``path`` by the cache, or ``{}`` when it is absent or damaged
    (cut short by a full disk, overwritten): what it held is derived data and is rebuilt, with
    a warning."""
    if not path.exists():
        return {}
    try:
        with paused_gc():
            data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
        problem = f"{type(err).__name__}: {err}"
    else:
        if isinstance(data, dict):
            return data
        problem = f"it holds a {type(data).__name__}, not an object"
    log.warning("%s %s is damaged (%s): it is rebuilt", what, path, problem)
    return {}


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cycle collector while a JSON store is parsed: its tens of thousands of
    lists and dicts form no cycle, yet their allocation alone starts a full collection, which
    in a process that imported torch visits some 400,000 objects (a third of a second: more
    than reading the whole index)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (temporary file, then rename)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))
