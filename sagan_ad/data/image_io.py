"""Decoding image files (PNG, JPEG, TIFF, DICOM) into fixed-size uint8 arrays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sagan_ad.data.dicom import DicomOptions, DicomReadError, is_dicom_file, read_dicom

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)
# ITU-R 601-2 luma, the weights PIL uses for "RGB" -> "L".
LUMA = np.array([0.299, 0.587, 0.114])


class ImageReadError(RuntimeError):
    """One or more image files could not be read; the message lists every file and why."""


def is_dicom(path: str | os.PathLike, force_dicom: bool = False) -> bool:
    """Whether ``path`` is read as DICOM: forced, by suffix, or by the ``DICM`` magic.

    Examples:
        >>> is_dicom("scan.dcm"), is_dicom("scan.bin", force_dicom=True)
        (True, True)
    """
    if force_dicom or Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    return Path(path).is_file() and is_dicom_file(path)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, sorted: by suffix (`IMAGE_SUFFIXES`), plus
    files without a suffix that carry the DICOM magic (PACS exports such as ``IM000001``).

    Examples:
        >>> import tempfile
        >>> find_images(tempfile.mkdtemp())
        []
    """
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file()
        and (p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and is_dicom_file(p)))
    )


def _sixteen_bit_colour(img: Image.Image) -> bool:
    # PIL decodes 48/64-bit RGB(A) PNGs and TIFFs to 8-bit RGB; the raw mode still tells.
    return bool(img.tile) and ";16" in str(img.tile[0][3]) and img.mode in ("RGB", "RGBA")


def decode_image(
    path: str | os.PathLike,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> np.ndarray:
    """Decode a file at its native depth: ``(H, W)`` or ``(H, W, 3)``.

    Returns:
        uint8 or uint16 for PNG / JPEG / TIFF, float32 in ``[0, 1]`` for DICOM in standard mode,
        uint8 for DICOM in benchmark mode.

    Raises:
        ImageReadError: naming the file and the reason.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x16.png"
        >>> Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(p)
        >>> decode_image(p).dtype, decode_image(p).shape
        (dtype('uint16'), (4, 6))
    """
    try:
        if is_dicom(path, force_dicom):
            return read_dicom(path, dicom)
        with Image.open(path) as img:
            if _sixteen_bit_colour(img):
                array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if array is None:
                    raise ValueError("OpenCV could not decode the 16-bit colour image")
                return np.ascontiguousarray(array[..., 2::-1])
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img).astype(np.uint16)
            if img.mode == "I":
                array = np.asarray(img)
                if array.min() < 0 or array.max() > 65535:
                    raise ValueError("32-bit integer pixels outside 0..65535")
                return array.astype(np.uint16)
            if img.mode in ("L", "RGB"):
                return np.asarray(img)
            if img.mode == "F":
                # Converting to RGB below would silently turn NaN / Inf into ordinary pixels.
                bad = int(np.count_nonzero(~np.isfinite(np.asarray(img))))
                if bad:
                    raise ValueError(
                        f"{bad} float pixel(s) are NaN or Inf: fix or re-export the image"
                    )
            return np.asarray(img.convert("RGB"))
    except DicomReadError as err:
        raise ImageReadError(str(err)) from err
    except Exception as err:
        size = Path(path).stat().st_size if Path(path).is_file() else None
        hint = " (the file is empty)" if size == 0 else ""
        raise ImageReadError(f"{path}{hint}: {type(err).__name__}: {err}") from err


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float32:
        return array
    return array.astype(np.float32) / float(np.iinfo(array.dtype).max)


def resize_image(array: np.ndarray, image_size: int, in_channels: int = 1) -> np.ndarray:
    """Convert a decoded image to ``in_channels`` and resize it to a uint8 square.

    8-bit images take PIL's bilinear resize (antialiased when shrinking) exactly as the Med-AD
    benchmark did; deeper images are resized in float, at full precision, and quantized last.

    Returns:
        uint8 ``(in_channels, image_size, image_size)``.

    Examples:
        >>> resize_image(np.zeros((100, 80), np.uint16), 32).shape
        (1, 32, 32)
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
    size = (image_size, image_size)
    if array.dtype == np.uint8:
        img = Image.fromarray(array)
        img = img.convert("L" if in_channels == 1 else "RGB").resize(size, Image.BILINEAR)
        out = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(out[None] if out.ndim == 2 else out.transpose(2, 0, 1))
    values = _to_unit_float(array)
    if values.ndim == 3 and in_channels == 1:
        values = (values @ LUMA).astype(np.float32)
    planes = [values] if values.ndim == 2 else [values[..., c] for c in range(3)]
    resized = [
        np.asarray(Image.fromarray(p, mode="F").resize(size, Image.BILINEAR)) for p in planes
    ]
    if in_channels == 3 and len(resized) == 1:
        resized = resized * 3
    stacked = np.stack(resized)
    return np.round(np.clip(stacked, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_image_and_size(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image` plus the original ``(height, width)``, the frame of boxes.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80), 128).save(p)
        >>> load_image_and_size(p, 64)[1]
        (80, 100)
    """
    array = decode_image(path, dicom, force_dicom)
    return resize_image(array, image_size, in_channels), (int(array.shape[0]), int(array.shape[1]))


def load_image(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> np.ndarray:
    """Read an image file, convert to ``in_channels`` (1 = grayscale, 3 = RGB) and resize.

    PNG / JPEG / TIFF at 8 or 16 bit (16-bit data are scaled by the type's range, after
    resizing), and DICOM (by suffix ``.dcm`` / ``.dicom``, by the ``DICM`` magic, or
    ``force_dicom=True`` for files without preamble nor suffix), read as set by ``dicom``
    (see `DicomOptions`; default: the standard display pipeline). Resizing is bilinear (with
    PIL's antialiasing when shrinking), as in the Med-AD benchmark.

    Returns:
        ``uint8`` array of shape ``(in_channels, image_size, image_size)``.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not a supported image.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80), 128).save(p)
        >>> load_image(p, 64).shape
        (1, 64, 64)
    """
    return load_image_and_size(path, image_size, in_channels, dicom=dicom, force_dicom=force_dicom)[
        0
    ]


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int,
    in_channels: int = 1,
    num_threads: int | None = None,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> np.ndarray:
    """Read many images in parallel into one ``(N, C, S, S)`` uint8 array.

    Every file is tried; if any is missing or unreadable, one `ImageReadError` lists all
    of them, so a user can fix a data set in one pass. For large or DICOM data sets prefer
    `sagan_ad.data.ImageCache`, which decodes each file once, on every core.

    Examples:
        >>> load_images([], 64).shape
        (0, 1, 64, 64)
    """
    out = np.empty((len(paths), in_channels, image_size, image_size), dtype=np.uint8)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise ImageReadError(f"{len(missing)} image file(s) do not exist:\n  {listing(missing)}")

    def read(i: int) -> str | None:
        try:
            out[i] = load_image(
                paths[i], image_size, in_channels, dicom=dicom, force_dicom=force_dicom
            )
        except ImageReadError as err:
            return str(err)
        return None

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(read, range(len(paths))) if e is not None]
    if errors:
        raise ImageReadError(
            f"{len(errors)} image file(s) could not be decoded (corrupt, truncated or not an "
            f"image); fix or remove them from the split:\n  {listing(errors)}"
        )
    return out


def listing(lines: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` lines of an error listing, then how many more."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n  ".join(lines[:limit]) + more
