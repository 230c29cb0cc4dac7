"""Bits Stored checked against the pixel data: a header that says fewer bits than the values
use would have the film read from its low bits only (garbage, or a blank grey)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset


def bits_stored_problem(ds: Dataset) -> str | None:
    """What is wrong when more than 1% of the stored values of uncompressed pixel data need more
    bits than Bits Stored (signed values may repeat their sign bit above it), or None.

    A few pixels with high bits set are tolerated: old files keep overlay planes there.

    Examples:
        >>> from pydicom.dataset import Dataset, FileMetaDataset
        >>> from pydicom.uid import ExplicitVRLittleEndian
        >>> ds = Dataset()
        >>> ds.file_meta = FileMetaDataset()
        >>> ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        >>> ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 8, 0
        >>> ds.PixelData = np.array([4000, 100, 3000, 5], np.uint16).tobytes()
        >>> bits_stored_problem(ds)  # doctest: +ELLIPSIS
        'Bits Stored is 8, but 50% of the pixels hold values above 255 (up to 4000)...'
    """
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if "PixelData" not in ds or syntax is None or syntax.is_compressed:
        return None
    try:
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (16, 32) or not 0 < stored < allocated:
        return None
    order = ">" if not syntax.is_little_endian else "<"
    data = bytes(ds.PixelData)
    raw = np.frombuffer(data, f"{order}u{allocated // 8}", len(data) // (allocated // 8))
    if raw.size == 0:
        return None
    high = raw >> stored
    fine = high == 0
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        fine |= high == (1 << (allocated - stored)) - 1  # a negative value's sign extension
    share = 1.0 - float(fine.mean())
    if share <= 0.01:
        return None
    needed = max(int(raw[~fine].max()).bit_length(), stored + 1)
    return (
        f"Bits Stored is {stored}, but {share:.0%} of the pixels hold values above "
        f"{2**stored - 1} (up to {int(raw[~fine].max())}): the header contradicts the data, "
        f"and the film would be read from its low {stored} bits only; set Bits Stored to "
        f"{needed} (and High Bit to {needed - 1}), or remove the file"
    )
