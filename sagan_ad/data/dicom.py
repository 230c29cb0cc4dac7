"""Reading DICOM pixel data the way a radiologist's viewer shows it (or the benchmark's way)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_presentation_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sagan_ad.data.dicom_bits import bits_stored_problem

DicomMode = Literal["standard", "benchmark"]
WindowMode = Literal["header", "percentile", "minmax"]

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
UNDEFINED_LENGTH = 0xFFFFFFFF
PLUGIN_HINT = (
    "install the decoders with: pip install 'sagan-ad[dicom]' (pylibjpeg, pylibjpeg-libjpeg, "
    "pylibjpeg-openjpeg; python-gdcm also works)"
)


class DicomReadError(ValueError):
    """A DICOM file cannot be turned into an image; the message names the file and the fix."""


@dataclass(frozen=True)
class DicomOptions:
    """How DICOM pixel data become display values.

    Attributes:
        mode: ``"standard"``: modality LUT (rescale slope/intercept), then the VOI LUT or window
            (see ``window``), then MONOCHROME1 / Presentation LUT inversion, so that bone is bright
            whatever the scanner stored. ``"benchmark"``: the Med-AD preprocessing that published
            numbers used: stored values, MONOCHROME1 inverted, per-image min-max to 8 bit, nothing
            else.
        window: standard mode only. ``"header"``: the file's VOI LUT or first Window
            Center/Width; files without either, with an empty VOI LUT, or whose window is
            invalid (a centre or width that is not a finite number, a width below 1, or not
            above 0 for ``LINEAR_EXACT``, a VOI LUT Function the standard does not define), fall
            back to ``fallback_window``;
            ``"percentile"``: always clip to the ``percentiles`` of the image; ``"minmax"``: the
            image's full range. Pixels marked by Pixel Padding Value (and Range Limit) are
            left out of the percentiles and the range, and shown black.
        fallback_window: ``"percentile"`` or ``"minmax"``, for files without a usable window.
        percentiles: low and high percentile of the percentile window.
    """

    mode: DicomMode = "standard"
    window: WindowMode = "header"
    fallback_window: Literal["percentile", "minmax"] = "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.mode not in ("standard", "benchmark"):
            raise ValueError(f"dicom mode={self.mode!r}: must be 'standard' or 'benchmark'")
        if self.window not in ("header", "percentile", "minmax"):
            raise ValueError(f"window={self.window!r}: must be 'header', 'percentile' or 'minmax'")
        if self.fallback_window not in ("percentile", "minmax"):
            raise ValueError(
                f"fallback_window={self.fallback_window!r}: must be 'percentile' or 'minmax'"
            )
        if len(self.percentiles) != 2:
            raise ValueError(f"percentiles={self.percentiles}: give a low and a high percentile")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles={self.percentiles}: need 0 <= low < high <= 100")


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


def read_dataset(path: str | os.PathLike, header_only: bool = False) -> Dataset:
    """Parse a DICOM file, with or without the preamble and file meta (old ACR-NEMA files).

    A file without file meta gets the transfer syntax its encoding implies, so that its pixel
    data can be decoded. ``header_only`` stops before the pixel data (fast metadata reads).
    """
    size = os.path.getsize(path)
    # A DICOM file cut inside its 128-byte preamble has lost its whole header as well.
    cut = f" (the file has only {size} bytes: truncated?)" if size < 132 else ""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
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


def _first(value: object) -> object:
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def _usable_window(ds: Dataset) -> bool:
    """Whether the header's first Window Center / Width can be applied (PS3.3 C.11.2.1.2):
    both numbers, finite, a VOI LUT Function the standard defines, and a width it allows."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return False
    try:
        center, width = float(_first(center)), float(_first(width))
    except (TypeError, ValueError):
        return False
    if not (np.isfinite(center) and np.isfinite(width)):
        return False
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if function not in ("", "LINEAR", "LINEAR_EXACT", "SIGMOID"):
        return False  # no other function is defined (PS3.3 C.11.2.1.3)
    return width > 0 if function == "LINEAR_EXACT" else width >= 1


def _usable_lut(ds: Dataset) -> bool:
    """Whether the header's VOI LUT Sequence has a first item with a descriptor and data."""
    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return item.get("LUTDescriptor") not in (None, "") and item.get("LUTData") not in (None, b"")


