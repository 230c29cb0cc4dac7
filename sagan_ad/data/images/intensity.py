"""Intensity normalisation of the images a model sees, the same at every stage.

On real radiographs the global brightness of a film often follows the scanner, the view or the
patient's condition rather than the finding, and a detector can learn that instead of the
disease (see ``docs/results.md``). Two tools take the cue away:

- `IntensityNormalization`: one fixed per-image mapping, applied to every image of every stage
  (fit, validate, test, predict) and recorded in the model's checkpoint, so that a model is never
  scored on images prepared otherwise. Histogram equalisation and CLAHE are OpenCV's; the
  per-image z-score and percentile window are `IntensityNormalizer`, the same torch module that
  the exported scorer runs, so both give identical grey levels.
- `sagan_ad.data.images.augmentation.Augmentation` (its own module): random brightness, contrast,
  gamma and acquisition changes of the training streams only.

The trivial statistics that the shortcut audit compares a model with are taken before any
normalisation (`sagan_ad.image_statistics`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.settings import from_mapping

NormalizationMethod = Literal["none", "equalize", "clahe", "zscore", "percentile"]
NORMALIZATION_METHODS: tuple[str, ...] = ("none", "equalize", "clahe", "zscore", "percentile")

# The parameters each method reads; the others do not change its output.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "none": (),
    "equalize": (),
    "clahe": ("clip_limit", "tile_grid"),
    "zscore": ("zscore_range",),
    "percentile": ("percentiles",),
}


@dataclass(frozen=True)
class IntensityNormalization:
    """A per-image intensity normalisation of uint8 images (each channel on its own).

    Methods:

    - ``"none"``: the images as decoded (the paper).
    - ``"equalize"``: global histogram equalisation (``cv2.equalizeHist``): every film gets a
      flat grey-level histogram, so its mean brightness is about the same for all films.
    - ``"clahe"``: contrast-limited adaptive histogram equalisation (``cv2.createCLAHE``) on a
      ``tile_grid`` x ``tile_grid`` grid with ``clip_limit``: equalises locally, keeps more of
      each region's own contrast.
    - ``"zscore"``: per-image standardisation, ``mean ± zscore_range`` standard deviations mapped
      to the full range (clipped beyond).
    - ``"percentile"``: per-image window from the ``percentiles[0]``-th to the
      ``percentiles[1]``-th percentile mapped to the full range (clipped beyond).

    Args:
        method: one of the methods above.
        clip_limit: CLAHE's contrast limit (OpenCV's ``clipLimit``).
        tile_grid: CLAHE's tiles per side.
        zscore_range: standard deviations on each side of the mean that the z-score keeps.
        percentiles: the low and high percentile of the percentile window, in ``[0, 100]``.

    Examples:
        >>> IntensityNormalization.parse("clahe").spec()
        'clahe(clip_limit=2.0, tile_grid=8)'
        >>> IntensityNormalization.parse("clahe(clip_limit=3)").clip_limit
        3.0
        >>> images = torch.tensor([[[[10, 20], [30, 40]]]], dtype=torch.uint8)
        >>> IntensityNormalization("percentile", percentiles=(0.0, 100.0)).apply(images).flatten()
        tensor([  0,  85, 170, 255], dtype=torch.uint8)
    """

    method: NormalizationMethod = "none"
    clip_limit: float = 2.0
    tile_grid: int = 8
    zscore_range: float = 3.0
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        where = "data.normalization"
        if self.method not in NORMALIZATION_METHODS:
            raise InputError(
                f"{where}.method={self.method!r}: choose one of {', '.join(NORMALIZATION_METHODS)}"
            )
        if self.clip_limit <= 0 or self.tile_grid < 1:
            raise InputError(
                f"{where}: clip_limit={self.clip_limit} must be > 0 and tile_grid="
                f"{self.tile_grid} >= 1"
            )
        if self.zscore_range <= 0:
            raise InputError(f"{where}.zscore_range={self.zscore_range}: must be > 0")
        low, high = (float(p) for p in self.percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise InputError(
                f"{where}.percentiles={tuple(self.percentiles)}: need 0 <= low < high <= 100"
            )
        # YAML gives lists and integers; fixed types keep the object hashable and its spec
        # string the same however the values were written.
        object.__setattr__(self, "percentiles", (low, high))
        object.__setattr__(self, "clip_limit", float(self.clip_limit))
        object.__setattr__(self, "tile_grid", int(self.tile_grid))
        object.__setattr__(self, "zscore_range", float(self.zscore_range))

    @classmethod
    def parse(
        cls, spec: str | Mapping[str, Any] | IntensityNormalization | None
    ) -> IntensityNormalization:
        """A normalisation from its `spec` string (a method name, with or without parameters),
        a mapping of its fields, or itself (None: ``"none"``).

        Examples:
            >>> IntensityNormalization.parse({"method": "zscore", "zscore_range": 2}).spec()
            'zscore(zscore_range=2.0)'
        """
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            return cls(**_spec_fields(spec))
        if isinstance(spec, Mapping):
            return from_mapping(cls, spec, "data.normalization")
        raise InputError(
            f"data.normalization={spec!r}: give a method name ({', '.join(NORMALIZATION_METHODS)}) "
            "or a mapping such as {method: clahe, clip_limit: 2.0}"
        )

    def spec(self) -> str:
        """The method and the parameters it reads as one string, which `parse` reads back
        exactly: what checkpoints store, and what two normalisations are compared by.

        Examples:
            >>> IntensityNormalization("zscore", clip_limit=9.0).spec()
            'zscore(zscore_range=3.0)'
            >>> IntensityNormalization("percentile").spec()
            'percentile(percentiles=(1.0, 99.0))'
        """
        names = _PARAMETERS[self.method]
        if not names:
            return self.method
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.method}({inner})"

    @property
    def graph_expressible(self) -> bool:
        """Whether `IntensityNormalizer` computes it from model-range images (all but CLAHE)."""
        return self.method != "clahe"

    def apply(self, images: Tensor) -> Tensor:
        """Normalise uint8 images ``(N, C, H, W)``; returns a new uint8 tensor.

        Examples:
            >>> flat = torch.full((1, 1, 4, 4), 90, dtype=torch.uint8)
            >>> IntensityNormalization("zscore").apply(flat).unique().tolist()
            [128]
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise InputError(
                f"intensity normalisation takes uint8 (N, C, H, W) images, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if self.method == "none" or len(images) == 0:
            return images.clone()
        if self.method in ("zscore", "percentile"):
            normalized = IntensityNormalizer(self)(images.float().div(127.5).sub(1.0))
            return to_uint8(normalized)
        # OpenCV runs on the CPU: images on another device go there and come back.
        planes = np.ascontiguousarray(images.cpu().numpy()).reshape(-1, *images.shape[-2:])
        if self.method == "equalize":
            out = np.stack([cv2.equalizeHist(plane) for plane in planes])
        else:
            clahe = cv2.createCLAHE(
                clipLimit=float(self.clip_limit), tileGridSize=(self.tile_grid, self.tile_grid)
            )
            out = np.stack([clahe.apply(plane) for plane in planes])
        return torch.from_numpy(out.reshape(images.shape)).to(images.device)


def _spec_fields(spec: str) -> dict[str, Any]:
    """The fields of a spec string: ``"clahe"`` or ``"clahe(clip_limit=3.0, tile_grid=8)"``."""
    try:
        call = ast.parse(spec.strip(), mode="eval").body
        if isinstance(call, ast.Name):
            return {"method": call.id}
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and not call.args):
            raise InputError(spec)
        fields = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as err:
        raise InputError(
            f"data.normalization={spec!r}: give a method name "
            f"({', '.join(NORMALIZATION_METHODS)}), optionally with parameters such as "
            "'clahe(clip_limit=3.0)', or a mapping such as {method: clahe, clip_limit: 3.0}"
        ) from err
    return {"method": call.func.id, **fields}


