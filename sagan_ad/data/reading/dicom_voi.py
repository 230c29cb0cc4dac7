"""The DICOM display steps after decoding: which window or VOI LUT applies, the padding tags
and the VOI step itself, for every pixel or for the distinct stored values of an image (each
weighted by how many pixels hold it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut

from sagan_ad.errors import InputError

if TYPE_CHECKING:
    from sagan_ad.data.reading.dicom_options import DicomOptions


def first_value(value: object) -> object:
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def usable_window(ds: Dataset) -> bool:
    """Whether the header's first Window Center / Width can be applied (PS3.3 C.11.2.1.2):
    both numbers, finite, a VOI LUT Function the standard defines, and a width it allows."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return False
    try:
        center, width = float(first_value(center)), float(first_value(width))
    except (TypeError, ValueError):
        return False
    if not (np.isfinite(center) and np.isfinite(width)):
        return False
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if function not in ("", "LINEAR", "LINEAR_EXACT", "SIGMOID"):
        return False  # no other function is defined (PS3.3 C.11.2.1.3)
    return width > 0 if function == "LINEAR_EXACT" else width >= 1


def usable_lut(ds: Dataset) -> bool:
    """Whether the header's VOI LUT Sequence has a first item with a descriptor and data."""
    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return item.get("LUTDescriptor") not in (None, "") and item.get("LUTData") not in (None, b"")


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Which of ``stored`` (pixels, or distinct stored values) Pixel Padding Value (and Range
    Limit) marks, compared with stored values; ``None`` when none is."""
    value = ds.get("PixelPaddingValue")
    if value in (None, b"", "") or stored.ndim > 2:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    ends = [_stored_number(value, ds)]
    if limit not in (None, b"", ""):
        ends.append(_stored_number(limit, ds))
    mask = (stored >= min(ends)) & (stored <= max(ends))
    return mask if mask.any() else None


def _stored_number(value: object, ds: Dataset) -> int:
    # "US or SS" elements read without a known Pixel Representation stay raw bytes.
    if isinstance(value, bytes):
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        return int.from_bytes(value[:2], "little", signed=signed)
    return int(first_value(value))


def weighted_percentile(
    values: np.ndarray, counts: np.ndarray, percentiles: tuple[float, float]
) -> np.ndarray:
    """`np.percentile` (linear method) of an array holding each of ``values`` ``counts``
    times, without building it.

    Examples:
        >>> values, counts = np.array([3.0, 1.0, 2.0]), np.array([2, 5, 1])
        >>> bool(np.allclose(weighted_percentile(values, counts, (10, 90)),
        ...                  np.percentile(np.repeat(values, counts), (10, 90))))
        True
    """
    order = np.argsort(values, kind="stable")
    ordered, cumulative = values[order], np.cumsum(counts[order])
    virtual = np.asarray(percentiles, np.float64) / 100 * (cumulative[-1] - 1)
    below = np.floor(virtual)
    # The k-th smallest pixel (from 0) holds the first value whose cumulative count exceeds k.
    low = ordered[np.searchsorted(cumulative, below, side="right")]
    high = ordered[np.searchsorted(cumulative, np.minimum(below + 1, cumulative[-1] - 1), "right")]
    gamma = virtual - below
    # numpy's own interpolation, so that the window matches np.percentile's to the last bit.
    step = high - low
    return np.where(gamma >= 0.5, high - step * (1 - gamma), low + step * gamma)


def voi(
    values: np.ndarray,
    ds: Dataset,
    options: DicomOptions,
    padding: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """The VOI step: modality values to display values in ``[0, 1]``.

    ``values`` are the modality values of every pixel, or of each distinct stored value with
    ``counts`` the number of pixels holding it (what the percentile window weighs).
    """
    lut = usable_lut(ds)
    window = options.window
    if window == "header" and not (lut or usable_window(ds)):
        window = options.fallback_window
    if window == "header":
        if lut:
            # A LUT is indexed by integer input values (pydicom prefers it over a window).
            values = np.round(values).astype(np.int64)
            extremes = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], np.int64)
        else:
            extremes = np.array([np.finfo(np.float32).min, np.finfo(np.float32).max])
        try:
            # The output range of a window or LUT does not depend on the image: send the two
            # extreme inputs through the same transform (in the same call) to find it.
            probed = np.concatenate([values.ravel(), extremes])
            both = apply_voi_lut(probed, ds, index=0, prefer_lut=lut)
        except Exception as err:
            # A LUT whose data are shorter than its descriptor says, for one.
            raise InputError(
                f"the header's {'VOI LUT' if lut else 'window'} cannot be applied "
                f"({type(err).__name__}: {err}): the header is damaged; set window='percentile' "
                "or window='minmax' (a DataModule's decode.window) to window by the image's own "
                "values"
            ) from err
        shown, probe = both[:-2].reshape(values.shape), both[-2:].astype(np.float64)
        low, high = float(probe.min()), float(probe.max())
        return (shown.astype(np.float64) - low) / max(high - low, 1e-12)
    image = values if padding is None else values[~padding]
    if window == "percentile":
        if counts is None:
            low, high = np.percentile(image, options.percentiles)
        else:
            weights = counts if padding is None else counts[~padding]
            low, high = weighted_percentile(image, weights, options.percentiles)
    else:
        low, high = float(image.min()), float(image.max())
    # No floor on the span: modality values may be tiny (a Rescale Slope of 1e-30), and a
    # floor would turn them into a black image. A span of 0 gives a blank image, refused later.
    span = float(high - low)
    clipped = np.clip(values, low, high) - low
    return clipped / span if span > 0 else np.zeros_like(clipped)
