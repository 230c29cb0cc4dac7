"""How the data modules report problems: a message logged once per process, and listings of
files cut short."""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


_logged: set[str] = set()


def log_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time this process meets it (a data set is read more than once
    per run: by ``prepare_data`` and by ``setup``)."""
    if message not in _logged:
        _logged.add(message)
        log.log(level, message)


def listing(lines: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` lines of an error listing, then how many more."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n  ".join(lines[:limit]) + more
