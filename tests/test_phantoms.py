"""Tests for the procedural chest phantoms and their lesion-like anomalies."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sagan_ad.data.images.lesions import add_lesions
from sagan_ad.data.images.phantoms import make_chest_phantoms

SIZE = 64


def _band(images: np.ndarray, y: tuple[float, float], x: tuple[float, float]) -> np.ndarray:
    """Per-image mean over a box given as fractions of the image height and width."""
    h, w = images.shape[1:]
    rows = slice(round(y[0] * h), round(y[1] * h))
    cols = slice(round(x[0] * w), round(x[1] * w))
    return images[:, rows, cols].astype(np.float64).mean(axis=(1, 2))


def _body_masks(images: np.ndarray) -> np.ndarray:
    """Pixels clearly brighter than the air in the image corners."""
    k = max(2, images.shape[1] // 16)
    corners = np.concatenate(
        [images[:, :k, :k], images[:, :k, -k:], images[:, -k:, :k], images[:, -k:, -k:]], axis=1
    )
    air = corners.reshape(len(images), -1).mean(axis=1)
    return images > air[:, None, None] + 20


@pytest.fixture(scope="module")
def normal() -> np.ndarray:
    return make_chest_phantoms(200, SIZE, np.random.default_rng(0))


@pytest.fixture(scope="module")
def lesioned(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    abnormal, masks = add_lesions(normal, np.random.default_rng(1), max_lesions=3)
    return normal, abnormal, masks


@pytest.fixture(scope="module")
def lesions_128() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    images = make_chest_phantoms(60, 128, rng)
    abnormal, masks = add_lesions(images, rng, max_lesions=2)
    return images, abnormal, masks


def _components(masks: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(image index, component mask, stats row)`` for every connected lesion region."""
    found = []
    for i, mask in enumerate(masks):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        found.extend((i, labels == k, stats[k]) for k in range(1, count))
    return found


# --- phantoms -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(0, 64), (1, 32), (5, 64), (3, 97)])
def test_phantom_shape_and_dtype(n: int, size: int) -> None:
    images = make_chest_phantoms(n, size, np.random.default_rng(0))
    assert images.shape == (n, size, size)
    assert images.dtype == np.uint8


def test_phantoms_are_seeded() -> None:
    first = make_chest_phantoms(6, SIZE, np.random.default_rng(42))
    again = make_chest_phantoms(6, SIZE, np.random.default_rng(42))
    other = make_chest_phantoms(6, SIZE, np.random.default_rng(43))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 2.0


def test_phantoms_differ_from_each_other(normal: np.ndarray) -> None:
    images = normal[:30].astype(np.int16)
    diffs = np.abs(images[:, None] - images[None]).mean(axis=(2, 3))
    off_diagonal = diffs[~np.eye(len(images), dtype=bool)]
    assert off_diagonal.min() > 2.0


def test_phantoms_use_the_intensity_range(normal: np.ndarray) -> None:
    # Dark air, mid-grey lungs and bright bone must all be present, without saturating.
    assert np.percentile(normal, 5) < 40
    assert np.percentile(normal, 99) > 170
    assert (normal == 255).mean() < 0.001
    assert (normal == 0).mean() < 0.001


def test_mediastinum_is_brighter_than_lungs(normal: np.ndarray) -> None:
    mediastinum = _band(normal, (0.3, 0.6), (0.45, 0.55))
    left_lung = _band(normal, (0.3, 0.6), (0.2, 0.35))
    right_lung = _band(normal, (0.3, 0.6), (0.65, 0.8))
    assert (mediastinum > np.maximum(left_lung, right_lung)).mean() >= 0.95
    # Not a marginal difference: lungs are clearly dark on a chest film.
    assert np.median(mediastinum - np.maximum(left_lung, right_lung)) > 50


def test_heart_shadow_bulges_into_viewers_right_lung(normal: np.ndarray) -> None:
    viewer_right = _band(normal, (0.6, 0.7), (0.58, 0.7))
    viewer_left = _band(normal, (0.6, 0.7), (0.3, 0.42))
    assert (viewer_right > viewer_left).mean() >= 0.9


