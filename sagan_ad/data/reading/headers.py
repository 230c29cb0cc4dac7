"""DICOM header values of many files, read without the pixel data and kept between runs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sagan_ad.data.reading.dicom import read_tags
from sagan_ad.data.reading.file_kinds import is_dicom
from sagan_ad.data.reading.image_io import ImageReadError
from sagan_ad.data.storage import (
    atomic_write_text,
    file_key,
    make_folder,
    read_json_store,
)

COMPARED_TAGS = ("PatientID", "SOPInstanceUID")
"""DICOM header values the leakage check compares across the sides of a split."""
IDENTITY_TAGS = (*COMPARED_TAGS, "PatientName", "PatientBirthDate")
"""DICOM header values kept with every cached image for the leakage check: those it compares,
and those that tell one patient spelt two ways
(`sagan_ad.data.splits.spellings.near_identical_ids`)."""


def header_tags(
    paths: Sequence[str | os.PathLike],
    keywords: Sequence[str],
    store: str | os.PathLike | None = None,
    force_dicom: bool = False,
) -> list[dict[str, str]]:
    """DICOM header values of many files (``""`` where absent, ``{}`` for other formats), read
    without the pixel data, on every core, and kept in the JSON file ``store`` (by file key:
    path, size, modification time) so that the next call reads only new or changed files.

    What the raw DataModules read to group images by a DICOM tag before drawing the split.

    Examples:
        >>> header_tags([], ["PatientID"])
        []
    """
    keywords = tuple(keywords)
    store = None if store is None else Path(store)
    known: dict = {} if store is None else read_json_store(store, "the header store")
    known = {
        key: entry
        for key, entry in known.items()
        if isinstance(entry, dict) and isinstance(entry.get("tags"), dict) and "dicom" in entry
    }
    keys = [file_key(p) for p in paths]

    def stale(key: str) -> bool:
        entry = known.get(key)
        return entry is None or (entry["dicom"] and not set(keywords) <= set(entry["tags"]))

    todo = [i for i, key in enumerate(keys) if stale(key)]

    def read(i: int) -> dict:
        if not is_dicom(paths[i], force_dicom):
            return {"dicom": False, "tags": {}}
        try:
            return {"dicom": True, "tags": read_tags(paths[i], keywords)}
        except Exception as err:
            raise ImageReadError(f"{paths[i]}: {err}") from err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, found in zip(todo, pool.map(read, todo), strict=True):
            old = known.get(keys[i], {}).get("tags", {})
            known[keys[i]] = {"dicom": found["dicom"], "tags": {**old, **found["tags"]}}
    if todo and store is not None:
        make_folder(store.parent)
        atomic_write_text(store, json.dumps(known))
    return [
        {k: known[key]["tags"].get(k, "") for k in keywords} if known[key]["dicom"] else {}
        for key in keys
    ]
