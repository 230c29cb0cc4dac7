"""Procedural chest-radiograph phantoms (their lesion-like anomalies:
`sagan_ad.data.images.lesions`).

These power the built-in quickstart dataset: they need no files and no downloads, yet have the
anatomy an anomaly detector has to learn (dark lung fields, bright mediastinum and spine, heart
shadow, ribs, diaphragm domes) so that lesions placed inside the lungs are a meaningful
"abnormal" class. Everything is plain numpy (plus OpenCV to resize), so the module is usable
without torch.

Examples:
    >>> import numpy as np
    >>> from sagan_ad.data.images.lesions import add_lesions
    >>> rng = np.random.default_rng(0)
    >>> normal = make_chest_phantoms(4, 64, rng)
    >>> abnormal, masks = add_lesions(normal, rng)
    >>> normal.shape, abnormal.dtype, masks.dtype
    ((4, 64, 64), dtype('uint8'), dtype('bool'))
"""

from __future__ import annotations

import cv2
import numpy as np

from sagan_ad.errors import InputError

__all__ = ["make_chest_phantoms"]

MIN_SIZE = 32
# Rendering is chunked so that peak memory stays at a few tens of MB even for 1000 x 256 px.
_CHUNK_PIXELS = 1 << 21
# OpenCV 5 accepts at most 128 channels per image (OpenCV 4: 512).
_CV_MAX_CHANNELS = 128


def make_chest_phantoms(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render procedural posterior-anterior chest radiograph phantoms.

    Each image has a dark background, a bright body ellipse, two dark lung fields with diaphragm
    domes and faint ribs, a bright mediastinum and spine band, a heart shadow bulging into the
    lower lung on the viewer's right (the patient's left), clavicles, a trachea, smooth
    low-frequency intensity variation, mild noise and a few percent of global
    brightness/contrast jitter. Anatomy size, position and asymmetry are randomised per image.

    Args:
        n: Number of images, ``n >= 0``.
        size: Height and width in pixels, ``size >= 32``.
        rng: Source of randomness; the same seed gives identical images.

    Returns:
        ``uint8`` array of shape ``(n, size, size)``.

    Raises:
        ValueError: If ``n`` is negative or ``size`` is smaller than 32.

    Examples:
        >>> import numpy as np
        >>> images = make_chest_phantoms(8, 128, np.random.default_rng(0))
        >>> images.shape, images.dtype
        ((8, 128, 128), dtype('uint8'))
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise InputError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    n, size = int(n), int(size)
    out = np.empty((n, size, size), dtype=np.uint8)
    if n == 0:
        return out
    # All per-image parameters are drawn up front so that an image's anatomy does not depend on
    # how the batch is chunked for rendering.
    params = _draw_anatomy(n, rng)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sub = {key: value[start:stop] for key, value in params.items()}
        out[start:stop] = _render(sub, size, rng)
    return out


