"""Reading DICOM pixel data the way a radiologist's viewer shows it (or the benchmark's way)."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_presentation_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sagan_ad.data.reading.dicom_bits import bits_stored_problem
from sagan_ad.data.reading.dicom_options import DicomOptions
from sagan_ad.data.reading.dicom_voi import first_value, padding_mask, usable_lut, voi
from sagan_ad.errors import DataError

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
UNDEFINED_LENGTH = 0xFFFFFFFF
NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PLUGIN_HINT = (
    "install the decoders with: pip install 'sagan-ad[dicom]' (pylibjpeg, pylibjpeg-libjpeg, "
    "pylibjpeg-openjpeg; python-gdcm also works)"
)


class DicomReadError(DataError):
    """A DICOM file cannot be turned into an image; the message names the file and the fix."""


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether the file has the DICOM preamble magic (``DICM`` at byte 128).

    Examples:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> _ = open(p, "wb").write(b"\\0" * 128 + b"DICM")
        >>> is_dicom_file(p)
        True
    """
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def read_dataset(
    path: str | os.PathLike, header_only: bool = False, data: bytes | None = None
) -> Dataset:
    """Parse a DICOM file, with or without the preamble and file meta (old ACR-NEMA files).

    A file without file meta gets the transfer syntax its encoding implies, so that its pixel
    data can be decoded. ``header_only`` stops before the pixel data (fast metadata reads).
    ``data``: the file's bytes, already read (``path`` then only names the file).
    """
    size = os.path.getsize(path) if data is None else len(data)
    # A DICOM file cut inside its 128-byte preamble has lost its whole header as well.
    cut = f" (the file has only {size} bytes: truncated?)" if size < 132 else ""

    def parse(force: bool) -> Dataset:
        source = path if data is None else io.BytesIO(data)
        return pydicom.dcmread(source, force=force, stop_before_pixels=header_only)

    try:
        ds = parse(force=False)
    except InvalidDicomError:
        try:
            ds = parse(force=True)
        except Exception as err:
            raise DicomReadError(f"{path}: not a DICOM file{cut} ({err})") from err
        # Zero bytes parse as elements of group 0, which no DICOM data set holds.
        if all(element.tag.group == 0 for element in ds.elements()):
            raise DicomReadError(
                f"{path}: not a DICOM file{cut} (no data elements found)"
            ) from None
    problem = _truncation(ds, size, header_only)
    if problem:
        raise DicomReadError(
            f"{path}: the DICOM file is truncated: {problem}; copy or export it again"
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return ds


def _truncation(ds: Dataset, size: int, header_only: bool) -> str | None:
    """How the file behind ``ds`` is cut short, or ``None``.

    pydicom stops quietly where a file ends, so a file cut inside its header would otherwise
    look like a file without pixel data.
    """
    group_length = ds.file_meta.get("FileMetaInformationGroupLength")
    if group_length in ("", b""):
        return f"it ends at byte {size}, inside the file meta header"
    if group_length is not None:
        start = 0 if getattr(ds, "preamble", None) is None else 132
        meta_end = start + 12 + int(group_length)
        if meta_end > size:
            return f"it ends at byte {size}, inside the file meta header (which ends at {meta_end})"
    if len(ds) == 0:
        return f"it ends at byte {size}, before the first data element"
    end = None
    for element in ds.elements():
        if not isinstance(element, RawDataElement) or element.length == UNDEFINED_LENGTH:
            end = None
            continue
        got = 0 if element.value is None else len(element.value)
        if got < element.length:
            return (
                f"it ends at byte {size}, inside element {element.tag} which needs "
                f"{element.length} bytes and has {got}"
            )
        end = element.value_tell + element.length
    # Fewer bytes than an element header (8) after the last element: a header cut short.
    if not header_only and end is not None and 0 < size - end < 8:
        return f"it ends at byte {size}, inside the header of an element"
    return None


def _decoded_pixels(ds: Dataset, path: str | os.PathLike) -> np.ndarray:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomReadError(
            f"{path}: the DICOM file has no pixel data (a report, structured report or "
            "presentation state?): remove it from the data set"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAYSCALE + COLOUR:
        raise DicomReadError(
            f"{path}: photometric interpretation {photometric or '(missing)'!r} is not "
            f"supported (supported: {', '.join(GRAYSCALE + COLOUR)}): convert or remove the file"
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomReadError(
            f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames) is not a radiograph: "
            "export the frame you want as a single-frame file"
        )
    _check_pixel_module(ds, path, photometric)
    contradiction = bits_stored_problem(ds)
    if contradiction:
        raise DicomReadError(f"{path}: {contradiction}")
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        pixels = _native_pixels(ds)
        if pixels is None:
            pixels = ds.pixel_array
    except Exception as err:
        if syntax.is_compressed:
            raise DicomReadError(
                f"{path}: pixel data use the compressed transfer syntax {syntax.name} ({syntax}) "
                f"and could not be decoded ({type(err).__name__}: {err}); {PLUGIN_HINT}"
            ) from err
        raise DicomReadError(
            f"{path}: pixel data could not be decoded (truncated or corrupt file?): "
            f"{type(err).__name__}: {err}"
        ) from err
    samples = int(ds.SamplesPerPixel)
    expected = (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    if pixels.shape != expected:
        # pydicom reads surplus bytes as more frames: the header and the data disagree.
        raise DicomReadError(
            f"{path}: the pixel data decode to shape {pixels.shape}, but the header (Rows "
            f"{ds.Rows}, Columns {ds.Columns}, Samples per Pixel {samples}) describes "
            f"{expected}: the header is wrong or the file is damaged; fix or remove it"
        )
    return pixels


def _native_pixels(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian grayscale pixels of 8 or 16 bits whose length is what the
    header says, as pydicom decodes them (bits above Bits Stored cleared, or copies of the sign
    bit), without its decoder machinery (a large share of reading a small film); ``None`` for
    anything else, which pydicom decodes."""
    if ds.file_meta.TransferSyntaxUID not in NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if allocated not in (8, 16) or int(ds.SamplesPerPixel) != 1 or stored > allocated:
        return None
    rows, columns = int(ds.Rows), int(ds.Columns)
    data = ds.PixelData
    expected = rows * columns * allocated // 8
    if len(data) not in (expected, expected + 1):  # + 1: the pad byte of an odd length
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    pixels = np.frombuffer(data, dtype, rows * columns).reshape(rows, columns)
    shift = allocated - stored
    # Shifting left then right, as pydicom does: a logical shift for unsigned values clears
    # the unused bits, an arithmetic one for signed values repeats the sign bit.
    return (pixels << shift) >> shift if shift else pixels


def _check_pixel_module(ds: Dataset, path: str | os.PathLike, photometric: str) -> None:
    """Name the Image Pixel tags that are missing or contradict each other, before decoding
    (pydicom's own errors read like a corrupt file, or it decodes garbage)."""
    problems = []
    values: dict[str, int] = {}
    # Float Pixel Data has no Bits Stored.
    stored = ("BitsStored",) if "PixelData" in ds else ()
    for keyword in ("Rows", "Columns", "BitsAllocated", *stored, "SamplesPerPixel"):
        value = ds.get(keyword)
        try:
            values[keyword] = int(value)
        except (TypeError, ValueError):
            problems.append(f"{keyword} is {'missing' if value in (None, '') else repr(value)}")
            continue
        if values[keyword] < 1:
            problems.append(f"{keyword} is {values[keyword]}")
    if values.get("BitsStored", 0) > values.get("BitsAllocated", 64):
        problems.append(
            f"BitsStored {values['BitsStored']} exceeds BitsAllocated {values['BitsAllocated']}"
        )
    samples = values.get("SamplesPerPixel")
    wanted = 1 if photometric in GRAYSCALE else 3
    if samples is not None and samples != wanted:
        problems.append(f"SamplesPerPixel is {samples} but {photometric} has {wanted}")
    if problems:
        raise DicomReadError(
            f"{path}: the image header is invalid: {'; '.join(problems)}; fix the header or "
            "remove the file"
        )


def _rescale(ds: Dataset, path: str | os.PathLike) -> None:
    """Refuse Rescale Slope / Intercept values that are present but not numbers."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds:
            continue
        value = ds[keyword].value
        try:
            float(first_value(value))
        except (TypeError, ValueError):
            shown = "empty" if value in (None, "") else f"{value!r}"
            raise DicomReadError(
                f"{path}: {keyword} is {shown}, not a number: the modality LUT cannot be "
                "applied; fix the header (1 and 0 when the stored values are the modality "
                "values) or remove the file"
            ) from None


def read_dicom(
    path: str | os.PathLike, options: DicomOptions | None = None, dataset: Dataset | None = None
) -> np.ndarray:
    """Read a DICOM image as display values.

    ``dataset``: the file already parsed by `read_dataset` (with its pixel data), so that a
    caller that also wants header values reads the file once.

    Returns:
        ``"standard"`` mode: float32 ``(H, W)`` in ``[0, 1]`` for grayscale, ``(H, W, 3)`` for
        colour; ``"benchmark"`` mode: uint8 ``(H, W)`` or ``(H, W, 3)``. Bright means dense
        (bone) in both modes.

    Raises:
        DicomReadError: no pixel data, an unsupported photometric interpretation, a compressed
            transfer syntax without a decoder plugin, or a corrupt file.

    Examples:
        >>> read_dicom("chest.dcm").dtype  # doctest: +SKIP
        dtype('float32')
    """
    options = options or DicomOptions()
    ds = read_dataset(path) if dataset is None else dataset
    pixels = _decoded_pixels(ds, path)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric in COLOUR:
        # pydicom already converted YBR to RGB; colour data carry no LUTs to apply.
        if pixels.dtype == np.uint8:
            return pixels if options.mode == "benchmark" else pixels.astype(np.float32) / 255.0
        scaled = (pixels.astype(np.float64) - pixels.min()) / max(np.ptp(pixels), 1)
        if options.mode == "benchmark":
            return np.round(scaled * 255).astype(np.uint8)
        return scaled.astype(np.float32)
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    invert = photometric == "MONOCHROME1" or shape == "INVERSE"
    if options.mode == "benchmark":
        _not_blank(pixels, path)
        stored = pixels.astype(np.float64)
        scaled = (stored - stored.min()) / max(float(np.ptp(stored)), 1e-12)
        out = np.round(scaled * 255.0)
        return (255 - out if invert else out).astype(np.uint8)
    if pixels.dtype.kind not in "ui" or pixels.dtype.itemsize > 2:
        return _display(ds, pixels, None, options, invert, path)
    # Every display step maps each stored value on its own (the percentile and min-max
    # windows once their ends are known): compute them once per stored value, not per pixel.
    unsigned = pixels.view(f"u{pixels.dtype.itemsize}")
    low, high = int(pixels.min()), int(pixels.max())
    values = np.arange(low, high + 1, dtype=pixels.dtype)
    counts = None
    if _needs_counts(ds, options):
        counts = np.bincount(unsigned.ravel(), minlength=2 ** (8 * pixels.dtype.itemsize))
        counts = counts[values.astype(unsigned.dtype)]
        values, counts = values[counts > 0], counts[counts > 0]
    table = np.zeros(2 ** (8 * pixels.dtype.itemsize), np.float32)
    table[values.astype(unsigned.dtype)] = _display(ds, values, counts, options, invert, path)
    if unsigned.dtype == np.uint8:
        return cv2.LUT(np.ascontiguousarray(unsigned), table)
    return np.take(table, unsigned, mode="clip")


def _needs_counts(ds: Dataset, options: DicomOptions) -> bool:
    """Whether the display of the stored values depends on which values occur, and how often,
    beyond the lowest and highest (always present): a percentile window, padding, or a LUT
    that need not be monotonic (then the extremes of the image need not be its ends)."""
    return (
        "percentile" in (options.window, options.fallback_window)
        or ds.get("PixelPaddingValue") not in (None, b"", "")
        or bool(ds.get("ModalityLUTSequence"))
        or (options.window == "header" and usable_lut(ds))
    )


def _display(
    ds: Dataset,
    stored: np.ndarray,
    counts: np.ndarray | None,
    options: DicomOptions,
    invert: bool,
    path: str | os.PathLike,
) -> np.ndarray:
    """Display values in ``[0, 1]`` of ``stored``: every pixel, or the stored values between an
    image's lowest and highest (only those it holds, each held by ``counts`` pixels, where
    `_needs_counts`)."""
    padding = padding_mask(ds, stored)
    image = stored if padding is None else stored[~padding]
    if image.size == 0:
        raise DicomReadError(
            f"{path}: every pixel is padding (Pixel Padding Value {ds.PixelPaddingValue}): the "
            "image is empty; remove it from the data set"
        )
    _not_blank(image, path)
    _rescale(ds, path)
    values = apply_modality_lut(stored, ds).astype(np.float64)
    kept = values if padding is None else values[~padding]
    if not np.isfinite(kept).all() or np.ptp(kept) == 0:
        slope, intercept = ds.get("RescaleSlope", "(none)"), ds.get("RescaleIntercept", "(none)")
        raise DicomReadError(
            f"{path}: the modality LUT (RescaleSlope {slope}, RescaleIntercept {intercept}"
            f"{', Modality LUT Sequence' if 'ModalityLUTSequence' in ds else ''}) maps every "
            f"pixel to {kept.flat[0]:g}, so the image would be blank: the header is wrong; fix "
            "those tags or remove the file"
        )
    display = voi(values, ds, options, padding, counts)
    shown = display if padding is None else display[~padding]
    if np.ptp(shown) == 0:
        raise DicomReadError(
            f"{path}: the header's {'VOI LUT' if usable_lut(ds) else 'window'} "
            f"(Window Center {ds.get('WindowCenter', '-')}, Width {ds.get('WindowWidth', '-')}) "
            "maps every pixel to one grey, so the image would be blank: set window='percentile' "
            "or window='minmax' (a DataModule's decode.window) to window by the image's own "
            "values"
        )
    if "PresentationLUTSequence" in ds:
        # A Presentation LUT maps to P-values itself, including any inversion.
        lut_bits = int(ds.PresentationLUTSequence[0].LUTDescriptor[2])
        display = apply_presentation_lut(display, ds).astype(np.float64) / (2**lut_bits - 1)
    elif invert:
        display = 1.0 - display
    if padding is not None:
        display[padding] = 0.0
    return np.clip(display, 0.0, 1.0).astype(np.float32)


def _not_blank(stored: np.ndarray, path: str | os.PathLike) -> None:
    if stored.size and stored.min() == stored.max():
        raise DicomReadError(
            f"{path}: every pixel has the stored value {stored.flat[0]}: a blank image; remove "
            "it from the data set"
        )


def read_tags(path: str | os.PathLike, keywords: tuple[str, ...]) -> dict[str, str]:
    """Header values by keyword (for example ``("ViewPosition", "PatientSex")``) as strings;
    absent elements give ``""``.

    Examples:
        >>> read_tags("chest.dcm", ("ViewPosition",))  # doctest: +SKIP
        {'ViewPosition': 'PA'}
    """
    if not keywords:
        return {}
    return header_values(read_dataset(path, header_only=True), keywords)


def header_values(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, str]:
    """`read_tags` of a data set already read."""
    return {keyword: str(ds.get(keyword, "") or "") for keyword in keywords}
