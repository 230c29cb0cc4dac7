"""Films that would come out blank: an image whose decoded pixels are all one value, or whose
values span less than one grey level of the 8-bit image the model reads, is refused, whatever
its reader and depth, rather than trained on or scored as a uniform grey."""

from __future__ import annotations

import numpy as np


def blank_reason(decoded: np.ndarray, image: np.ndarray) -> str | None:
    """Why the model input ``image`` (uint8, resized) of the ``decoded`` file is blank, or None.

    Examples:
        >>> blank_reason(np.full((4, 4), 7, np.uint8), np.full((1, 2, 2), 7, np.uint8))
        'every pixel has the value 7: the image is blank'
        >>> narrow = np.array([[30000, 30050]], np.uint16)
        >>> blank_reason(narrow, np.full((1, 2, 2), 117, np.uint8))  # doctest: +ELLIPSIS
        'its values span 30000 to 30050 (uint16), less than one grey level of the 8-bit ...'
        >>> blank_reason(narrow, np.array([[[0, 255]]], np.uint8)) is None
        True
    """
    channels = image.reshape(image.shape[0], -1) if image.ndim == 3 else image.reshape(1, -1)
    if image.size == 0 or (channels.min(axis=1) != channels.max(axis=1)).any():
        return None  # some channel varies across the image
    low, high = decoded.min(), decoded.max()
    if low == high:
        return f"every pixel has the value {_shown(low)}: the image is blank"
    pixels = decoded.reshape(-1, decoded.shape[-1]) if decoded.ndim == 3 else None
    if pixels is not None and (pixels == pixels[0]).all():
        colour = ", ".join(_shown(v) for v in pixels[0])
        return f"every pixel has the colour ({colour}): the image is blank"
    shade = ", ".join(str(int(v)) for v in channels[:, 0])
    return (
        f"its values span {_shown(low)} to {_shown(high)} ({decoded.dtype}), less than one grey "
        f"level of the 8-bit image the model reads: it would come out as a uniform "
        f"{'grey' if len(channels) == 1 else 'colour'} {shade}"
    )


def _shown(value: np.generic) -> str:
    return (
        f"{float(value):g}" if np.issubdtype(np.asarray(value).dtype, np.floating) else str(value)
    )
