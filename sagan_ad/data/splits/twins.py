"""One film under two encodings: images whose decoded pixels, at the resolution the data is
cached at, are the same up to the rounding of a re-encoding (a PNG saved again with other
chunks, a lossless TIFF, a quality-100 JPEG), which a comparison of file bytes cannot see."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sagan_ad.data.storage import atomic_write_text, make_folder

SAME_PIXELS = "the same decoded pixels"
"""The identity under which the leakage check compares decoded images (`pixel_twins`)."""
MEAN_TOLERANCE = 0.5
"""Largest mean absolute difference (grey levels of 255) between two images of one film: a
quality-90 JPEG of a chest film differs from its PNG by about 0.2 at 64 px, two films of the
NIH set by 30 or more."""
MAX_TOLERANCE = 8
"""Largest difference of any one pixel between two images of one film."""
_CHUNK = 1024
_SUM_PIXELS = 1 << 22
_RECORD_FORMAT = 1


def _signatures(images: np.ndarray) -> np.ndarray:
    """Each image as the means of an 8 x 8 grid of blocks per channel."""
    n, _, h, w = images.shape
    rows = [r[0] for r in np.array_split(np.arange(h), min(8, h))]
    cols = [k[0] for k in np.array_split(np.arange(w), min(8, w))]
    sizes = np.multiply.outer(np.diff([*rows, h]), np.diff([*cols, w]))
    # A few million pixels at a time: a float copy of every image at once would cost eight
    # times the images' memory (exact sums either way).
    step = max(1, _SUM_PIXELS // images[0].size)
    blocks = [
        np.add.reduceat(
            np.add.reduceat(images[i : i + step].astype(np.float64), cols, axis=3), rows, axis=2
        )
        for i in range(0, n, step)
    ]
    return (np.concatenate(blocks) / sizes).reshape(n, -1)


def pixel_twins(images: np.ndarray, names: Sequence[str]) -> dict[str, str]:
    """The images of ``names`` that are one film with another (see the module docstring), each
    mapped to the first name of its group; images with no twin are left out.

    Candidates come from a coarse signature (block means). The images are sorted by the mean
    of their signature, in which two candidates differ by at most twice the mean tolerance, so
    each image is compared only with its neighbours in that order (one small matrix product per
    chunk); each candidate pair is then compared pixel by pixel.

    Args:
        images: ``(N, C, S, S)`` uint8, as decoded and resized for the model.
        names: the name of each image.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> films = rng.integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)
        >>> films[2] = films[0]
        >>> films[2, 0, ::3, ::3] ^= 1  # re-encoded: every ninth pixel one level off
        >>> pixel_twins(films, ["a.png", "b.png", "a.jpg"])
        {'a.png': 'a.png', 'a.jpg': 'a.png'}
    """
    n = len(names)
    if n < 2:
        return {}
    signature = _signatures(images)
    # Block means of two images of one film differ by at most the mean tolerance on average;
    # twice that (in the RMS of the blocks) keeps every twin and few others.
    reach = 2 * MEAN_TOLERANCE
    limit = reach**2 * signature.shape[1]
    # Within that limit the signatures' means differ by at most `reach` (Cauchy-Schwarz).
    key = signature.mean(axis=1)
    order = np.argsort(key, kind="stable")
    ordered, keys = signature[order], key[order]
    squared = (ordered**2).sum(axis=1)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    flat = images.reshape(n, -1)
    for start in range(0, n, _CHUNK):
        end = min(start + _CHUNK, n)
        stop = int(np.searchsorted(keys, keys[end - 1] + reach * (1 + 1e-9), side="right"))
        distance = (
            squared[start:end, None]
            + squared[None, start:stop]
            - 2 * ordered[start:end] @ ordered[start:stop].T
        )
        near, other = np.nonzero(distance <= limit)
        later = other > near  # each pair once, never an image with itself
        firsts, seconds = order[near[later] + start], order[other[later] + start]
        for i, j in zip(firsts.tolist(), seconds.tolist(), strict=True):
            if root(i) == root(j):
                continue
            difference = np.abs(flat[i].astype(np.int16) - flat[j].astype(np.int16))
            if difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE:
                parent[max(root(i), root(j))] = min(root(i), root(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return {
        names[i]: names[members[0]]
        for members in groups.values()
        if len(members) > 1
        for i in members
    }


def remembered_pixel_twins(
    images: np.ndarray, names: Sequence[str], record: str | os.PathLike
) -> dict[str, str]:
    """`pixel_twins`, kept in the JSON file ``record`` under a digest of the images' pixels and
    names: a second setup of the same data reads the answer instead of searching again.

    The digest covers every pixel, so any change of a film, of its decoding or of the order
    of the images searches again (and replaces the record); a record that cannot be read is
    searched again too.

    Examples:
        >>> import tempfile
        >>> films = np.zeros((2, 1, 8, 8), np.uint8)
        >>> record = os.path.join(tempfile.mkdtemp(), "twins.json")
        >>> remembered_pixel_twins(films, ["a.png", "b.png"], record)
        {'a.png': 'a.png', 'b.png': 'a.png'}
        >>> remembered_pixel_twins(films, ["a.png", "b.png"], record)  # read back
        {'a.png': 'a.png', 'b.png': 'a.png'}
    """
    digest = hashlib.sha256(repr((_RECORD_FORMAT, images.shape, str(images.dtype))).encode())
    digest.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    digest.update("\0".join(names).encode("utf-8", "surrogatepass"))
    key = digest.hexdigest()
    record = Path(record)
    try:
        with record.open(encoding="utf-8") as f:
            stored = json.load(f)
        if stored["key"] == key:
            return dict(stored["twins"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record yet, another data set's, or unreadable: search
    twins = pixel_twins(images, names)
    make_folder(record.parent)
    atomic_write_text(record, json.dumps({"key": key, "twins": twins}))
    return twins
