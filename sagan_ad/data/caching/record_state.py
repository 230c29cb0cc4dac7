"""A setup's state as the setup record holds it (JSON and arrays, no pickle), and the warnings
the setup gave, to be given again by a setup read from the record."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagan_ad.data.images.sets import ImageSet
from sagan_ad.errors import SaganError

_TAG = "\0"


class UnrecordableError(SaganError):
    """A setting or a piece of state that the record cannot hold: the setup is not recorded."""


@contextmanager
def captured_setup() -> Iterator[dict[str, list[list]]]:
    """What a setup does besides its state, kept to be done again by a setup read from the
    record (`replay`): the warnings sagan_ad's loggers give (``"logs"``: ``[logger, level,
    message]``) and the inputs it protects from being overwritten (``"protected"``: ``[path,
    what]``)."""
    from sagan_ad import protected
    from sagan_ad.data import messages

    found: dict[str, list[list]] = {"logs": [], "protected": []}

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found["logs"].append([record.name, record.levelno, record.getMessage()])

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("sagan_ad")
    logger.addHandler(handler)
    said, messages.said = messages.said, found["logs"]
    kept, protected.protected_now = protected.protected_now, found["protected"]
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        messages.said, protected.protected_now = said, kept


def replay(done: dict[str, list[list]]) -> None:
    """Give the recorded warnings again, each once per process (as `log_once` does), and
    protect the recorded inputs again."""
    from sagan_ad.data.messages import log_once
    from sagan_ad.protected import protect

    seen = set()
    for name, level, message in done["logs"]:
        if (name, message) not in seen:
            seen.add((name, message))
            log_once(message, level, logging.getLogger(name))
    by_role: dict[str, list[str]] = {}
    for path, what in done["protected"]:
        by_role.setdefault(what, []).append(path)
    for what, paths in by_role.items():
        protect(paths, what)


def encode(value: Any, arrays: list[np.ndarray]) -> Any:
    """``value`` as JSON, its tensors and arrays appended to ``arrays`` (referred to by
    position); `UnrecordableError` for a type the record cannot hold. Plain JSON stays as it is
    (so that reading it back is one ``json.loads``); anything else, and every list or dict that
    holds some, is a one-key dict whose key starts with NUL."""
    return _encode(value, arrays, {})[0]


def _encode(value: Any, arrays: list[np.ndarray], seen: dict) -> tuple[Any, bool]:
    if value is None or isinstance(value, bool | int | float | str):
        return value, False
    if isinstance(value, list):
        items = [_encode(v, arrays, seen) for v in value]
        plain = [item for item, _ in items]
        return ({f"{_TAG}list": plain}, True) if any(t for _, t in items) else (plain, False)
    if isinstance(value, dict) and all(isinstance(k, str) and k[:1] != _TAG for k in value):
        items = {k: _encode(v, arrays, seen) for k, v in value.items()}
        plain = {k: item for k, (item, _) in items.items()}
        tagged = any(t for _, t in items.values())
        return ({f"{_TAG}dict": plain}, True) if tagged else (plain, False)
    if isinstance(value, torch.Tensor | np.ndarray):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        arrays.append(array)
        return {f"{_TAG}{type(value).__name__}": len(arrays) - 1}, True
    if isinstance(value, os.PathLike):
        return {f"{_TAG}path": os.fspath(value)}, True
    if isinstance(value, tuple):
        return {f"{_TAG}tuple": [_encode(v, arrays, seen)[0] for v in value]}, True
    if isinstance(value, ImageSet):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        fields["images"] = _ImageRows(value.images, value.names)
        # Whole columns, not one entry per image: a data set has thousands.
        if value.boxes is not None:
            counts = [len(b) for b in value.boxes]
            boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in value.boxes])
            fields["boxes"] = {"counts": counts, "values": boxes}
        if value.original_sizes is not None:
            fields["original_sizes"] = [list(size) for size in value.original_sizes]
        return {f"{_TAG}image_set": _encode(fields, arrays, seen)[0]}, True
    if isinstance(value, _ImageRows):
        return {f"{_TAG}images": value.encode(arrays, seen)}, True
    raise UnrecordableError(f"state of type {type(value).__name__}")


def decode(value: Any, arrays: Sequence[np.ndarray]) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind[:1] == _TAG:
            return _decode_tagged(kind[1:], inner, arrays)
    return value


def _decode_tagged(kind: str, inner: Any, arrays: Sequence[np.ndarray]) -> Any:
    if kind == "list":
        return [decode(v, arrays) for v in inner]
    if kind == "dict":
        return {k: decode(v, arrays) for k, v in inner.items()}
    if kind == "Tensor":
        return torch.from_numpy(arrays[inner])
    if kind == "ndarray":
        return arrays[inner]
    if kind == "path":
        return Path(inner)
    if kind == "tuple":
        return tuple(decode(v, arrays) for v in inner)
    if kind == "images":
        return _ImageRows.decode(inner, arrays)
    fields = decode(inner, arrays)
    if fields["boxes"] is not None:
        ends = np.cumsum(fields["boxes"]["counts"])
        fields["boxes"] = np.split(fields["boxes"]["values"], ends[:-1])
    if fields["original_sizes"] is not None:
        fields["original_sizes"] = [tuple(size) for size in fields["original_sizes"]]
    return ImageSet(**fields)


class _ImageRows:
    """An image set's images, each kept once per record: an image that an earlier set of the
    record holds under the same name, pixel for pixel (the known normals that also make the
    unlabeled set), is a reference to that row (half the record, and half its reading)."""

    def __init__(self, images: torch.Tensor, names: Sequence[str]) -> None:
        self.images, self.names = images.detach().cpu().numpy(), names

    def encode(self, arrays: list[np.ndarray], seen: dict[str, tuple[int, int]]) -> list:
        own = len(arrays) + 1  # after the references
        refs, new = np.empty((len(self.names), 2), np.int64), []
        for i, name in enumerate(self.names):
            found = seen.get(name)
            if found is not None and np.array_equal(arrays[found[0]][found[1]], self.images[i]):
                refs[i] = found
            else:
                refs[i] = (own, len(new))
                new.append(i)
        arrays += [refs, self.images[new]]
        for row, i in enumerate(new):
            seen.setdefault(self.names[i], (own, row))
        return [own - 1, list(self.images.shape[1:])]

    @staticmethod
    def decode(inner: list, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        refs, shape = arrays[inner[0]], inner[1]
        own = arrays[inner[0] + 1]
        if len(own) == len(refs):  # no reference: the set's own array, in order, uncopied
            return torch.from_numpy(own)
        images = np.empty((len(refs), *shape), np.uint8)
        for source in np.unique(refs[:, 0]):
            rows = refs[:, 0] == source
            images[rows] = arrays[source][refs[rows, 1]]
        return torch.from_numpy(images)
