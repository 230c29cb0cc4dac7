"""Reading a Med-AD ``data.json`` split file: its JSON, its keys and its lists of names."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from sagan_ad.data.splits.leakage import check_disjoint
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.split import SplitError
from sagan_ad.protected import protect


def _names(node: object, where: str, path: Path) -> list[str]:
    if not isinstance(node, list) or not all(isinstance(n, str) for n in node):
        raise SplitError(f"{path}: {where} must be a list of file names")
    return list(node)


SPLIT_KEYS: dict[str, tuple[str, ...]] = {
    "": ("train", "test", "val"),
    "train": ("0", "unlabeled"),
    "train.unlabeled": ("0", "1", "unknown"),
    "test": ("0", "1"),
    "val": ("0", "1"),
}
"""The keys a ``data.json`` object may hold, by its place in the file (``""``: the top)."""


def _check_keys(node: Mapping, where: str, path: Path) -> None:
    allowed = SPLIT_KEYS[where]
    for key in node:
        if key in allowed:
            continue
        place = f"{where}.{key!r}" if where else repr(key)
        lower = str(key).lower()
        close = [k for k in allowed if len(k) > 1 and lower.startswith(k)]
        close = close or difflib.get_close_matches(lower, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        inside = f"in {where}" if where else "at the top"
        raise SplitError(
            f"{path}: unknown key {place}{hint} (the keys allowed {inside} are "
            f"{', '.join(repr(k) for k in allowed)}); a Med-AD data.json has "
            '{"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}}, '
            '"test": {"0": [...], "1": [...]}, "val": {"0": [...], "1": [...]}}'
        )


def _child(node: object, key: str, where: str, path: Path, required: bool = True) -> object:
    if not isinstance(node, Mapping):
        raise SplitError(f"{path}: {where or 'the top level'} must be an object")
    _check_keys(node, where, path)
    if key not in node:
        if not required:
            return None
        raise SplitError(
            f"{path}: missing key {where}.{key!r}; a Med-AD data.json has "
            '{"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}}, '
            '"test": {"0": [...], "1": [...]}}'
        )
    return node[key]


def read_medad_split(path: str | os.PathLike) -> MedADSplit:
    """Parse and validate a Med-AD ``data.json``.

    ``train."0"`` is required; the unlabeled pools and the test set may be empty or absent (then
    there is no unlabeled data or no test set); ``val`` is optional.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "data.json"
        >>> _ = p.write_text('{"train": {"0": ["a.png"]}}')
        >>> read_medad_split(p).known_normal
        ['a.png']
    """
    path = Path(path)
    if path.is_dir():
        raise SplitError(f"{path} is a folder: data.json must be the JSON split file")
    if not path.is_file():
        raise SplitError(
            f"{path} does not exist: a Med-AD dataset folder holds images/ and data.json "
            "(see the README, 'Your own data')"
        )
    data = _read_json(path)
    train = _child(data, "train", "", path)
    known = _names(_child(train, "0", "train", path), 'train."0"', path)
    if not known:
        raise SplitError(f'{path}: train."0" is empty: training needs known normal images')
    pools: dict[str, list[str]] = {"0": [], "1": []}
    unlabeled = _child(train, "unlabeled", "train", path, required=False)
    unknown: list[str] = []
    if unlabeled is not None:
        for label in pools:
            node = _child(unlabeled, label, "train.unlabeled", path, required=False)
            pools[label] = [] if node is None else _names(node, f"train.unlabeled.{label!r}", path)
        node = _child(unlabeled, "unknown", "train.unlabeled", path, required=False)
        unknown = [] if node is None else _names(node, 'train.unlabeled."unknown"', path)
    sets: dict[str, dict[str, list[str]]] = {}
    for part in ("test", "val"):
        node = _child(data, part, "", path, required=False)
        sets[part] = {"0": [], "1": []}
        if node is not None:
            for label in ("0", "1"):
                sets[part][label] = _names(
                    _child(node, label, part, path), f"{part}.{label!r}", path
                )
    split = MedADSplit(
        known_normal=known,
        pool_normal=pools["0"],
        pool_abnormal=pools["1"],
        test_normal=sets["test"]["0"],
        test_abnormal=sets["test"]["1"],
        val_normal=sets["val"]["0"],
        val_abnormal=sets["val"]["1"],
        pool_unknown=unknown,
    )
    check_disjoint(split.parts(), source=str(path))
    return split


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise SplitError(
                f"key {key!r} appears twice in one object, and JSON keeps only the last: merge "
                "the two lists under one key"
            )
        seen.add(key)
    return dict(pairs)


def _read_json(path: Path) -> object:
    protect(path, "the split file read by this command")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SplitError(f"{path} cannot be read ({err.strerror}): check its permissions") from err
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is harmless.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff")
        guess = " (it looks like UTF-16)" if utf16 else ""
        raise SplitError(
            f"{path} is not UTF-8 text{guess}: byte 0x{raw[err.start]:02x} at position "
            f"{err.start} cannot be decoded; save the file as UTF-8"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise SplitError(f"{path} is not valid JSON: {err}") from err
    except SplitError as err:
        raise SplitError(f"{path}: {err}") from None
