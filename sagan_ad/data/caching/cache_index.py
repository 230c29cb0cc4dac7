"""The index of the image cache: one entry per source file, read back leniently, and the
cached rows gathered from the memory-mapped shards.

An entry, keyed by the file's absolute path, is the list ``[shard, row, [height, width], tags,
bits, digest, size, mtime_ns, inode]``: where the pixels are, the original size, the header
values read (``{}`` for files that are not DICOM), the depth a 16-bit image uses, the digest of
the file's bytes, and the size, modification time and inode it had when it was read (the
manifest that a later run compares with one ``stat`` per file, without opening it). Entries
written before the inode was kept have 8 items: they are read, and their files decoded again
under ``"stat"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sagan_ad.data.reading.dicom import read_tags
from sagan_ad.data.storage import content_digest, read_json_store
from sagan_ad.errors import describe

log = logging.getLogger(__name__)

SHARD, ROW, SIZE, TAGS, BITS, DIGEST, BYTES, MTIME, INODE = range(9)
"""Positions in an index entry."""


def entry_ok(value: object) -> bool:
    """Whether an index entry has the layout `ImageCache` writes (see the module)."""
    return (
        isinstance(value, list)
        and len(value) in (8, 9)
        and isinstance(value[SHARD], str)
        and isinstance(value[ROW], int)
        and isinstance(value[SIZE], list)
        and len(value[SIZE]) == 2
        and isinstance(value[TAGS], dict)
        and isinstance(value[DIGEST], str)
        and isinstance(value[BYTES], int)
        and isinstance(value[MTIME], int)
        and (len(value) == 8 or isinstance(value[INODE], int))
    )


def read_index(
    index_path: Path, shape: tuple[int, int, int]
) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """The index at ``index_path`` and its shards, memory-mapped, less the entries whose shard
    row cannot be read back as images of ``shape`` ``(C, S, S)`` (a damaged or deleted shard,
    a damaged entry): those files are decoded again, with a warning."""
    stored = read_json_store(index_path, "the cache index")
    index = {key: value for key, value in stored.items() if entry_ok(value)}
    rows: dict[str, int | None] = {}
    shards: dict[str, np.ndarray] = {}
    for name in {value[SHARD] for value in index.values()}:
        try:
            shard = np.load(index_path.parent / name, mmap_mode="r")
        except (OSError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            if shard.dtype == np.uint8 and shard.ndim == 4 and shard.shape[1:] == shape:
                rows[name] = len(shard)
                shards[name] = shard
                continue
            reason = f"it holds {shard.dtype} images of shape {shard.shape[1:]}"
        rows[name] = None
        log.warning("cache shard %s is damaged (%s): its images are decoded again", name, reason)
    kept = {key: value for key, value in index.items() if (rows[value[SHARD]] or 0) > value[ROW]}
    if len(kept) < len(stored):
        log.warning(
            "the cache index %s has %d entries that cannot be read back: their files are "
            "decoded again",
            index_path,
            len(stored) - len(kept),
        )
    return kept, shards


def gather(
    shards: Mapping[str, np.ndarray], entries: Sequence[list], shape: tuple[int, int, int]
) -> np.ndarray:
    """The cached images of ``entries``, in order: one read per shard, in row order."""
    images = np.empty((len(entries), *shape), dtype=np.uint8)
    by_shard: dict[str, tuple[list[int], list[int]]] = {}
    for out, entry in enumerate(entries):
        positions, rows = by_shard.setdefault(entry[SHARD], ([], []))
        positions.append(out)
        rows.append(entry[ROW])
    for name, (positions, rows) in by_shard.items():
        order = np.argsort(rows, kind="stable")
        images[np.asarray(positions)[order]] = shards[name][np.asarray(rows)[order]]
    return images


def current_entries(
    identity: str,
    paths: Sequence[str],
    keys: Mapping[int, str],
    stats: Mapping[int, os.stat_result],
    index: Mapping[str, list],
) -> dict[int, str]:
    """The index key of each path (by position) whose cached pixels are current: by the size,
    modification time and (under ``"stat"``) inode recorded for its absolute path (``keys``),
    and by ``identity`` (see `sagan_ad.data.caching.cache.ImageCache`) the digest of its bytes."""

    def same_stat(i: int, inode: bool) -> bool:
        value = index.get(keys[i])
        return (
            value is not None
            and value[BYTES] == stats[i].st_size
            and value[MTIME] == stats[i].st_mtime_ns
            # A file replaced by another of the same size and time (os.replace, then its old
            # time put back) is a new inode: the only trace the stat keeps of the swap.
            and (not inode or (len(value) > INODE and value[INODE] == stats[i].st_ino))
        )

    if identity == "stat":
        return {i: keys[i] for i in keys if same_stat(i, inode=True)}
    # "verify" reads the bytes of every candidate: a new inode with the same bytes is current.
    candidates = [i for i in keys if same_stat(i, False)] if identity == "verify" else list(keys)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = pool.map(content_digest, [paths[i] for i in candidates])
        digests = dict(zip(candidates, found, strict=True))
    if identity == "verify":
        return {i: keys[i] for i in candidates if index[keys[i]][DIGEST] == digests[i]}
    by_digest = {value[DIGEST]: key for key, value in index.items()}
    return {i: by_digest[d] for i, d in digests.items() if d in by_digest}


def add_header_values(
    paths: Sequence[str],
    entry: Mapping[int, str],
    index: Mapping[str, list],
    keywords: tuple[str, ...],
    problems: dict[int, str],
) -> bool:
    """Read the ``keywords`` of the DICOM files whose entries lack them (cached when an earlier
    run asked for other header values) into those entries; a file whose header cannot be read
    goes to ``problems``. Returns whether an entry changed."""
    lacking = [
        i
        for i, key in entry.items()
        if index[key][TAGS] and set(keywords) - index[key][TAGS].keys()
    ]
    if not lacking:
        return False
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(lambda i: _header_or_error(paths[i], keywords), lacking))
    for i, tags in zip(lacking, found, strict=True):
        if isinstance(tags, str):
            problems[i] = tags
        else:
            index[entry[i]][TAGS].update(tags)
    return True


def _header_or_error(path: str, keywords: tuple[str, ...]) -> dict[str, str] | str:
    try:
        return read_tags(path, keywords)
    except Exception as err:
        return f"{path}: {describe(err)}"
