"""Atomic file writes: a file is either absent, the old version, or complete, never half-written.

Every file sagan_ad writes in place goes through `atomic_path`: outputs, exports, caches, configs
and, durably, checkpoints (`sagan_ad.training.checkpointing.atomic_save`).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sagan_ad.protected import writable_target

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
# A temporary is named after its target, the writing process and its host:
# ".<stem>.partial-<pid>-<host><suffix>". The leading dot keeps it out of Lightning's search for
# "last*.ckpt", and out of every listing that skips hidden files.
_TEMPORARY = re.compile(r"^\..*\.partial-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})(\.[^.]*)?$")
_CLEANED: set[Path] = set()


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary name keeps the suffix, so writers that infer the format from it (matplotlib,
    OpenCV) still work. If the block raises, the temporary file is removed and ``path`` is left
    untouched, so an interrupted run never leaves an output that looks complete but is not. The
    first write into a folder also removes the temporaries that killed processes left there
    (`remove_stale_temporaries`). A symbolic link is written through (the link is kept), and a
    target that is an input of the same command or no regular file (a device, FIFO, folder) is
    refused before anything is written (`sagan_ad.protected.writable_target`).

    Args:
        path: the file to write.
        durable: also survive a power loss or a crash of the operating system: the temporary
            is flushed to disk before it replaces ``path``, and the folder (which holds the
            new name) after. Costs two ``fsync`` calls; checkpoints use it.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> with atomic_path(target, durable=True) as tmp:
        ...     _ = tmp.write_text("{}")
        >>> target.read_text()
        '{}'
    """
    target = writable_target(path)
    if target.parent not in _CLEANED:
        remove_stale_temporaries(target.parent)
        _CLEANED.add(target.parent)
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}-{_HOST}{target.suffix}")
    try:
        yield tmp
        if durable:
            # Without it the rename can reach the disk before the data: after a power loss the
            # target would then be the new name over an empty or partly written file.
            _fsync(tmp, os.O_RDWR)
        os.replace(tmp, target)
        # The new name lives in the folder's entries (POSIX only: Windows opens no folder).
        if durable and hasattr(os, "O_DIRECTORY"):
            _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        tmp.unlink(missing_ok=True)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named as a temporary of `atomic_path` (never a finished file).

    Examples:
        >>> is_temporary(".last.partial-4242-0badc0de.ckpt"), is_temporary("last.ckpt")
        (True, False)
    """
    return _TEMPORARY.match(Path(path).name) is not None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `atomic_path` in ``folder`` whose writer is dead.

    Only temporaries written on this host by a process that no longer runs are removed (on a
    shared file system another host's writers are left alone; on systems without POSIX process
    checks nothing is removed). Returns the removed files.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> stale = folder / f".metrics.partial-999999999-{_HOST}.json"
        >>> _ = stale.write_text("{")
        >>> [p.name == stale.name for p in remove_stale_temporaries(folder)]
        [True]
    """
    folder = Path(folder)
    if os.name != "posix" or not folder.is_dir():
        return []
    removed = []
    for candidate in folder.iterdir():
        match = _TEMPORARY.match(candidate.name)
        if match is None or match["host"] != _HOST or _running(int(match["pid"])):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's live process
    except (ProcessLookupError, OverflowError):
        return False
    return True
