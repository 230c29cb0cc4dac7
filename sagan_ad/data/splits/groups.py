"""Patient groups: what keeps the images of one patient on one side of a split.

A group is a column of the data or a DICOM keyword read from the headers (``group_by``), or a
data set's own patient key; `group_values` finds each image's, `group_identity` gives what the
leakage check compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydicom.datadict import tag_for_keyword

from sagan_ad.data.messages import log_once
from sagan_ad.data.reading.headers import COMPARED_TAGS, header_tags
from sagan_ad.data.splits.spellings import GROUP_PREFIX, canonical_id
from sagan_ad.errors import InputError


def from_headers(column: str | None, metadata: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether `group_values` reads ``column`` from the DICOM headers: it is a DICOM keyword
    and no image has a metadata column of that name.

    Examples:
        >>> with_column = {"a": {"PatientID": "P7"}}
        >>> from_headers("PatientID", {"a": {}}), from_headers("PatientID", with_column)
        (True, False)
    """
    if column is None or any(column in values for values in metadata.values()):
        return False
    return tag_for_keyword(column) is not None


def group_values(
    column: str,
    metadata: Mapping[str, Mapping[str, str]],
    paths: Mapping[str, Path],
    store: Path | None,
    force_dicom: bool,
    owner: str,
    headers: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The group of each image of ``paths`` by ``column`` (``group_by``): a metadata column
    where any image has it, else a DICOM keyword read from the headers (`header_tags`, kept in
    ``store``, unless the caller read them already: ``headers``, by image); empty: a group of
    its own.

    Values are compared as the leakage check compares them (`canonical_id`): spaces and NULs
    around them stripped, and the words spreadsheets and pandas write for a missing value
    (``nan``, ``None``, ``NULL``, ``N/A``, ...) are no group: otherwise every image without a
    patient would be one giant patient. How many images have none
    is logged once, naming ``owner``.
    """
    if any(column in metadata.get(name, {}) for name in paths):
        source = "the column is empty or says the value is missing"
        values = {name: metadata.get(name, {}).get(column, "") for name in paths}
    elif tag_for_keyword(column) is None:
        columns = sorted({k for name in paths for k in metadata.get(name, {})})
        raise InputError(
            f"split.group_by={column!r} is neither a column of the data (columns: "
            f"{', '.join(columns) or 'none'}) nor a DICOM keyword such as 'PatientID'"
        )
    else:
        source = "not DICOM, or the tag is empty"
        names = list(paths)
        found = (
            header_tags([paths[n] for n in names], [column], store, force_dicom)
            if headers is None
            else [headers.get(n, {}) for n in names]
        )
        values = {name: f.get(column, "") for name, f in zip(names, found, strict=True)}
    # The form the leakage check compares too (`canonical_id`).
    groups = {name: canonical_id(value) for name, value in values.items()}
    lacking = sum(1 for value in groups.values() if not value)
    if lacking:
        log_once(
            f"{owner}: {lacking} of {len(groups)} images have no {column} ({source}): each is a "
            "group of its own"
        )
    return groups


def group_identity(group_by: str | None, group: str) -> dict[str, str]:
    """What `check_leakage` compares for an image's group: nothing where the group is empty or
    is a DICOM identity tag (compared as such already)."""
    if not group or group_by in COMPARED_TAGS:
        return {}
    return {f"{GROUP_PREFIX}{group_by or 'patient key'})": group}