def to_uint8(images: Tensor) -> Tensor:
    """Model-range images ``[-1, 1]`` back to uint8 grey levels (rounded).

    Examples:
        >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0])).tolist()
        [0, 128, 255]
    """
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class IntensityNormalizer(nn.Module):
    """`IntensityNormalization` as a torch module on model-range images ``(B, C, H, W)``.

    It computes exactly the grey levels of `IntensityNormalization.apply` (the input is read as
    grey levels, the output rounded to grey levels), from operations that ONNX and TorchScript
    export: per-image mean and standard deviation (z-score), a sort (percentile window), and a
    histogram with its cumulative sum (equalisation, OpenCV's formula). CLAHE has no such
    expression and is refused.

    Examples:
        >>> norm = IntensityNormalizer(IntensityNormalization("zscore"))
        >>> out = norm(torch.linspace(-0.5, 0.5, 16).view(1, 1, 4, 4))
        >>> round(out.mean().item(), 2), out.min() > -1
        (0.0, tensor(True))
    """

    def __init__(self, normalization: IntensityNormalization) -> None:
        super().__init__()
        if not normalization.graph_expressible:
            raise InputError(
                f"{normalization.spec()} cannot be computed inside the exported graph: apply "
                "sagan_ad.data.normalize_images to the images before scoring"
            )
        self.method = normalization.method
        self.zscore_range = float(normalization.zscore_range)
        self.percentiles = tuple(float(p) for p in normalization.percentiles)

    def forward(self, images: Tensor) -> Tensor:
        if self.method == "none":
            return images
        levels = images.add(1.0).mul(127.5).round()
        flat = levels.flatten(2)
        if self.method == "zscore":
            mean = flat.mean(-1, keepdim=True)
            std = flat.std(-1, unbiased=False, keepdim=True).clamp_min(1e-6)
            out = 127.5 + (flat - mean) / std * (127.5 / self.zscore_range)
        elif self.method == "percentile":
            low, high = (self._quantile(flat, p / 100.0) for p in self.percentiles)
            out = (flat - low) / (high - low).clamp_min(1.0) * 255.0
        else:
            out = self._equalize(flat)
        out = out.round().clamp(0.0, 255.0)
        return out.view_as(images).div(127.5).sub(1.0)

    @staticmethod
    def _quantile(flat: Tensor, q: float) -> Tensor:
        # Linear interpolation between the two nearest order statistics, as torch.quantile does.
        n = flat.shape[-1]
        position = q * (n - 1)
        below = int(np.floor(position))
        above = min(below + 1, n - 1)
        ordered = flat.sort(-1).values
        low, high = ordered[..., below : below + 1], ordered[..., above : above + 1]
        return low + (high - low) * (position - below)

    @staticmethod
    def _equalize(flat: Tensor) -> Tensor:
        # cv2.equalizeHist: lut[v] = round((cdf[v] - cdf[min]) * 255 / (n - cdf[min])), and a
        # constant image keeps its value.
        index = flat.long()
        histogram = torch.zeros(*flat.shape[:-1], 256, dtype=flat.dtype, device=flat.device)
        histogram = histogram.scatter_add(-1, index, torch.ones_like(flat))
        cdf = histogram.cumsum(-1)
        first = cdf.gather(-1, index.min(-1, keepdim=True).values)
        total = float(flat.shape[-1])
        # A tensor numerator: `255.0 / t` is computed as `t.reciprocal() * 255`, which rounds
        # differently from OpenCV's float division.
        scale = torch.full_like(first, 255.0) / (total - first).clamp_min(1.0)
        lut = ((cdf - first) * scale).round()
        equalized = lut.gather(-1, index)
        return torch.where(first == total, flat, equalized)


def normalize_images(
    images: Tensor, normalization: str | Mapping[str, Any] | IntensityNormalization | None
) -> Tensor:
    """Apply an intensity normalisation (a name, a mapping or an `IntensityNormalization`) to
    uint8 images ``(N, C, H, W)``: what the DataModules do, for callers of an exported scorer.

    Examples:
        >>> images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> normalize_images(images, "equalize").flatten()[:4].tolist()
        [0, 17, 34, 51]
    """
    return IntensityNormalization.parse(normalization).apply(images)
