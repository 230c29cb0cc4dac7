"""Atomic file writes: a file is either absent, the old version, or complete, never half-written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary name keeps the suffix, so writers that infer the format from it (matplotlib,
    OpenCV) still work. If the block raises, the temporary file is removed and ``path`` is left
    untouched, so an interrupted run never leaves an output that looks complete but is not.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("{}")
        >>> target.read_text()
        '{}'
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
