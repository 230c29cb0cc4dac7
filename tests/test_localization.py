"""Pixel AUROC, AUPRO and the pointing game on synthetic maps with known masks and boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sagan_ad.evaluation.localization import (
    PixelMetrics,
    PointingGame,
    label_regions,
    map_peaks,
    pointing_game_hits,
)
from sagan_ad.evaluation.metrics import SingleClassWarning, auroc
from sagan_ad.evaluation.scoring import smooth_map


def two_lesion_masks() -> torch.Tensor:
    masks = torch.zeros(4, 1, 32, 32, dtype=torch.bool)
    masks[0, 0, 4:10, 4:10] = True  # a 36-pixel region
    masks[1, 0, 20:22, 20:22] = True  # a 4-pixel region
    return masks  # images 2 and 3 are normal


def test_perfect_and_inverted_maps():
    masks = two_lesion_masks()
    perfect = PixelMetrics()
    perfect.update(masks.float() * 0.3, masks)
    assert perfect.compute() == {"pixel_AUROC": 1.0, "AUPRO": 1.0}
    inverted = PixelMetrics()
    inverted.update((~masks).float() * 0.3, masks)
    result = inverted.compute()
    assert result["pixel_AUROC"] == pytest.approx(0.0)
    assert result["AUPRO"] == pytest.approx(0.0)


def test_pixel_auroc_equals_the_image_level_definition_on_quantised_maps():
    generator = torch.Generator().manual_seed(0)
    masks = two_lesion_masks()
    # Values on the metric's own threshold grid, so binning loses nothing.
    steps = torch.randint(0, 1001, masks.shape, generator=generator)
    steps[masks] = (steps[masks] + 200).clamp(max=1000)
    maps = steps.double() / 1000
    metric = PixelMetrics()
    for i in range(4):  # batches add up
        metric.update(maps[i : i + 1], masks[i : i + 1])
    expected = auroc(maps.flatten(), masks.flatten().long())
    assert metric.compute()["pixel_AUROC"] == pytest.approx(expected, abs=1e-9)


def test_aupro_weights_regions_equally_unlike_pixel_auroc():
    masks = two_lesion_masks()
    maps = torch.full(masks.shape, 0.1)
    maps[0][masks[0]] = 0.8  # the large region is found ...
    maps[1][masks[1]] = 0.05  # ... the small one scores below every normal pixel.
    metric = PixelMetrics()
    metric.update(maps, masks)
    result = metric.compute()
    # Per-region overlap: 1 for the large region, 0 for the small one, at every FPR below 1.
    assert result["AUPRO"] == pytest.approx(0.5)
    # Pixel-wise, 36 of 40 anomalous pixels outscore every normal pixel and 4 score below all.
    assert result["pixel_AUROC"] == pytest.approx(0.9)


def test_aupro_integrates_only_up_to_max_fpr():
    masks = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    masks[0, 0, :, :2] = True  # 20 anomalous pixels, one region
    maps = torch.zeros(1, 1, 10, 10)
    maps[0, 0, :, :1] = 0.9  # half the region scores high
    maps[0, 0, :, 1:2] = 0.5
    maps[0, 0, :, 2:] = 0.5  # ... the other half ties with every normal pixel
    metric = PixelMetrics(max_fpr=0.3)
    metric.update(maps, masks)
    # Operating points (FPR, PRO): (0, 0.5) above 0.5 and (1, 1) at 0.5. Between them the
    # curve is linear (the trapezoid rule, as in MVTec AD's evaluation), so PRO(0.3) = 0.65
    # and the area up to 0.3 is 0.3 * (0.5 + 0.65) / 2, normalised by 0.3.
    assert metric.compute()["AUPRO"] == pytest.approx((0.5 + 0.65) / 2)


def test_no_anomalous_pixels_gives_nan_with_a_warning():
    metric = PixelMetrics()
    metric.update(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.bool))
    with pytest.warns(SingleClassWarning):
        result = metric.compute()
    assert math.isnan(result["pixel_AUROC"]) and math.isnan(result["AUPRO"])


def test_regions_are_counted_per_image_and_connected_with_diagonals():
    masks = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    masks[0, 0, 0, 0] = masks[0, 0, 1, 1] = True  # diagonal neighbours: one region
    masks[0, 0, 4, 4] = True
    masks[1, 0, 0, 0] = True
    ids, count = label_regions(masks)
    assert count == 3
    assert ids[0, 0, 0, 0] == ids[0, 0, 1, 1] != ids[0, 0, 4, 4]


def test_pointing_game_on_boxes_in_original_pixels():
    maps = torch.zeros(3, 1, 8, 8)
    maps[0, 0, 1, 1] = 1.0  # peak at original (x, y) = (15, 15) in a 80 x 80 image
    maps[1, 0, 6, 6] = 1.0  # peak at (65, 65)
    maps[2, 0, 3, 3] = 1.0
    peaks = map_peaks(maps, [(80, 80), (80, 80), (80, 80)])
    assert peaks[0].tolist() == [15.0, 15.0] and peaks[1].tolist() == [65.0, 65.0]
    boxes = [
        np.array([[10, 10, 20, 20]]),
        np.array([[10, 10, 20, 20], [0, 0, 5, 5]]),
        np.zeros((0, 4)),
    ]
    hits = pointing_game_hits(peaks, boxes)
    assert hits.tolist() == [1, 0, -1]
    game = PointingGame()
    game.update(hits)
    assert float(game.compute()) == 0.5
    assert math.isnan(float(PointingGame().compute()))


def test_smoothing_moves_the_peak_to_the_blob_not_the_speck():
    maps = torch.zeros(1, 1, 32, 32)
    maps[0, 0, 2, 2] = 1.0  # a single hot pixel (restoration noise)
    maps[0, 0, 20:26, 20:26] = 0.6  # a lesion-sized blob
    raw = map_peaks(maps)[0].tolist()
    smoothed = map_peaks(smooth_map(maps, 2.0))[0].tolist()
    assert raw == [2.5, 2.5]
    assert 20 <= smoothed[0] <= 26 and 20 <= smoothed[1] <= 26
    assert torch.equal(smooth_map(maps, 0.0), maps)
