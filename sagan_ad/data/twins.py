"""One film under two encodings: images whose decoded pixels, at the resolution the data is
cached at, are the same up to the rounding of a re-encoding (a PNG saved again with other
chunks, a lossless TIFF, a quality-100 JPEG), which a comparison of file bytes cannot see."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAME_PIXELS = "the same decoded pixels"
"""The identity under which the leakage check compares decoded images (`pixel_twins`)."""
MEAN_TOLERANCE = 0.5
"""Largest mean absolute difference (grey levels of 255) between two images of one film: a
quality-90 JPEG of a chest film differs from its PNG by about 0.2 at 64 px, two films of the
NIH set by 30 or more."""
MAX_TOLERANCE = 8
"""Largest difference of any one pixel between two images of one film."""
_CHUNK = 1024


def _signatures(images: np.ndarray) -> np.ndarray:
    """Each image as the means of an 8 x 8 grid of blocks per channel."""
    n, _, h, w = images.shape
    rows = np.array_split(np.arange(h), min(8, h))
    cols = np.array_split(np.arange(w), min(8, w))
    values = images.astype(np.float64)
    blocks = [
        values[:, :, r[0] : r[-1] + 1, k[0] : k[-1] + 1].mean(axis=(2, 3))
        for r in rows
        for k in cols
    ]
    return np.stack(blocks, axis=2).reshape(n, -1)


def pixel_twins(images: np.ndarray, names: Sequence[str]) -> dict[str, str]:
    """The images of ``names`` that are one film with another (see the module docstring), each
    mapped to the first name of its group; images with no twin are left out.

    Candidates come from a coarse signature (block means), so the cost is one small matrix
    product per pair of chunks; each candidate pair is then compared pixel by pixel.

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
    squared = (signature**2).sum(axis=1)
    # Block means of two images of one film differ by at most the mean tolerance on average;
    # twice that (in the RMS of the blocks) keeps every twin and few others.
    limit = (2 * MEAN_TOLERANCE) ** 2 * signature.shape[1]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    flat = images.reshape(n, -1)
    for start in range(0, n, _CHUNK):
        block = signature[start : start + _CHUNK]
        distance = (
            squared[start : start + _CHUNK, None] + squared[None, :] - 2 * block @ signature.T
        )
        for i, j in zip(*np.nonzero(distance <= limit), strict=True):
            i = int(i) + start
            j = int(j)
            if j <= i or root(i) == root(j):
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
