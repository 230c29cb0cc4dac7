"""How image files become uint8 pixels, as one recorded settings object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from sagan_ad.data.reading.bit_depth import BitDepth, check_bit_depth
from sagan_ad.data.reading.dicom_options import DicomMode, DicomOptions, WindowMode
from sagan_ad.data.setting_groups import SettingsGroup, check_choice, check_flag
from sagan_ad.errors import InputError


@dataclass(frozen=True)
class DecodeSettings(SettingsGroup):
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

    group: ClassVar[str] = "decode"

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
        check_flag("decode", "force_dicom", self.force_dicom)
        check_bit_depth(self.bit_depth)
        check_choice("decode", "dicom_mode", self.dicom_mode, ("standard", "benchmark"))
        # A window that does not exist is refused here, not at the first DICOM file.
        DicomOptions(self.dicom_mode, self.window, self.fallback_window, self.percentiles)

    @property
    def dicom(self) -> DicomOptions:
        """The DICOM settings as the readers take them."""
        return DicomOptions(self.dicom_mode, self.window, self.fallback_window, self.percentiles)

    @classmethod
    def of(cls, datamodule: object) -> DecodeSettings | None:
        """The decode settings of a DataModule (its ``decode``: the defaults where it is None);
        None for one that reads no files (generated images)."""
        decode = getattr(datamodule, "decode", False)
        if decode is None or isinstance(decode, DecodeSettings):
            return decode or cls()
        return None
