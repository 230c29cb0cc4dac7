"""Decoding image files (PNG, JPEG, TIFF, DICOM) into fixed-size uint8 arrays."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset

from sagan_ad.data.messages import listing
from sagan_ad.data.reading.bit_depth import BitDepth, scale_bits, unify_bit_depth, used_bits
from sagan_ad.data.reading.blank import blank_reason
from sagan_ad.data.reading.dicom import DicomReadError, header_values, read_dataset, read_dicom
from sagan_ad.data.reading.dicom_options import DicomOptions
from sagan_ad.data.reading.file_kinds import IMAGE_KINDS, is_dicom, missing_reason, sniff_bytes
from sagan_ad.data.reading.pixels import (
    is_sixteen_bit_colour,
    opencv_pixels,
    orient,
    pil_pixels,
    plain_png,
    png_pixels,
    raw_mode,
)
from sagan_ad.data.storage import bytes_digest
from sagan_ad.errors import InputError, UserError, describe

# ITU-R 601-2 luma, the weights PIL uses for "RGB" -> "L".
LUMA = np.array([0.299, 0.587, 0.114])
EXIF_ORIENTATION = 0x0112
TIFF_PHOTOMETRIC = 262


class ImageReadError(UserError, RuntimeError):
    """One or more image files could not be read; the message lists every file and why."""


def decode_image(
    path: str | os.PathLike,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> np.ndarray:
    """Decode a file at its native depth, as a viewer shows it: ``(H, W)`` or ``(H, W, 3)``.

    The EXIF / TIFF orientation tag is applied (TIFFs turned by a quarter are refused: the
    decoders at hand get them wrong). Files holding several images (multi-page TIFF, animated
    PNG), transparent pixels, or float pixels outside ``[0, 1]`` are refused.

    Returns:
        uint8 or uint16 for PNG / JPEG / TIFF (float32 in ``[0, 1]`` for float TIFF), float32
        in ``[0, 1]`` for DICOM in standard mode, uint8 for DICOM in benchmark mode.

    Raises:
        ImageReadError: naming the file and the reason.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x16.png"
        >>> Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(p)
        >>> decode_image(p).dtype, decode_image(p).shape
        (dtype('uint16'), (4, 6))
    """
    return _decode(path, dicom, force_dicom)[0]


def _decode(
    path: str | os.PathLike, dicom: DicomOptions | None, force_dicom: bool
) -> tuple[np.ndarray, Dataset | None, bytes]:
    """`decode_image`, with the DICOM data set (``None`` for other formats) and the file's
    bytes: the file is read once, whatever is asked of it."""
    try:
        if not Path(path).is_file():
            raise ImageReadError(f"{path} {missing_reason(path)}")
        with open(path, "rb") as handle:
            data = handle.read()
        # A PNG saved as .dcm is read as what it is, as a DICOM saved as .png is.
        if is_dicom(path, force_dicom, data) and (
            force_dicom or sniff_bytes(data[:512]) not in IMAGE_KINDS
        ):
            ds = read_dataset(path, data=data)
            return read_dicom(path, dicom, ds), ds, data
        with _open_image(data) as img:
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise InputError(
                    f"the file holds {frames} images (pages or frames): save the one to use as "
                    "a single-image file"
                )
            if plain_png(img, data):
                return png_pixels(img, data), None, data
            # Before anything loads the pixels: loading clears the raw mode that tells.
            sixteen_bit_colour = is_sixteen_bit_colour(img)
            tiff = img.format == "TIFF"
            tags = img.tag_v2 if tiff else img.getexif()
            orientation = int(tags.get(EXIF_ORIENTATION, 1) or 1)
            if tiff and tags.get(TIFF_PHOTOMETRIC) == 0 and not raw_mode(img).endswith(";I"):
                # PIL inverts MinIsWhite (0 = white) only at 1 and 8 bits: deeper or float
                # pixels would come out as a negative.
                raise InputError(
                    f"TIFF photometric MinIsWhite (0 is white) in pixel mode {img.mode!r} is "
                    "not supported: save the image as MinIsBlack (0 is black)"
                )
            if tiff and orientation in (5, 6, 7, 8):
                # PIL (some versions) decodes these with width and height swapped, and OpenCV
                # refuses them: no reader here gives their pixels reliably.
                raise InputError(
                    f"TIFF orientation {orientation} (a quarter turn) is not supported: save the "
                    "image upright"
                )
            if sixteen_bit_colour:
                # PIL reduces 16-bit colour to 8 bits per channel.
                array = opencv_pixels(data)
            else:
                array = pil_pixels(img)
                tags = img.tag_v2 if tiff else img.getexif()
                if EXIF_ORIENTATION not in tags:
                    orientation = 1  # PIL applied it while loading (TIFF, in recent versions)
        return orient(array, orientation), None, data
    except ImageReadError:
        raise
    except DicomReadError as err:
        raise ImageReadError(str(err)) from err
    except Exception as err:
        size = Path(path).stat().st_size if Path(path).is_file() else None
        hint = " (the file is empty)" if size == 0 else ""
        raise ImageReadError(f"{path}{hint}: {describe(err)}") from err


def _open_image(data: bytes) -> Image.Image:
    """``Image.open`` of a file's bytes, with a message saying what the file is when PIL cannot
    read it."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        kind = sniff_bytes(data[:512])
        if kind == "a TIFF image":
            detail = (
                "a TIFF of a kind PIL cannot decode (for example float64 or float16 pixels, or "
                "16-bit grey with alpha): save it as 8 or 16-bit unsigned integers or float32"
            )
        elif kind is None:
            detail = "not a PNG, JPEG, TIFF, BMP or DICOM file"
        else:
            detail = f"not a PNG, JPEG, TIFF, BMP or DICOM file: its bytes say it is {kind}"
        raise InputError(f"{detail}; convert or remove it") from None


