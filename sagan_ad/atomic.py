"""Atomic file writes: a file is either absent, the old version, or complete, never half-written."""

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
# ".<stem>.partial-<pid>-<host><suffix>".
_TEMPORARY = re.compile(r"^\..*\.partial-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})(\.[^.]*)?$")
_CLEANED: set[Path] = set()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary name keeps the suffix, so writers that infer the format from it (matplotlib,
    OpenCV) still work. If the block raises, the temporary file is removed and ``path`` is left
    untouched, so an interrupted run never leaves an output that looks complete but is not. The
    first write into a folder also removes the temporaries that killed processes left there
    (`remove_stale_temporaries`). A symbolic link is written through (the link is kept), and a
    target that is an input of the same command or no regular file (a device, FIFO, folder) is
    refused before anything is written (`sagan_ad.protected.writable_target`).

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> with atomic_path(target) as tmp:
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
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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