def test_abdomen_below_diaphragm_is_brighter_than_lungs(normal: np.ndarray) -> None:
    lungs = _band(normal, (0.3, 0.6), (0.2, 0.35))
    abdomen = _band(normal, (0.86, 0.95), (0.2, 0.35))
    assert (abdomen > lungs + 30).mean() >= 0.95


def test_corners_are_darker_than_body_centre(normal: np.ndarray) -> None:
    centre = _band(normal, (0.4, 0.6), (0.4, 0.6))
    for y, x in [((0, 0.06), (0, 0.06)), ((0, 0.06), (0.94, 1)), ((0.94, 1), (0, 0.06))]:
        assert np.all(_band(normal, y, x) < centre - 80)
    assert np.all(_band(normal, (0.94, 1), (0.94, 1)) < centre - 80)


@pytest.mark.parametrize(
    ("n", "size", "match"),
    [(-1, 64, r"^n must"), (2, 31, r"^size must"), (2, 0, r"^size must"), (2.5, 64, r"^n must")],
)
def test_phantom_bad_arguments(n: int, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_chest_phantoms(n, size, np.random.default_rng(0))


# --- lesions ------------------------------------------------------------------------------------


def test_lesion_shapes_and_dtypes(lesioned: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    normal, abnormal, masks = lesioned
    assert abnormal.shape == masks.shape == normal.shape
    assert abnormal.dtype == np.uint8
    assert masks.dtype == np.bool_


def test_lesions_do_not_modify_input() -> None:
    images = make_chest_phantoms(4, SIZE, np.random.default_rng(5))
    before = images.copy()
    add_lesions(images, np.random.default_rng(6))
    np.testing.assert_array_equal(images, before)


def test_lesions_are_seeded(normal: np.ndarray) -> None:
    a1, m1 = add_lesions(normal[:10], np.random.default_rng(7))
    a2, m2 = add_lesions(normal[:10], np.random.default_rng(7))
    a3, m3 = add_lesions(normal[:10], np.random.default_rng(8))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(a1, a3)
    assert not np.array_equal(m1, m3)


def test_every_image_has_a_lesion(lesioned: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, _, masks = lesioned
    assert masks.any(axis=(1, 2)).all()


def test_lesions_only_brighten_inside_their_masks(
    lesioned: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    normal, abnormal, masks = lesioned
    diff = abnormal.astype(np.int16) - normal
    assert diff.min() >= 0
    inside = np.array([d[m].mean() for d, m in zip(diff, masks, strict=True)])
    # The mask edge is at 10 % of the peak, so even the subtlest lesion (peak 25) clearly shows.
    assert inside.min() > 5
    assert inside.mean() >= 15


def test_image_unchanged_far_from_lesions(
    lesioned: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    normal, abnormal, masks = lesioned
    # Gaussian tails reach past the 10 % contour; by 15 % of the image size beyond it they add
    # less than half a grey level, which rounds away exactly.
    margin = round(0.15 * SIZE)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    for before, after, mask in zip(normal, abnormal, masks, strict=True):
        near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        np.testing.assert_array_equal(after[~near], before[~near])


def test_lesions_sit_in_the_lungs(lesioned: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    normal, abnormal, masks = lesioned
    body = _body_masks(normal)
    assert body[masks].mean() >= 0.95
    # Each lesion's brightest point lies where the normal film is darker than the body median:
    # the lung fields.
    diff = abnormal.astype(np.int16) - normal
    in_lung = []
    for i, component, _ in _components(masks):
        peak = np.unravel_index(np.argmax(np.where(component, diff[i], -1)), component.shape)
        smooth = cv2.GaussianBlur(normal[i].astype(np.float32), (0, 0), 2.0)
        in_lung.append(smooth[peak] < np.median(smooth[body[i]]))
    assert np.mean(in_lung) >= 0.95


def test_lesions_keep_off_the_border(
    lesioned: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    _, _, masks = lesioned
    assert not masks[:, :2].any() and not masks[:, -2:].any()
    assert not masks[:, :, :2].any() and not masks[:, :, -2:].any()


def test_lesions_are_not_squares(lesions_128: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, _, masks = lesions_128
    fill = []
    for _, _, stats in _components(masks):
        box = stats[cv2.CC_STAT_WIDTH] * stats[cv2.CC_STAT_HEIGHT]
        fill.append(stats[cv2.CC_STAT_AREA] / box)
    # A filled axis-aligned square fills its bounding box; an ellipse fills pi / 4 of it.
    assert np.mean(np.array(fill) < 0.9) >= 0.9
    assert np.median(fill) < 0.85


def test_lesions_vary_in_size_and_contrast(
    lesions_128: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    normal, abnormal, masks = lesions_128
    diff = abnormal.astype(np.int16) - normal
    radii, peaks = [], []
    for i, component, stats in _components(masks):
        radii.append(np.sqrt(stats[cv2.CC_STAT_AREA] / np.pi) / 128)
        peaks.append(diff[i][component].max())
    assert min(radii) < 0.05 and max(radii) > 0.1
    assert min(peaks) < 40 and max(peaks) > 70


def test_max_lesions_bounds_the_count(
    lesioned: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    normal, _, masks = lesioned
    # Overlapping lesions merge, so an image shows at most ``max_lesions`` regions.
    per_image = np.bincount([i for i, _, _ in _components(masks)], minlength=len(masks))
    assert per_image.min() >= 1 and per_image.max() <= 3
    assert (per_image >= 2).any()
    _, single = add_lesions(normal[:30], np.random.default_rng(10), max_lesions=1)
    per_image = np.bincount([i for i, _, _ in _components(single)], minlength=30)
    assert (per_image == 1).all()


def test_lesions_on_blank_images_still_fit() -> None:
    # No lungs to find: lesions still land inside the frame rather than failing.
    blank = np.full((3, 48, 40), 100, dtype=np.uint8)
    abnormal, masks = add_lesions(blank, np.random.default_rng(11))
    assert masks.any(axis=(1, 2)).all()
    assert not masks[:, :2].any() and not masks[:, :, -2:].any()
    assert (abnormal >= blank).all()


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (np.zeros((2, 64, 64), dtype=np.float32), {}, r"^images must"),
        (np.zeros((64, 64), dtype=np.uint8), {}, r"^images must"),
        (np.zeros((2, 1, 64, 64), dtype=np.uint8), {}, r"^images must"),
        (np.zeros((2, 16, 64), dtype=np.uint8), {}, r"^images must"),
        ([[[0]]], {}, r"^images must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"max_lesions": 0}, r"^max_lesions must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"max_lesions": 1.5}, r"^max_lesions must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"radius": (0.2, 0.1)}, r"^radius must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"radius": (0.1, 0.3)}, r"^radius must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"contrast": (0.0, 9.0)}, r"^contrast must"),
        (np.zeros((2, 64, 64), dtype=np.uint8), {"contrast": "bright"}, r"^contrast must"),
    ],
)
def test_lesion_bad_arguments(images: object, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        add_lesions(images, np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]


def test_lesion_radius_and_contrast_ranges_control_size_and_brightness() -> None:
    normal = make_chest_phantoms(40, 64, np.random.default_rng(12))
    kwargs = {"max_lesions": 1}
    small, small_masks = add_lesions(
        normal, np.random.default_rng(13), radius=(0.04, 0.05), contrast=(30.0, 30.0), **kwargs
    )
    large, large_masks = add_lesions(
        normal, np.random.default_rng(13), radius=(0.15, 0.2), contrast=(80.0, 80.0), **kwargs
    )
    # Area grows with the square of the radius: (0.15 / 0.05)^2 = 9 at least, minus rounding.
    assert large_masks.sum() > 5 * small_masks.sum()
    small_peak = (small.astype(int) - normal).max(axis=(1, 2))
    large_peak = (large.astype(int) - normal).max(axis=(1, 2))
    # Peaks are the contrast up to rounding and the clip at 255.
    assert np.all(np.abs(small_peak - 30) <= 1)
    assert np.all(large_peak <= 81) and np.median(large_peak) >= 79