def _to_unit_float(array: np.ndarray, bits: int | None) -> np.ndarray:
    if array.dtype == np.float32:
        return array
    scale = 2.0**bits - 1.0 if bits is not None else float(np.iinfo(array.dtype).max)
    return array.astype(np.float32) / np.float32(scale)


def resize_image(
    array: np.ndarray, image_size: int, in_channels: int = 1, bit_depth: BitDepth = "auto"
) -> np.ndarray:
    """Convert a decoded image to ``in_channels`` and resize it to a uint8 square.

    8-bit images take PIL's bilinear resize (antialiased when shrinking) exactly as the Med-AD
    benchmark did; deeper images (16-bit, float, DICOM display values) are resized in float, at
    full precision, with OpenCV's area interpolation (bilinear when enlarging), and quantized
    last.
    16-bit images are scaled by their depth (see `scale_bits` for ``bit_depth``).

    Returns:
        uint8 ``(in_channels, image_size, image_size)``.

    Examples:
        >>> resize_image(np.zeros((100, 80), np.uint16), 32).shape
        (1, 32, 32)
        >>> int(resize_image(np.full((4, 4), 4095, np.uint16), 4).max())  # 12-bit white
        255
    """
    if in_channels not in (1, 3):
        raise InputError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
    size = (image_size, image_size)
    if array.dtype == np.uint8:
        img = Image.fromarray(array)
        img = img.convert("L" if in_channels == 1 else "RGB").resize(size, Image.BILINEAR)
        out = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(out[None] if out.ndim == 2 else out.transpose(2, 0, 1))
    values = _to_unit_float(array, scale_bits(array, bit_depth))
    if values.ndim == 3 and in_channels == 1:
        values = (values @ LUMA).astype(np.float32)
    # OpenCV's area interpolation averages every source pixel a target pixel covers (no
    # aliasing when shrinking); enlarging is bilinear.
    shrinking = values.shape[0] >= image_size and values.shape[1] >= image_size
    method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(values, size, interpolation=method)
    if resized.ndim == 2:
        resized = np.repeat(resized[None], in_channels, axis=0)
    else:
        resized = resized.transpose(2, 0, 1)
    return np.round(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass
class ReadImage:
    """What `read_image` returns.

    Attributes:
        image: uint8 ``(in_channels, image_size, image_size)``.
        original_size: ``(height, width)`` of the decoded image, the frame of boxes.
        bits: for a 16-bit image, the depth its values use (`used_bits`); else ``None``.
        tags: the header values asked for by ``keywords`` (DICOM; ``{}`` for other formats).
        digest: the `bytes_digest` of the file when asked for, else ``""``.
    """

    image: np.ndarray
    original_size: tuple[int, int]
    bits: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    digest: str = ""


def read_image(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
    keywords: tuple[str, ...] = (),
    digest: bool = False,
) -> ReadImage:
    """`load_image` with the original size and the depth a 16-bit image uses, and from the
    same read of the file, the DICOM header values of ``keywords`` and (``digest=True``) the
    digest of its bytes.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.fromarray(np.arange(48, dtype=np.uint16).reshape(8, 6) * 20).save(p)
        >>> read_image(p, 4).bits, read_image(p, 4).original_size
        (10, (8, 6))
    """
    array, dataset, data = _decode(path, dicom, force_dicom)
    try:
        image = resize_image(array, image_size, in_channels, bit_depth)
    except ValueError as err:
        raise ImageReadError(f"{path}: {err}") from err
    blank = blank_reason(array, image)
    if blank is not None:
        raise ImageReadError(
            f"{path}: {blank}; a blank film is no normal and no finding: remove it from the "
            "data (or, for a 16-bit film with so little contrast, check its export)"
        )
    bits = used_bits(array) if array.dtype == np.uint16 else None
    tags = header_values(dataset, keywords) if dataset is not None else {}
    return ReadImage(
        image,
        (int(array.shape[0]), int(array.shape[1])),
        bits,
        tags,
        bytes_digest(data) if digest else "",
    )


def load_image_and_size(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image` plus the original ``(height, width)``, the frame of boxes.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.linear_gradient("L").resize((100, 80)).save(p)
        >>> load_image_and_size(p, 64)[1]
        (80, 100)
    """
    read = read_image(
        path, image_size, in_channels, dicom=dicom, force_dicom=force_dicom, bit_depth=bit_depth
    )
    return read.image, read.original_size


def load_image(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> np.ndarray:
    """Read an image file, convert to ``in_channels`` (1 = grayscale, 3 = RGB) and resize.

    PNG / JPEG / TIFF / BMP at 8 or 16 bit (16-bit data are scaled by the depth they use, see
    ``bit_depth`` in `scale_bits`, after resizing), float TIFF in ``[0, 1]``, and DICOM (by
    suffix ``.dcm`` / ``.dicom``, by the ``DICM`` magic, or ``force_dicom=True`` for files
    without preamble nor suffix), read as set by ``dicom`` (see `DicomOptions`; default: the
    standard display pipeline). Resizing is bilinear (with PIL's antialiasing when shrinking),
    as in the Med-AD benchmark.

    Returns:
        ``uint8`` array of shape ``(in_channels, image_size, image_size)``.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not a supported image.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.linear_gradient("L").resize((100, 80)).save(p)
        >>> load_image(p, 64).shape
        (1, 64, 64)
    """
    return read_image(
        path, image_size, in_channels, dicom=dicom, force_dicom=force_dicom, bit_depth=bit_depth
    ).image


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int,
    in_channels: int = 1,
    num_threads: int | None = None,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> np.ndarray:
    """Read many images in parallel into one ``(N, C, S, S)`` uint8 array.

    The images are one data set: with ``bit_depth="auto"``, 16-bit images are scaled by the
    largest depth any of them uses (`unify_bit_depth`). Every file is tried; if any is missing
    or unreadable, one `ImageReadError` lists all of them, so a user can fix a data set in one
    pass. For large or DICOM data sets prefer `sagan_ad.data.ImageCache`, which decodes each
    file once, on every core.

    Examples:
        >>> load_images([], 64).shape
        (0, 1, 64, 64)
    """
    out = np.empty((len(paths), in_channels, image_size, image_size), dtype=np.uint8)
    missing = [f"{p} {missing_reason(p)}" for p in paths if not Path(p).is_file()]
    if missing:
        raise ImageReadError(f"{len(missing)} image file(s) do not exist:\n  {listing(missing)}")
    bits: list[int | None] = [None] * len(paths)

    def read(i: int) -> str | None:
        try:
            result = read_image(
                paths[i],
                image_size,
                in_channels,
                dicom=dicom,
                force_dicom=force_dicom,
                bit_depth=bit_depth,
            )
        except ImageReadError as err:
            return str(err)
        out[i], bits[i] = result.image, result.bits
        return None

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(read, range(len(paths))) if e is not None]
    if errors:
        raise ImageReadError(
            f"{len(errors)} image file(s) could not be decoded (corrupt, truncated or not an "
            f"image); fix or remove them from the split:\n  {listing(errors)}"
        )
    if paths:
        where = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        unify_bit_depth(out, bits, bit_depth, where, [str(p) for p in paths])
    return out
