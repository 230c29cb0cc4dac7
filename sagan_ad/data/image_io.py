"""Decoding image files into fixed-size uint8 arrays, once, in parallel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(RuntimeError):
    """One or more image files could not be read; the message lists every file and why."""


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Scale integer images to 8 bit by their type's range (16-bit PNGs keep their full range)."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        scale = np.iinfo(array.dtype).max / 255.0
        return np.round(array.astype(np.float64) / scale).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {array.dtype}")


def load_image(path: str | os.PathLike, image_size: int, in_channels: int = 1) -> np.ndarray:
    """Read an image file, convert to ``in_channels`` (1 = grayscale, 3 = RGB) and resize.

    Resizing is bilinear (with PIL's antialiasing when shrinking), as in the Med-AD benchmark.

    Returns:
        ``uint8`` array of shape ``(in_channels, image_size, image_size)``.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80), 128).save(p)
        >>> load_image(p, 64).shape
        (1, 64, 64)
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            gray = Image.fromarray(_to_8bit(np.asarray(img)))
            img = gray if in_channels == 1 else gray.convert("RGB")
        else:
            img = img.convert("L" if in_channels == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int,
    in_channels: int = 1,
    num_threads: int | None = None,
) -> np.ndarray:
    """Read many images in parallel into one ``(N, C, S, S)`` uint8 array.

    Every file is tried; if any is missing or unreadable, one `ImageReadError` lists all
    of them, so a user can fix a data set in one pass.

    Examples:
        >>> load_images([], 64).shape
        (0, 1, 64, 64)
    """
    out = np.empty((len(paths), in_channels, image_size, image_size), dtype=np.uint8)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise ImageReadError(f"{len(missing)} image file(s) do not exist:\n  {shown}{more}")

    def read(i: int) -> str | None:
        try:
            out[i] = load_image(paths[i], image_size, in_channels)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            return f"{paths[i]}: {type(err).__name__}: {err}"
        return None

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(read, range(len(paths))) if e is not None]
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ImageReadError(
            f"{len(errors)} image file(s) could not be decoded (corrupt, truncated or not an "
            f"image); fix or remove them from the split:\n  {shown}{more}"
        )
    return out
