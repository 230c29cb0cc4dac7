"""Soft, irregular, lesion-like opacities placed inside the lung fields of chest images (the
abnormal class of the built-in phantoms, `sagan_ad.data.images.phantoms`)."""

from __future__ import annotations

import cv2
import numpy as np

from sagan_ad.data.images.phantoms import MIN_SIZE
from sagan_ad.errors import InputError

__all__ = ["add_lesions", "check_range"]


def add_lesions(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    max_lesions: int = 2,
    radius: tuple[float, float] = (0.04, 0.15),
    contrast: tuple[float, float] = (25.0, 90.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Add soft, irregular, lesion-like opacities inside the lung fields.

    Every image receives between 1 and ``max_lesions`` blobs. Each blob is a sum of 2-4
    overlapping anisotropic Gaussians (so it is never an axis-aligned square), with a radius
    drawn log-uniformly from ``radius`` (by default roughly 4-15 % of the image size) and a peak
    added brightness drawn uniformly from ``contrast`` (by default 25 to 90 grey levels), giving
    a mix of subtle and obvious findings. Centres are drawn from the dark interior of the
    body (the lung fields of a chest film), well away from the image border.

    Args:
        images: ``uint8`` array of shape ``(n, H, W)``, e.g. from `make_chest_phantoms`.
        rng: Source of randomness; the same seed gives identical lesions.
        max_lesions: Maximum number of lesions per image, ``>= 1``.
        radius: ``(low, high)`` lesion radius as a fraction of the image side,
            ``0 < low <= high <= 0.25``; small radii favour subtle findings.
        contrast: ``(low, high)`` peak added brightness in grey levels,
            ``0 < low <= high <= 255``.

    Returns:
        ``(abnormal, masks)``: the ``uint8`` images with lesions added (never darker than the
        input) and ``bool`` masks of the same shape marking where a lesion adds more than 10 %
        of its peak brightness.

    Raises:
        ValueError: If ``images`` is not a 3-D ``uint8`` array with sides >= 32, if
            ``max_lesions < 1``, or if ``radius`` or ``contrast`` is out of range.

    Examples:
        >>> import numpy as np
        >>> from sagan_ad.data.images.phantoms import make_chest_phantoms
        >>> rng = np.random.default_rng(0)
        >>> abnormal, masks = add_lesions(make_chest_phantoms(2, 64, rng), rng, max_lesions=3)
        >>> abnormal.shape, bool(masks.any(axis=(1, 2)).all())
        ((2, 64, 64), True)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        got = (
            f"{images.dtype} array of shape {images.shape}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise InputError(f"images must be a uint8 array of shape (n, H, W), got {got}")
    if min(images.shape[1:]) < MIN_SIZE:
        raise InputError(
            f"images must be at least {MIN_SIZE} x {MIN_SIZE} pixels, got shape {images.shape}"
        )
    if isinstance(max_lesions, bool) or not isinstance(max_lesions, (int, np.integer)):
        raise InputError(f"max_lesions must be an integer >= 1, got {max_lesions!r}")
    if max_lesions < 1:
        raise InputError(f"max_lesions must be an integer >= 1, got {max_lesions!r}")
    radius = check_range("radius", radius, 0.25)
    contrast = check_range("contrast", contrast, 255.0)

    abnormal = np.empty_like(images)
    masks = np.zeros(images.shape, dtype=bool)
    for i, image in enumerate(images):
        added, masks[i] = _lesion_layer(image, rng, int(max_lesions), radius, contrast)
        # Lesions are non-negative and the input is integral, so rounding never darkens a pixel
        # and every pixel where less than half a grey level is added stays exactly unchanged.
        abnormal[i] = np.clip(np.rint(image + added), 0, 255).astype(np.uint8)
    return abnormal, masks


def check_range(name: str, bounds: tuple[float, float], upper: float) -> tuple[float, float]:
    """Return ``bounds`` as floats after checking ``0 < low <= high <= upper``.

    Raises:
        ValueError: naming ``name`` if ``bounds`` is not such a pair.

    Examples:
        >>> check_range("radius", (0.05, 0.1), 0.25)
        (0.05, 0.1)
    """
    try:
        low, high = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a (low, high) pair of numbers, got {bounds!r}") from None
    if not 0.0 < low <= high <= upper:
        raise InputError(f"{name} must satisfy 0 < low <= high <= {upper:g}, got {bounds!r}")
    return low, high


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank quantiles; ``np.percentile``'s overhead dominates on ~4k-pixel images."""
    ordered = np.sort(values, axis=None)
    return [float(ordered[round(q * (ordered.size - 1))]) for q in qs]


def _lung_depth(image: np.ndarray) -> np.ndarray:
    """Distance (in pixels of ``image``) into the dark, lung-like part of the body."""
    ref = min(image.shape)
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=0.02 * ref)
    lo, hi = _quantiles(smooth, (0.02, 0.98))
    body = smooth > lo + 0.2 * (hi - lo)
    lung_like = body
    if body.any():
        # Lungs are the dark part of the body. Halfway between its darkest pixels and its median
        # separates them from the thinner (hence darker) soft tissue at the chest wall.
        darkest, median = _quantiles(smooth[body], (0.05, 0.5))
        lung_like = body & (smooth < 0.5 * (darkest + median))
    # Depth inside the lung-like region keeps centres off lung edges and off the thin dark
    # rim where the body fades into the background.
    return cv2.distanceTransform(lung_like.astype(np.uint8), cv2.DIST_L2, 5)


def _pick_centre(
    depth: np.ndarray, factor: int, shape: tuple[int, int], radius: float, rng: np.random.Generator
) -> tuple[int, int]:
    """Sample a full-resolution lesion centre deep inside the lungs and clear of the border.

    ``depth`` is `_lung_depth` of the image downsampled by the integer ``factor``.
    """
    h, w = shape
    # The 10 % contour of a blob reaches at most ~1.5 radii from its centre, so this margin
    # keeps every mask off the image border.
    margin = int(np.ceil(1.6 * radius)) + 2
    lo_margin = -(-margin // factor)
    inner = np.zeros_like(depth)
    inner[lo_margin:-lo_margin, lo_margin:-lo_margin] = depth[
        lo_margin:-lo_margin, lo_margin:-lo_margin
    ]
    if inner.max() <= 0:
        # No lung-like pixels (e.g. a blank image): fall back to anywhere away from the border.
        return int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin))
    min_depth = max(0.6 * radius, 0.04 * min(h, w)) / factor
    ys, xs = np.nonzero(inner >= min(min_depth, 0.8 * inner.max()))
    pick = int(rng.integers(ys.size))
    # Spread centres over the full-resolution pixels covered by the chosen coarse pixel.
    cy = int(ys[pick]) * factor + int(rng.integers(factor))
    cx = int(xs[pick]) * factor + int(rng.integers(factor))
    return min(max(cy, margin), h - 1 - margin), min(max(cx, margin), w - 1 - margin)


def _lesion_layer(
    image: np.ndarray,
    rng: np.random.Generator,
    max_lesions: int,
    radius_range: tuple[float, float],
    contrast_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Added-brightness map and mask for the lesions of one image."""
    h, w = image.shape
    ref = min(h, w)
    # Finding the lungs needs only coarse anatomy, so it runs on a copy of at most ~64 px,
    # which keeps its cost the same at every resolution.
    factor = max(1, ref // 64)
    coarse = cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    depth = _lung_depth(coarse)

    added = np.zeros((h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=bool)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        # Log-uniform radius favours small, subtle findings without excluding large ones.
        radius = ref * float(np.exp(rng.uniform(*np.log(radius_range))))
        peak = float(rng.uniform(*contrast_range))
        cy, cx = _pick_centre(depth, factor, (h, w), radius, rng)

        n_parts = int(rng.integers(2, 5))
        offset_r = radius * 0.4 * np.sqrt(rng.uniform(0.0, 1.0, n_parts))
        offset_a = rng.uniform(0.0, 2.0 * np.pi, n_parts)
        sigma_a = radius * rng.uniform(0.3, 0.5, n_parts)
        sigma_b = sigma_a * rng.uniform(0.45, 1.0, n_parts)
        theta = rng.uniform(0.0, np.pi, n_parts)
        weight = rng.uniform(0.6, 1.0, n_parts)

        # Beyond 4 sigma of every part the blob is < 0.5 grey levels, so evaluating it only in
        # this window changes nothing after rounding.
        half = int(np.ceil(0.4 * radius + 4.0 * sigma_a.max())) + 1
        y0, y1 = max(0, cy - half), min(h, cy + half + 1)
        x0, x1 = max(0, cx - half), min(w, cx + half + 1)
        yy, xx = rows[y0:y1] - cy, cols[:, x0:x1] - cx
        blob = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        for k in range(n_parts):
            ddy = yy - offset_r[k] * np.sin(offset_a[k])
            ddx = xx - offset_r[k] * np.cos(offset_a[k])
            along = (ddx * np.cos(theta[k]) + ddy * np.sin(theta[k])) / sigma_a[k]
            across = (ddy * np.cos(theta[k]) - ddx * np.sin(theta[k])) / sigma_b[k]
            blob += weight[k] * np.exp(-0.5 * (along**2 + across**2))
        blob *= peak / blob.max()
        added[y0:y1, x0:x1] += blob
        mask[y0:y1, x0:x1] |= blob > 0.1 * peak
    return added, mask
