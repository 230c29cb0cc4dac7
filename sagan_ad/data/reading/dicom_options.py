"""How DICOM pixel data become display values: the options every DICOM reader takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagan_ad.errors import InputError

DicomMode = Literal["standard", "benchmark"]
WindowMode = Literal["header", "percentile", "minmax"]


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
            raise InputError(f"dicom mode={self.mode!r}: must be 'standard' or 'benchmark'")
        if self.window not in ("header", "percentile", "minmax"):
            raise InputError(f"window={self.window!r}: must be 'header', 'percentile' or 'minmax'")
        if self.fallback_window not in ("percentile", "minmax"):
            raise InputError(
                f"fallback_window={self.fallback_window!r}: must be 'percentile' or 'minmax'"
            )
        if len(self.percentiles) != 2:
            raise InputError(f"percentiles={self.percentiles}: give a low and a high percentile")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise InputError(f"percentiles={self.percentiles}: need 0 <= low < high <= 100")
