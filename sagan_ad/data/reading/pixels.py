"""From an opened image to checked pixel arrays: 16-bit colour, transparency and colour keys,
pixel types and values, and the orientation a viewer shows."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from sagan_ad.errors import InputError


def raw_mode(img: Image.Image) -> str:
    # The decoder's raw mode (for example "L;I", "I;16B", "RGB;16B"), before loading clears it.
    args = img.tile[0][3] if img.tile else None
    return str(args[0] if isinstance(args, tuple) and args else args or "")


def is_sixteen_bit_colour(img: Image.Image) -> bool:
    # PIL decodes 48/64-bit RGB(A) PNGs and TIFFs (and 16-bit grey + alpha) to 8 bits per
    # channel; the raw mode still tells.
    return ";16" in raw_mode(img) and img.mode in ("RGB", "RGBA")


def _opaque(alpha: np.ndarray, opaque: int) -> np.ndarray:
    transparent = int(np.count_nonzero(alpha != opaque))
    if transparent:
        raise InputError(
            f"{transparent} pixel(s) are transparent (alpha channel): what lies under them is "
            "not part of the picture; flatten the image onto a background and save it without "
            "alpha"
        )
    return alpha


def _checked_values(array: np.ndarray) -> np.ndarray:
    """Decoded pixels as uint8, uint16 or float32 in ``[0, 1]``; anything else is refused."""
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        # Converting to 8 bits would silently turn NaN / Inf into ordinary pixels and floats
        # in [0, 1] into a black image.
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"{bad} float pixel(s) are NaN or Inf: fix or re-export the image")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise InputError(
                f"float pixel values range from {array.min():g} to {array.max():g}; float "
                "images are read as intensities in [0, 1] (0 black, 1 white): rescale to [0, 1] "
                "or export as 8 or 16-bit integers"
            )
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise InputError(
                f"{array.dtype.itemsize * 8}-bit integer pixels from {array.min()} to "
                f"{array.max()}, outside 0..65535: export as 8 or 16-bit unsigned integers"
            )
        return array.astype(np.uint16)
    raise InputError(f"pixels of type {array.dtype} are not supported: export as 8 or 16 bit")


CONVERTED_MODES = ("CMYK", "YCbCr", "P")
"""PIL modes that PIL converts to RGB correctly (CMYK naively, as every viewer without a
colour profile does); other colour spaces (LAB, HSV) would come out as wrong colours."""


def _colour_key(array: np.ndarray, key: object) -> None:
    """Refuse the pixels a PNG ``tRNS`` colour key makes transparent (all channels equal)."""
    key = np.asarray(key)
    hit = array == key if array.ndim == 2 else np.all(array == key.reshape(1, 1, -1), axis=-1)
    _opaque(np.where(hit, 0, 1), 1)


def pil_pixels(img: Image.Image) -> np.ndarray:
    img.load()
    # A PNG colour key (tRNS) makes every pixel of that value transparent, as alpha would.
    key = img.info.get("transparency") if img.mode in ("I;16", "I", "L", "RGB") else None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(img).astype(np.uint16)
    elif img.mode in ("I", "F", "L", "RGB"):
        array = _checked_values(np.asarray(img))
    elif img.mode in ("1", "LA", "La"):
        if img.mode != "1":
            _opaque(np.asarray(img.getchannel("A")), 255)
        return np.asarray(img.convert("L"))
    elif img.mode in ("RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        _opaque(np.asarray(rgba.getchannel("A")), 255)
        return np.asarray(rgba.convert("RGB"))
    elif img.mode in CONVERTED_MODES:
        return np.asarray(img.convert("RGB"))
    else:
        raise InputError(
            f"pixel mode {img.mode!r} is not supported (it would be converted to wrong colours "
            "or values): save the image as grayscale or RGB"
        )
    if key is not None and not isinstance(key, bytes):
        _colour_key(array, key)
    return array


def opencv_pixels(data: bytes) -> np.ndarray:
    """The stored pixels of a file's bytes as OpenCV decodes them: full depth, no orientation
    applied."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError("OpenCV could not decode the image")
    return _opencv_values(array)


def _opencv_values(array: np.ndarray) -> np.ndarray:
    """OpenCV's decoded pixels in PIL's channel order, transparency refused, values checked."""
    if array.ndim == 3:
        if array.shape[2] == 4:
            opaque = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
            _opaque(array[..., 3], opaque)
        array = array[..., 2::-1] if array.shape[2] >= 3 else array[..., 0]
    return _checked_values(np.ascontiguousarray(array))


PLAIN_PNG_MODES = ("L", "I;16B", "RGB")
"""PNG pixel layouts (8-bit grey, 16-bit grey, 8-bit RGB) that OpenCV decodes to the values PIL
gives, faster."""


def _png_chunks(data: bytes) -> set[bytes]:
    """The chunk types of a PNG file's bytes (walking the chunk headers, not decoding)."""
    kinds, position = set(), 8
    while position + 8 <= len(data):
        kind = data[position + 4 : position + 8]
        kinds.add(kind)
        if kind == b"IEND":
            break
        position += 12 + int.from_bytes(data[position : position + 4], "big")
    return kinds


def plain_png(img: Image.Image, data: bytes) -> bool:
    """Whether ``img`` is a PNG of a `PLAIN_PNG_MODES` layout without an EXIF chunk (which
    could turn it, and which PIL finds only by decoding the whole file): what `png_pixels`
    reads."""
    return (
        img.format == "PNG"
        and raw_mode(img) in PLAIN_PNG_MODES
        and b"eXIf" not in _png_chunks(data)
    )


def png_pixels(img: Image.Image, data: bytes) -> np.ndarray:
    """The pixels of a `plain_png` as `pil_pixels` gives them (a colour key refused as
    there), decoded by OpenCV; a file OpenCV cannot decode (cut short, damaged) is left to PIL,
    whose error says what is wrong with it."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return pil_pixels(img)
    array = _opencv_values(decoded)
    key = img.info.get("transparency")
    if key is not None and not isinstance(key, bytes):
        _colour_key(array, key)
    return array


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` as a viewer shows it, by its EXIF / TIFF orientation tag (1 to 8)."""
    turns = {3: 2, 6: 3, 8: 1}
    if orientation in (2, 4):
        array = array[:, ::-1] if orientation == 2 else array[::-1]
    elif orientation in turns:
        array = np.rot90(array, turns[orientation])
    elif orientation in (5, 7):
        array = np.swapaxes(array, 0, 1)
        array = array[::-1, ::-1] if orientation == 7 else array
    return np.ascontiguousarray(array)