def _rescale(ds: Dataset, path: str | os.PathLike) -> None:
    """Refuse Rescale Slope / Intercept values that are present but not numbers."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds:
            continue
        value = ds[keyword].value
        try:
            float(_first(value))
        except (TypeError, ValueError):
            shown = "empty" if value in (None, "") else f"{value!r}"
            raise DicomReadError(
                f"{path}: {keyword} is {shown}, not a number: the modality LUT cannot be "
                "applied; fix the header (1 and 0 when the stored values are the modality "
                "values) or remove the file"
            ) from None


def _padding(ds: Dataset, pixels: np.ndarray) -> np.ndarray | None:
    """Pixels marked by Pixel Padding Value (and Range Limit), compared with stored values."""
    value = ds.get("PixelPaddingValue")
    if value in (None, b"", "") or pixels.ndim != 2:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    ends = [_stored_number(value, ds)]
    if limit not in (None, b"", ""):
        ends.append(_stored_number(limit, ds))
    mask = (pixels >= min(ends)) & (pixels <= max(ends))
    return mask if mask.any() else None


def _stored_number(value: object, ds: Dataset) -> int:
    # "US or SS" elements read without a known Pixel Representation stay raw bytes.
    if isinstance(value, bytes):
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        return int.from_bytes(value[:2], "little", signed=signed)
    return int(_first(value))


def _voi(
    values: np.ndarray, ds: Dataset, options: DicomOptions, padding: np.ndarray | None = None
) -> np.ndarray:
    """The VOI step: modality values to display values in ``[0, 1]``."""
    lut = _usable_lut(ds)
    window = options.window
    if window == "header" and not (lut or _usable_window(ds)):
        window = options.fallback_window
    if window == "header":
        if lut:
            # A LUT is indexed by integer input values (pydicom prefers it over a window).
            values = np.round(values).astype(np.int64)
            extremes = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], np.int64)
        else:
            extremes = np.array([np.finfo(np.float32).min, np.finfo(np.float32).max])
        try:
            voi = apply_voi_lut(values, ds, index=0, prefer_lut=lut)
            # The output range of a window or LUT does not depend on the image: send the two
            # extreme inputs through the same transform to find it.
            probe = apply_voi_lut(extremes, ds, index=0, prefer_lut=lut).astype(np.float64)
        except Exception as err:
            # A LUT whose data are shorter than its descriptor says, for one.
            raise ValueError(
                f"the header's {'VOI LUT' if lut else 'window'} cannot be applied "
                f"({type(err).__name__}: {err}): the header is damaged; set window='percentile' "
                "or window='minmax' to window by the image's own values"
            ) from err
        low, high = float(probe.min()), float(probe.max())
        return (voi.astype(np.float64) - low) / max(high - low, 1e-12)
    image = values if padding is None else values[~padding]
    if window == "percentile":
        low, high = np.percentile(image, options.percentiles)
    else:
        low, high = float(image.min()), float(image.max())
    # No floor on the span: modality values may be tiny (a Rescale Slope of 1e-30), and a
    # floor would turn them into a black image. A span of 0 gives a blank image, refused later.
    span = float(high - low)
    clipped = np.clip(values, low, high) - low
    return clipped / span if span > 0 else np.zeros_like(clipped)


def read_dicom(path: str | os.PathLike, options: DicomOptions | None = None) -> np.ndarray:
    """Read a DICOM image as display values.

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
    ds = read_dataset(path)
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
    padding = _padding(ds, pixels)
    image = pixels if padding is None else pixels[~padding]
    if image.size == 0:
        raise DicomReadError(
            f"{path}: every pixel is padding (Pixel Padding Value {ds.PixelPaddingValue}): the "
            "image is empty; remove it from the data set"
        )
    _not_blank(image, path)
    _rescale(ds, path)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    kept = values if padding is None else values[~padding]
    if not np.isfinite(kept).all() or np.ptp(kept) == 0:
        slope, intercept = ds.get("RescaleSlope", "(none)"), ds.get("RescaleIntercept", "(none)")
        raise DicomReadError(
            f"{path}: the modality LUT (RescaleSlope {slope}, RescaleIntercept {intercept}"
            f"{', Modality LUT Sequence' if 'ModalityLUTSequence' in ds else ''}) maps every "
            f"pixel to {kept.flat[0]:g}, so the image would be blank: the header is wrong; fix "
            "those tags or remove the file"
        )
    display = _voi(values, ds, options, padding)
    shown = display if padding is None else display[~padding]
    if np.ptp(shown) == 0:
        raise DicomReadError(
            f"{path}: the header's {'VOI LUT' if _usable_lut(ds) else 'window'} "
            f"(Window Center {ds.get('WindowCenter', '-')}, Width {ds.get('WindowWidth', '-')}) "
            "maps every pixel to one grey, so the image would be blank: set window='percentile' "
            "or window='minmax' to window by the image's own values"
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
    ds = read_dataset(path, header_only=True)
    return {keyword: str(ds.get(keyword, "") or "") for keyword in keywords}
