"""How image files become uint8 pixels, as one recorded settings object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sagan_ad.data.reading.bit_depth import BitDepth, check_bit_depth
from sagan_ad.data.reading.dicom_options import DicomMode, DicomOptions, WindowMode
from sagan_ad.errors import InputError


@dataclass(frozen=True)
class DecodeSettings:
    """How image files become uint8 pixels: the settings every file-reading DataModule takes
    as ``decode`` (YAML: ``data.decode``, command line: ``--data.decode.dicom_mode``), which fit
    records in the model (`sagan_ad.Preprocessing`) and predict reads films with again.

    Attributes:
        dicom_mode: ``"standard"`` or ``"benchmark"`` (see `sagan_ad.data.DicomOptions`).
        window: ``"header"``, ``"percentile"`` or ``"minmax"`` (standard mode).
        fallback_window: the window of files without a usable one in ``"header"`` mode.
        percentiles: low and high percentile of the percentile window.
        force_dicom: read every file as DICOM (files without suffix nor preamble).
        bit_depth: how 16-bit PNG / TIFF are scaled: ``"auto"`` (the largest depth the data
            set's files use, so 12-bit exports keep their contrast), ``"dtype"`` (by 65535) or a
            number of bits (see `sagan_ad.data.reading.bit_depth.scale_bits`).

    Examples:
        >>> settings = DecodeSettings(dicom_mode="benchmark", bit_depth=12)
        >>> settings.dicom.mode, DecodeSettings.from_record(settings.record()) == settings
        ('benchmark', True)
    """

    dicom_mode: DicomMode = "standard"
    window: WindowMode = "header"
    fallback_window: Literal["percentile", "minmax"] = "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)
    force_dicom: bool = False
    bit_depth: BitDepth = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.percentiles, (list, tuple)):
            raise InputError(
                f"decode.percentiles={self.percentiles!r}: give a low and a high percentile, "
                "such as [0.5, 99.5]"
            )
        # YAML and JSON give a list: stored as the tuple DicomOptions compares with.
        object.__setattr__(self, "percentiles", tuple(self.percentiles))
        if not isinstance(self.force_dicom, bool):
            raise InputError(f"decode.force_dicom={self.force_dicom!r}: must be true or false")
        check_bit_depth(self.bit_depth)
        if self.dicom_mode not in ("standard", "benchmark"):
            raise InputError(
                f"decode.dicom_mode={self.dicom_mode!r}: must be 'standard' or 'benchmark'"
            )
        # A window that does not exist is refused here, not at the first DICOM file.
        DicomOptions(self.dicom_mode, self.window, self.fallback_window, self.percentiles)

    @property
    def dicom(self) -> DicomOptions:
        """The DICOM settings as the readers take them."""
        return DicomOptions(self.dicom_mode, self.window, self.fallback_window, self.percentiles)

    def record(self) -> dict[str, Any]:
        """The settings as plain values (a checkpoint entry)."""
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, value: DecodeSettings | Mapping[str, Any] | None) -> DecodeSettings:
        """``value`` as settings: None gives the defaults, a mapping its fields.

        Examples:
            >>> DecodeSettings.parse({"dicom_mode": "benchmark"}).dicom_mode
            'benchmark'
            >>> DecodeSettings.parse({"mode": "benchmark"})
            Traceback (most recent call last):
            ...
            sagan_ad.errors.InputError: decode: no setting 'mode'; the settings are dicom_mode, ...
        """
        if value is None or isinstance(value, DecodeSettings):
            return value or cls()
        if not isinstance(value, Mapping):
            raise InputError(
                f"decode={value!r}: give a sagan_ad.data.DecodeSettings or a mapping of its "
                "settings, such as {'dicom_mode': 'benchmark'}, or None for the defaults"
            )
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in value if key not in fields]
        if unknown:
            raise InputError(
                f"decode: no setting {unknown[0]!r}; the settings are {', '.join(fields)}"
            )
        return cls(**value)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DecodeSettings:
        """The settings of a `record`; a record that is not one is refused by name."""
        try:
            return cls(**record)
        except (AttributeError, TypeError, ValueError) as err:
            raise InputError(
                f"recorded decode settings {record!r} are not readable: {err}"
            ) from err

    @classmethod
    def of(cls, datamodule: object) -> DecodeSettings | None:
        """The decode settings of a DataModule (its ``decode``: the defaults where it is None);
        None for one that reads no files (generated images)."""
        decode = getattr(datamodule, "decode", False)
        if decode is None or isinstance(decode, DecodeSettings):
            return decode or cls()
        return None

    def describe(self) -> str:
        """The settings as ``data.decode`` writes them."""
        return ", ".join(f"{k}={v!r}" for k, v in self.record().items())
