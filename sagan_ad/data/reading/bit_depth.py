"""Bit depth of 16-bit images: the depth each image uses, the scale it is read at, and one depth
for a whole data set."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np

from sagan_ad.data.messages import log_once
from sagan_ad.errors import InputError

BitDepth = int | Literal["auto", "dtype"]


def check_bit_depth(bit_depth: BitDepth) -> None:
    """Raise a `ValueError` naming ``bit_depth`` unless it is ``"auto"``, ``"dtype"`` or 1..16.

    Examples:
        >>> check_bit_depth(12)
        >>> check_bit_depth(20)
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: bit_depth=20: must be 'auto', 'dtype' or a number of bits ...
    """
    if bit_depth in ("auto", "dtype"):
        return
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or not 1 <= bit_depth <= 16:
        raise InputError(
            f"bit_depth={bit_depth!r}: must be 'auto', 'dtype' or a number of bits from 1 to 16"
        )


def used_bits(array: np.ndarray) -> int:
    """The even depth (8, 10, 12, 14 or 16 bits: the depths scanners export) that holds the
    largest value of a 16-bit image.

    Examples:
        >>> used_bits(np.array([0, 4095], np.uint16)), used_bits(np.array([4096], np.uint16))
        (12, 14)
    """
    bits = max(8, int(array.max()).bit_length()) if array.size else 8
    return min(16, bits + bits % 2)


def scale_bits(array: np.ndarray, bit_depth: BitDepth = "auto") -> int | None:
    """The depth a 16-bit image is scaled by (``2**bits - 1`` is white); ``None`` for others.

    ``"auto"``: `used_bits` of the image, so 12-bit data exported in 16-bit files keep their
    contrast (the readers of data sets then bring every image to the data set's largest depth,
    see `unify_bit_depth`); ``"dtype"``: 16 (the type's range); a number: that depth, and a
    value above it is an error.

    Examples:
        >>> scale_bits(np.array([0, 4000], np.uint16)), scale_bits(np.zeros(2, np.uint8))
        (12, None)
    """
    if array.dtype != np.uint16:
        return None
    if bit_depth == "auto":
        return used_bits(array)
    if bit_depth == "dtype":
        return 16
    top = int(array.max()) if array.size else 0
    if top > 2**bit_depth - 1:
        raise InputError(
            f"pixel value {top} exceeds bit_depth={bit_depth} (largest {2**bit_depth - 1}): set "
            "bit_depth to the depth the files were exported with, or 'auto'"
        )
    return int(bit_depth)


def data_set_depth(bits: Sequence[int | None], bit_depth: BitDepth, where: str) -> int | None:
    """The depth the 16-bit images of one data set are brought to, saying so once.

    With ``"auto"``: the largest `used_bits` of the images (logged; a warning when they
    differ, since then a few deep files set the scale of all). With ``"dtype"``: ``None``, and
    a warning when the files use fewer than 16 bits (12-bit exports lose contrast that way).
    An explicit depth: ``None`` (nothing to bring together).

    Args:
        bits: `used_bits` of each image (``None`` for images that are not 16-bit).
        bit_depth: the setting the images were read with.
        where: the data set, for the messages.

    Examples:
        >>> data_set_depth([12, None, 12], "auto", "demo")
        12
    """
    depths = Counter(b for b in bits if b is not None)
    if not depths:
        return None
    listed = ", ".join(f"{n} use {b} bits" for b, n in sorted(depths.items()))
    top = max(depths)
    if bit_depth == "dtype" and top < 16:
        log_once(
            f"{where}: of the 16-bit files, {listed}; bit_depth='dtype' scales them by 65535, "
            "so they lose contrast: set bit_depth='auto' or the depth they were exported with "
            f"(for example {top}; a DataModule's decode.bit_depth)"
        )
    if bit_depth != "auto":
        return None
    if len(depths) > 1:
        log_once(
            f"{where}: of the 16-bit files, {listed}; bit_depth='auto' scales them all by the "
            f"largest depth ({2**top - 1} is white): if the deeper files are outliers, remove "
            "them or set bit_depth (a DataModule's decode.bit_depth) to the export depth"
        )
    else:
        log_once(
            f"{where}: the 16-bit files use {top} bits: scaled by {2**top - 1} "
            f"(bit_depth='auto'; pass bit_depth={top}, a DataModule's decode.bit_depth, to read "
            "other images of this data set alike)",
            logging.INFO,
        )
    return top


def unify_bit_depth(
    images: np.ndarray,
    bits: Sequence[int | None],
    bit_depth: BitDepth,
    where: str,
    names: Sequence[object] | None = None,
) -> int | None:
    """Bring the 16-bit images of one data set to the `data_set_depth`, in place.

    With ``"auto"`` each image was scaled by its own `used_bits`; those that use fewer bits
    than the data set's depth are rescaled to it (within one grey level of scaling them by it
    directly), so that the same value is the same grey in every image.

    Args:
        images: uint8 ``(N, C, S, S)``, changed in place.
        bits: `used_bits` of each image (``None`` for images that are not 16-bit).
        bit_depth: the setting the images were read with.
        where: the data set, for the messages.
        names: the file of each image: an image that the data set's depth flattens to one grey
            is then refused, naming it (`ValueError`).

    Returns:
        The data set's depth under ``"auto"`` (``None`` without 16-bit images or otherwise).

    Examples:
        >>> images = np.array([255, 255], np.uint8).reshape(2, 1, 1, 1)
        >>> unify_bit_depth(images, [12, 14], "auto", "demo"), images.ravel().tolist()
        (14, [64, 255])
    """
    if bit_depth == "auto":
        _warn_outlier_depth(images, bits, where)
    top = data_set_depth(bits, bit_depth, where)
    flattened = []
    if top is not None:
        for i, b in enumerate(bits):
            if b is not None and b < top:
                factor = (2.0**b - 1.0) / (2.0**top - 1.0)
                images[i] = np.round(images[i] * factor).astype(np.uint8)
                if names is not None and images[i].min() == images[i].max():
                    flattened.append(f"{names[i]} (uses {b} bits)")
    if flattened:
        raise InputError(
            f"{where}: {len(flattened)} 16-bit image(s) hold so little of the data set's "
            f"{top}-bit scale that they come out as one uniform grey: {', '.join(flattened[:10])}"
            "; remove them, or set bit_depth (a DataModule's decode.bit_depth) to the depth they "
            "were exported with"
        )
    return top


def _warn_outlier_depth(images: np.ndarray, bits: Sequence[int | None], where: str) -> None:
    """Warn when 16-bit images, each scaled by the depth its largest value needs, keep nearly
    all their pixels (99%) in the darkest quarter: a few pixels far above the rest (a burned-in
    marker or text at 65535) then set the depth, and the anatomy keeps a fraction of its
    contrast. Nothing is clipped to save it: that would change the markers silently."""
    dim = [
        i
        for i, b in enumerate(bits)
        if b is not None and b > 8 and np.percentile(images[i], 99) < 64
    ]
    if dim:
        log_once(
            f"{where}: {len(dim)} of the 16-bit images keep 99% of their pixels in the "
            "darkest quarter of their scale: a few pixels far brighter than the rest (burned-in "
            "markers or text?) set their depth, and the rest keeps a fraction of its contrast; "
            "remove those pixels or export the images without them"
        )
