"""What the setup record's digest covers: a DataModule's settings as text, the listing of its
folders, the signatures of other files it read, and the versions of what decodes them (see
`sagan_ad.data.caching.setup_record`)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import platform
import stat as stat_module
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sagan_ad.data.caching.record_state import UnrecordableError
from sagan_ad.protected import OUTPUT_MARKER

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


def canonical(value: Any, out: list[str]) -> None:
    """Append a text that identifies ``value`` (settings: plain values, paths, sagan_ad's own
    dataclasses and components) to ``out``; raise `UnrecordableError` for anything else."""
    if value is None or isinstance(value, bool | int | float | str | enum.Enum):
        out.append(repr(value))
    elif isinstance(value, os.PathLike):
        # As given too: the setup's messages and manifest name the folder as the user wrote it.
        path = os.path.abspath(os.fspath(value))
        out.append(f"Path({os.fspath(value)!r},{path!r}")
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
            canonical(item, out)
            out.append(",")
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for key in sorted(value, key=repr):
            canonical(key, out)
            out.append(":")
            canonical(value[key], out)
            out.append(",")
        out.append("}")
    elif isinstance(value, set | frozenset):
        canonical(sorted(value, key=repr), out)
    elif type(value).__module__.startswith("sagan_ad."):
        # Only sagan_ad's own settings objects: its code is in the digest, a user's is not (a
        # synthesizer of yours, edited, would draw other pseudo anomalies from the same fields).
        kind = type(value)
        out.append(f"{kind.__module__}.{kind.__qualname__}")
        if dataclasses.is_dataclass(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        elif hasattr(value, "__dict__"):
            fields = vars(value)
        else:
            raise UnrecordableError(f"a setting of type {kind.__name__} without attributes")
        canonical(fields, out)
    else:
        raise UnrecordableError(f"a setting of type {type(value).__name__}")


@functools.cache
def code_digest() -> str:
    """The digest of sagan_ad's own code (a setup also runs its synthesis and statistics): an
    edited checkout sets up again."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def versions() -> str:
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


def listing(roots: Sequence[Path], skipped: Sequence[Path], digest: Any) -> tuple[set[str], int]:
    """Feed the listing of ``roots`` (folders) into ``digest``: each file's path, size, time,
    inode and mode; folders followed through links, each once. Returns the files listed (their
    absolute paths) and the newest modification time among them."""
    skip = {os.path.abspath(p) for p in skipped}
    visited: set[tuple[int, int]] = set()
    listed: set[str] = set()
    newest = 0
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
            # The cache folder inside a data folder is the setup's output, not its input (a
            # cache folder that is the data folder itself is listed: it is never recorded).
            if (found.st_dev, found.st_ino) in visited or (folder in skip and folder != top):
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
                    listed.add(entry.path)
                    newest = max(newest, info.st_mtime_ns)
                    lines.append(
                        f"{entry.path} {info.st_size} {info.st_mtime_ns} {info.st_ino} "
                        f"{info.st_mode}"
                    )
            digest.update(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return listed, newest


def file_signatures(paths: Sequence[str | os.PathLike]) -> list[list]:
    """``[path, size, time, inode, mode]`` of each file (``[path]`` where it cannot be
    stat'ed): how the record finds a change in files read outside the listed folders.

    Examples:
        >>> file_signatures(["/no/such/file.png"])
        [['/no/such/file.png']]
    """
    signatures = []
    for path in map(os.fspath, paths):
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            signatures.append([path])
        else:
            signatures.append([path, found.st_size, found.st_mtime_ns, found.st_ino, found.st_mode])
    return signatures