def _draw_anatomy(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image anatomy parameters in normalised coordinates (image spans [-1, 1])."""
    # Ranges are deliberately tight so the landmarks stay where a radiologist expects them, with
    # enough spread that no two phantoms look alike.
    ranges = {
        # Patient placement: global shift and scale of all anatomy.
        "shift_x": (-0.04, 0.04),
        "shift_y": (-0.04, 0.04),
        "scale": (0.95, 1.04),
        # Body (soft tissue) superellipse.
        "body_cx": (-0.02, 0.02),
        "body_cy": (0.12, 0.2),
        "body_ax": (0.84, 0.92),
        "body_ay": (1.12, 1.22),
        "body_level": (135.0, 150.0),
        "background": (12.0, 22.0),
        # Lungs: viewer's left is the patient's right lung, usually a little larger and higher.
        "lung_l_cx": (-0.45, -0.39),
        "lung_l_cy": (-0.1, 0.0),
        "lung_l_ax": (0.23, 0.28),
        "lung_l_ay": (0.5, 0.58),
        "lung_r_cx": (0.39, 0.45),
        "lung_r_cy": (-0.08, 0.02),
        "lung_r_ax": (0.21, 0.27),
        "lung_r_ay": (0.5, 0.58),
        "lung_power": (2.0, 2.6),
        "lung_taper": (0.25, 0.45),
        "lung_depth": (70.0, 85.0),
        "dome_l_y": (0.33, 0.4),
        "dome_r_y": (0.37, 0.45),
        "dome_curve": (0.9, 1.5),
        # Heart, mediastinum, spine, trachea.
        "heart_cx": (0.08, 0.14),
        "heart_cy": (0.3, 0.36),
        "heart_ax": (0.3, 0.36),
        "heart_ay": (0.2, 0.25),
        "spine_cx": (-0.02, 0.02),
        "med_width": (0.15, 0.2),
        "med_level": (40.0, 55.0),
        "spine_width": (0.055, 0.075),
        "spine_level": (15.0, 25.0),
        "vert_period": (0.1, 0.13),
        "vert_phase": (0.0, 1.0),
        "trachea_level": (15.0, 25.0),
        # Ribs and clavicles.
        "rib_spacing": (0.14, 0.17),
        "rib_curve": (1.8, 2.6),
        "rib_phase_l": (0.0, 1.0),
        "rib_phase_r": (0.0, 1.0),
        "rib_level": (12.0, 18.0),
        "clav_y": (-0.66, -0.56),
        "clav_level": (18.0, 28.0),
        # Global film jitter.
        "contrast": (0.96, 1.04),
        "brightness": (-5.0, 5.0),
    }
    return {
        key: rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)
        for key, (lo, hi) in ranges.items()
    }


def _ramp(z: np.ndarray) -> np.ndarray:
    """Clip ``z`` to [0, 1] in place: a soft edge whose 1-D parts were pre-scaled and offset."""
    return np.clip(z, 0.0, 1.0, out=z)


def _smooth_field(
    count: int, size: int, knots: int, amplitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random fields of shape ``(count, size, size)`` with a std of about ``amplitude``.

    Bicubic upsampling of a ``knots`` x ``knots`` white-noise grid, with the batch stacked as
    image channels so one OpenCV call serves many images. This avoids a BLAS product, whose
    spinning worker threads slow the rest of the (single-threaded) rendering on machines with
    few cores.
    """
    # Bicubic interpolation of unit white noise has a std of ~0.85.
    grid = rng.standard_normal((knots, knots, count), dtype=np.float32) * (amplitude / 0.85)
    parts = [
        cv2.resize(
            np.ascontiguousarray(grid[:, :, i : i + _CV_MAX_CHANNELS]),
            (size, size),
            interpolation=cv2.INTER_CUBIC,
        )
        for i in range(0, count, _CV_MAX_CHANNELS)
    ]
    # OpenCV drops the channel axis of single-channel results; restore it before stacking.
    stacked = np.concatenate([part.reshape(size, size, -1) for part in parts], axis=2)
    return np.ascontiguousarray(stacked.transpose(2, 0, 1))


def _render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one chunk of phantoms from their parameters into ``uint8``.

    Only shift and scale are applied to the anatomy, so x and y stay separable: transcendental
    functions are evaluated on (count, 1, size) or (count, size, 1) profiles and combined by
    broadcasting (the clavicles, the one exception, only on the top rows), with soft edges
    pre-scaled so each costs one subtraction and one clip at full size. That keeps 1000 images
    at 256 px to a few seconds.
    """
    count = len(p["scale"])
    coord = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x = (coord[None, None, :] - p["shift_x"]) / p["scale"]
    y = (coord[None, :, None] - p["shift_y"]) / p["scale"]
    dx = np.abs(x - p["spine_cx"])
    left = x < p["spine_cx"]
    # Edge widths are in normalised units so phantoms look the same at every resolution; a
    # ramp (a - b) / width + 0.5 is written as (a / width + 0.5) - b / width.
    edge = 0.06

    body_k = 2.2 * edge
    body_u = (np.abs(x - p["body_cx"]) / p["body_ax"]) ** 2.2
    body_v = (np.abs(y - p["body_cy"]) / p["body_ay"]) ** 2.2
    body = _ramp((1.0 - body_v) / body_k + 0.5 - body_u / body_k)

    lungs = np.zeros_like(body)
    domes = []
    for side in ("l", "r"):
        cx, power = p[f"lung_{side}_cx"], p["lung_power"]
        lv = (y - p[f"lung_{side}_cy"]) / p[f"lung_{side}_ay"]
        # The apex is narrower than the base, as in a real lung.
        width = 1.0 - p["lung_taper"] * np.clip(-lv, 0.0, 1.0) ** 2
        lu = (np.abs(x - cx) / p[f"lung_{side}_ax"]) ** power / 0.2
        shape = _ramp((1.0 - np.abs(lv) ** power) / 0.2 + 0.5 - lu * width**-power)
        # The diaphragm dome is highest mid-lung and falls to the costophrenic angles.
        dome = p[f"dome_{side}_y"] + p["dome_curve"] * (x - cx) ** 2
        shape *= _ramp(dome / edge + 0.5 - y / edge)
        lungs += shape
        domes.append(dome)

    heart_u = ((x - p["heart_cx"]) / p["heart_ax"]) ** 2 / 0.35
    heart_v = ((y - p["heart_cy"]) / p["heart_ay"]) ** 2 / 0.35
    heart = _ramp((1.0 / 0.35 + 0.5 - heart_v) - heart_u)
    air = 1.0 - 0.92 * heart
    air *= lungs

    # Heart, mediastinum and the liver/spleen below the diaphragm are all dense soft tissue, so
    # they share one brightness and merge into one shadow instead of showing separate discs.
    # The heart rests on the diaphragm, so the domes may not sag below it in the middle.
    heart_base = p["heart_cy"] + 0.5 * p["heart_ay"] + 1.5 * dx**2
    diaphragm = np.minimum(np.where(left, domes[0], domes[1]), heart_base)
    abdomen = _ramp(y / edge - ((diaphragm + 0.03) / edge - 0.5))
    mediastinum = np.clip((p["med_width"] - dx) / 0.15 + 0.5, 0.0, 1.0)
    soft_tissue = np.maximum(np.maximum(heart, mediastinum, out=heart), abdomen, out=heart)
    soft_tissue *= p["med_level"]
    spine = np.clip((p["spine_width"] - dx) / 0.03 + 0.5, 0.0, 1.0) * p["spine_level"]
    vertebrae = 0.8 + 0.2 * np.cos(2.0 * np.pi * (y / p["vert_period"] + p["vert_phase"])) ** 2
    soft_tissue += spine * vertebrae
    soft_tissue *= 1.0 - air

    # Body thickness falls towards the skin, so the torso is brightest in the middle.
    thick_x = np.sqrt(np.clip(1.0 - body_u ** (2.0 / 2.2), 0.0, 1.0)) * (0.15 * p["body_level"])
    thick_y = np.sqrt(np.clip(1.0 - body_v ** (2.0 / 2.2), 0.0, 1.0))
    img = thick_x * thick_y
    img += 0.85 * p["body_level"]
    img += _smooth_field(count, size, 6, 6.0, rng)
    img += soft_tissue

    # Vessels make the perihilar lung greyer than the periphery; the texture adds markings.
    hilum_x = np.exp(-((dx - 0.25) ** 2) / 0.03) * (-0.35 * p["lung_depth"])
    hilum_y = np.exp(-((y + 0.02) ** 2) / 0.03)
    lung_signal = hilum_x * hilum_y
    lung_signal += p["lung_depth"]
    lung_signal -= _smooth_field(count, size, 14, 4.0, rng)
    lung_signal *= air
    img -= lung_signal

    # Posterior ribs: parabolic arcs peaking mid-hemithorax, one periodic pattern per side.
    # cos(a - b) = cos a cos b + sin a sin b keeps the full-size work to two products.
    rib_phase = np.where(left, p["rib_phase_l"], p["rib_phase_r"])
    arc_x = 2.0 * np.pi * ((p["rib_curve"] * (dx - 0.35) ** 2 + 0.25 * dx) / p["rib_spacing"])
    arc_x -= 2.0 * np.pi * rib_phase
    arc_y = 2.0 * np.pi * y / p["rib_spacing"]
    ribs = np.cos(arc_y) * (0.5 * np.cos(arc_x))
    ribs += np.sin(arc_y) * (0.5 * np.sin(arc_x))
    ribs += 0.5
    ribs *= ribs * ribs
    ribs *= ribs
    # Ribs show mostly against the dark lungs and only faintly through soft tissue.
    ribs *= np.clip((dx - 0.1) / 0.08 + 0.5, 0.0, 1.0) * (0.15 * p["rib_level"])
    lungs *= 0.85 / 0.15
    lungs += 1.0
    ribs *= lungs
    img += ribs

    # Clavicles and trachea only exist in the top part of the film; skip the other rows.
    top = int(np.searchsorted(coord, -0.25))
    clav_centre = p["clav_y"] - 0.18 * (dx - 0.1)
    clavicles = np.exp(-(((y[:, :top] - clav_centre) / 0.035) ** 2))
    clavicles *= np.clip((0.7 - dx) / 0.06 + 0.5, 0.0, 1.0)
    clavicles *= np.clip((dx - 0.07) / 0.04 + 0.5, 0.0, 1.0) * p["clav_level"]
    trachea_x = np.exp(-((dx / 0.035) ** 2)) * p["trachea_level"]
    clavicles -= trachea_x * np.clip((-0.3 - y[:, :top]) / 0.15 + 0.5, 0.0, 1.0)
    img[:, :top] += clavicles

    img -= p["background"]
    img *= body
    # Mild film grain: integers uniform in [-3, 3] (std 2 grey levels); drawing int8 is several
    # times cheaper than Gaussian floats, and the grain is indistinguishable after rounding.
    img += rng.integers(-3, 4, size=img.shape, dtype=np.int8)
    # Background and brightness/contrast jitter folded into one affine map; contrast pivots
    # around mid-grey so it does not also shift overall brightness.
    img *= p["contrast"]
    img += (p["background"] - 128.0) * p["contrast"] + 128.0 + p["brightness"]
    return np.clip(np.rint(img, out=img), 0, 255, out=img).astype(np.uint8)
