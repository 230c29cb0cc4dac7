"""The CSV tables of releases and users: required columns checked, errors that name the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

from sagan_ad.data.messages import log_once
from sagan_ad.data.storage import file_identity
from sagan_ad.errors import InputError, MissingFileError
from sagan_ad.protected import protect


def separator_hint(columns: list[str]) -> str:
    """A note when a CSV's one column looks like several joined by another separator (Excel
    writes ``;`` in many locales; some exports tabs), else ``""``.

    Examples:
        >>> separator_hint(["path;site"])
        "; the columns seem separated by ';': save it comma-separated"
    """
    other = next((d for d in (";", "\t", "|") if len(columns) == 1 and d in columns[0]), "")
    return f"; the columns seem separated by {other!r}: save it comma-separated" if other else ""


def read_csv(path: Path, columns: tuple[str, ...], layout: str) -> list[dict[str, str]]:
    """Rows of a CSV file that must have ``columns``; errors name the file and its layout."""
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: expected {layout}")
    protect(path, "a table read by this command")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                found = reader.fieldnames or []
                raise InputError(
                    f"{path}: missing column(s) {', '.join(missing)} (has {found})"
                    f"{separator_hint(found)}; expected {layout}"
                )
            return [
                {k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader
            ]
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at position "
            f"{err.start}): save it as UTF-8"
        ) from None


def number(text: str) -> float:
    """A CSV coordinate; empty or non-numeric gives NaN, which `box_problem` reports."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_metadata_csv(
    path: Path, images: Path, names: Iterable[str], required: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """The rows of the ``metadata_csv`` file ``path`` by the name of the image they describe.

    Its ``file`` column names each image as ``data.json`` does (relative to ``images``, like
    ``names``); its other columns are the image's metadata. ``required`` maps options to the
    columns they need (``{"val_balance_by": "view_position"}``). Rows and names are matched as
    files, as the split's names are (``./x.png`` is ``x.png``). Two rows for one image are an
    error (which one would hold?); rows that describe no image of ``names`` are counted in one
    warning (a misspelt name would otherwise leave its image without metadata unseen).
    """
    if not path.is_file():
        raise MissingFileError(f"metadata_csv={str(path)!r} does not exist")
    protect(path, "the metadata_csv read by this command")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "file" not in columns:
            raise InputError(
                f"metadata_csv {path} has no 'file' column (has {columns})"
                f"{separator_hint(columns)}: name each image as data.json does in a column "
                "called file"
            )
        for option, column in required.items():
            if column not in columns:
                raise InputError(f"{option}={column!r} is not a column of {path} (has {columns})")
        rows = list(enumerate(reader, start=2))
    by_file = {file_identity(images / name): name for name in names}
    found: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    twice, unmatched = [], []
    for line, row in rows:
        name = by_file.get(file_identity(images / (row.get("file") or "").strip()))
        if name is None:
            unmatched.append(str(row.get("file")))
        elif name in found:
            twice.append(f"lines {lines[name]} and {line} ({name})")
        else:
            lines[name] = line
            found[name] = {k: (v or "").strip() for k, v in row.items() if k not in ("file", None)}
    if twice:
        raise InputError(
            f"metadata_csv {path} describes one image twice: {', '.join(twice[:10])}; keep "
            "one row per image"
        )
    if unmatched:
        log_once(
            f"metadata_csv {path}: {len(unmatched)} row(s) name no image of data.json (for "
            f"example {', '.join(repr(n) for n in unmatched[:3])}); their metadata is unused"
        )
    return found
