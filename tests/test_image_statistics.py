"""The trivial statistics of a film (sagan_ad.image_statistics): each measures what it says,
on every image size, in chunks as in one go."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sagan_ad.image_statistics import STATISTICS, describe_statistic, image_statistics


def named(images: torch.Tensor) -> list[dict[str, float]]:
    return [dict(zip(STATISTICS, row.tolist(), strict=True)) for row in image_statistics(images)]


def test_a_checkerboard_is_sharp_both_ways_and_stripes_one_way():
    board = torch.tensor(np.indices((16, 16)).sum(0) % 2 * 255, dtype=torch.uint8)
    stripes = torch.tensor([0, 255] * 8, dtype=torch.uint8).repeat(16, 1)
    board_stats, stripe_stats = named(torch.stack([board, stripes])[:, None])
    assert board_stats["sharpness_vertical"] == board_stats["sharpness_horizontal"] == 1.0
    assert stripe_stats["sharpness_horizontal"] == 1.0
    assert stripe_stats["sharpness_vertical"] == 0.0
    for stats in (board_stats, stripe_stats):
        assert stats["mean_intensity"] == pytest.approx(0.5)
        assert stats["contrast"] == pytest.approx(0.5)
        assert stats["centre_contrast"] == pytest.approx(0.5)
        assert stats["high_frequency"] > 0.3


def test_blur_lowers_sharpness_and_fine_detail_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    film = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    blurred = cv2.GaussianBlur(film, (0, 0), 1.5)
    sharp, soft = named(torch.from_numpy(np.stack([film, blurred]))[:, None])
    for name in ("sharpness_vertical", "sharpness_horizontal", "high_frequency", "contrast"):
        assert soft[name] < 0.5 * sharp[name], name
    assert soft["mean_intensity"] == pytest.approx(sharp["mean_intensity"], abs=0.01)


def test_centre_contrast_ignores_the_borders():
    film = torch.full((1, 1, 32, 32), 128, dtype=torch.uint8)
    film[..., :4, :] = 0  # a black collimation band at the top
    (stats,) = named(film)
    assert stats["contrast"] > 0.1
    assert stats["centre_contrast"] == 0.0


def test_a_uniform_film_has_no_contrast_sharpness_or_detail():
    (stats,) = named(torch.full((1, 3, 8, 8), 51, dtype=torch.uint8))
    assert stats["mean_intensity"] == pytest.approx(0.2)
    assert all(stats[name] == pytest.approx(0.0, abs=1e-6) for name in STATISTICS[1:])


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 1), (3, 3)])
def test_tiny_and_one_pixel_wide_images_give_finite_statistics(size):
    images = torch.randint(0, 256, (2, 1, *size), dtype=torch.uint8)
    stats = image_statistics(images)
    assert stats.shape == (2, len(STATISTICS)) and torch.isfinite(stats).all()


def test_chunks_give_the_statistics_of_one_pass():
    images = torch.randint(0, 256, (600, 1, 12, 12), dtype=torch.uint8)
    whole = torch.cat([image_statistics(images[:300]), image_statistics(images[300:])])
    assert torch.allclose(image_statistics(images), whole)
    assert image_statistics(images[:0]).shape == (0, len(STATISTICS))


def test_only_uint8_images_are_taken():
    with pytest.raises(ValueError, match=r"uint8 images \(N, C, H, W\), got torch.float32"):
        image_statistics(torch.rand(2, 1, 8, 8))


def test_each_statistic_is_described_both_ways():
    for name in STATISTICS:
        higher, lower = describe_statistic(name, 1.0), describe_statistic(name, -1.0)
        assert higher != lower and higher.endswith(" = abnormal)")
