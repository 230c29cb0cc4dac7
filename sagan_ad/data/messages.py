"""How the data modules report problems: a message logged once per process, and listings of
files cut short."""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


_logged: set[str] = set()
said: list[list] | None = None
"""Where a setup being recorded keeps its warnings (`sagan_ad.data.caching.setup_record`):
also those this process said before, which a later process reading the record must say
again."""


def log_once(message: str, level: int = logging.WARNING, logger: logging.Logger = log) -> None:
    """Log ``message`` the first time this process meets it (a data set is read more than once
    per run: by ``prepare_data`` and by ``setup``)."""
    if said is not None and level >= logging.WARNING:
        said.append([logger.name, level, message])
    if message not in _logged:
        _logged.add(message)
        logger.log(level, message)


def listing(lines: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` lines of an error listing, then how many more."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n  ".join(lines[:limit]) + more
