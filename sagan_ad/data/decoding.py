"""How image files become uint8 pixels, as one recorded settings object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sagan_ad.data.bit_depth import BitDepth, check_bit_depth
from sagan_ad.data.dicom import DicomOptions
from sagan_ad.errors import InputError


@dataclass(frozen=True)
class DecodeSettings:
    """How image files become uint8 pixels: the decode settings a model must see again.

    Attributes:
        dicom: DICOM windowing (`sagan_ad.data.DicomOptions`).
        force_dicom: read every file as DICOM (files without suffix nor preamble).
        bit_depth: how 16-bit PNG / TIFF are scaled (`sagan_ad.data.bit_depth.scale_bits`).

    Examples:
        >>> settings = DecodeSettings(DicomOptions(mode="benchmark"))
        >>> DecodeSettings.from_record(settings.record()) == settings
        True
    """

    dicom: DicomOptions = field(default_factory=DicomOptions)
    force_dicom: bool = False
    bit_depth: BitDepth = "auto"

    def __post_init__(self) -> None:
        check_bit_depth(self.bit_depth)

    def record(self) -> dict[str, Any]:
        """The settings as plain values (a checkpoint entry)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DecodeSettings:
        """The settings of a `record`; a record that is not one is refused by name."""
        try:
            dicom = dict(record.get("dicom") or {})
            if "percentiles" in dicom:
                dicom["percentiles"] = tuple(dicom["percentiles"])
            return cls(DicomOptions(**dicom), bool(record["force_dicom"]), record["bit_depth"])
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"recorded decode settings {record!r} are not readable: {err}"
            ) from err

    @classmethod
    def of(cls, datamodule: object) -> DecodeSettings | None:
        """The decode settings of a DataModule: a predict DataModule's ``decode`` (the defaults
        where it has none), a file-reading DataModule's ``settings``; None for one that reads no
        files (generated images)."""
        decode = getattr(datamodule, "__dict__", {}).get("decode", False)
        if decode is None or isinstance(decode, DecodeSettings):
            return decode or cls()
        settings = getattr(datamodule, "settings", None)
        if settings is None or not hasattr(settings, "dicom"):
            return None
        return cls(settings.dicom, settings.force_dicom, settings.bit_depth)

    def describe(self) -> str:
        """The settings as the command line writes them."""
        dicom = self.dicom
        return (
            f"dicom mode={dicom.mode!r}, window={dicom.window!r}, "
            f"fallback_window={dicom.fallback_window!r}, percentiles={dicom.percentiles}, "
            f"force_dicom={self.force_dicom}, bit_depth={self.bit_depth!r}"
        )
