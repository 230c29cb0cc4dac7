"""Image-level metrics against brute-force references, single-class behaviour, DDP-safe states."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from sagan_ad.evaluation.metrics import (
    ImageMetrics,
    SingleClassWarning,
    auroc,
    average_precision,
    bootstrap_auroc_ci,
    detection_metrics,
    f1_max,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)


def pairwise_auroc(scores: list[float], labels: list[int]) -> float:
    """The definition: over all (abnormal, normal) pairs, 1 if ordered right, 1/2 if tied."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def operating_points(scores: list[float], labels: list[int]) -> list[tuple[float, float]]:
    """(sensitivity, specificity) of every threshold `score >= t`, t over the scores and +inf."""
    points = []
    for t in [*scores, math.inf]:
        tp = sum(s >= t and y == 1 for s, y in zip(scores, labels, strict=True))
        tn = sum(s < t and y == 0 for s, y in zip(scores, labels, strict=True))
        points.append((tp / labels.count(1), tn / labels.count(0)))
    return points


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pairwise_count_with_many_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    # Integer scores in a small range force many ties within and across classes.
    labels = torch.randint(0, 2, (60,), generator=generator)
    scores = (torch.randint(0, 6, (60,), generator=generator) + labels).double()
    expected = pairwise_auroc(scores.tolist(), labels.tolist())
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert float(binary_auroc(scores, labels)) == pytest.approx(expected, abs=1e-6)


def test_auroc_of_hand_made_cases():
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auroc(torch.full((6,), 0.3), torch.tensor([0, 1, 0, 1, 0, 1])) == 0.5


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [1, 1, 1]])
def test_single_class_gives_nan_with_a_warning(labels):
    labels = torch.tensor(labels)
    scores = torch.linspace(0, 1, len(labels))
    with pytest.warns(SingleClassWarning, match="undefined"):
        assert math.isnan(auroc(scores, labels))
    with pytest.warns(SingleClassWarning):
        low, high = bootstrap_auroc_ci(scores, labels)
    assert math.isnan(low) and math.isnan(high)
    with pytest.warns(SingleClassWarning):
        metrics = detection_metrics(scores, labels, num_resamples=10)
    assert math.isnan(metrics["AUROC"]) and math.isnan(metrics["sensitivity@specificity=0.90"])
    assert metrics["num_normal"] + metrics["num_abnormal"] == len(labels)


def test_average_precision_without_abnormal_images_is_nan_and_with_only_abnormal_is_one():
    with pytest.warns(SingleClassWarning):
        assert math.isnan(average_precision(torch.rand(5), torch.zeros(5, dtype=torch.long)))
    assert average_precision(torch.rand(5), torch.ones(5, dtype=torch.long)) == pytest.approx(1.0)


def test_average_precision_matches_the_mean_precision_at_each_abnormal_without_ties():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randperm(30, generator=generator).double()
    labels = (torch.arange(30) % 3 == 0).long()
    ranked = labels[scores.argsort(descending=True)]
    precisions = ranked.cumsum(0).double() / torch.arange(1, 31).double()
    expected = float(precisions[ranked == 1].mean())
    assert average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert float(binary_average_precision(scores, labels)) == pytest.approx(expected, abs=1e-6)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        auroc(torch.rand(3), torch.tensor([0, 1, -1]))
    with pytest.raises(ValueError, match="scores but"):
        auroc(torch.rand(3), torch.tensor([0, 1]))


def test_operating_points_and_f1_max_match_brute_force():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (40,), generator=generator)
    scores = (torch.randint(0, 8, (40,), generator=generator) + 2 * labels).double()
    points = operating_points(scores.tolist(), labels.tolist())
    for level in (0.9, 0.95, 0.5):
        best_sens = max(se for se, sp in points if sp >= level)
        best_spec = max(sp for se, sp in points if se >= level)
        assert sensitivity_at_specificity(scores, labels, level) == pytest.approx(best_sens)
        assert specificity_at_sensitivity(scores, labels, level) == pytest.approx(best_spec)
    f1s = []
    for t in scores.tolist():
        predicted = scores >= t
        tp = float((predicted & (labels == 1)).sum())
        fp = float((predicted & (labels == 0)).sum())
        fn = float((~predicted & (labels == 1)).sum())
        f1s.append((2 * tp / (2 * tp + fp + fn), t))
    best, threshold = f1_max(scores, labels)
    assert best == pytest.approx(max(f for f, _ in f1s))
    assert (best, threshold) in [(pytest.approx(f), t) for f, t in f1s]


def test_bootstrap_interval_is_seeded_and_brackets_the_auroc():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    scores = torch.randn(200, generator=generator) + labels
    a = bootstrap_auroc_ci(scores, labels, num_resamples=500, seed=7)
    b = bootstrap_auroc_ci(scores, labels, num_resamples=500, seed=7)
    c = bootstrap_auroc_ci(scores, labels, num_resamples=500, seed=8)
    assert a == b and a != c
    value = auroc(scores, labels)
    assert a[0] < value < a[1]
    # A 95% interval of the AUROC of 100 + 100 images is a few hundredths wide on each side.
    assert 0.02 < value - a[0] < 0.15 and 0.02 < a[1] - value < 0.15


def test_bootstrap_resample_auroc_matches_a_direct_computation():
    # One resample, reproduced by hand: the same counts drawn with the same seed.
    scores = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.5, 0.9], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    low, high = bootstrap_auroc_ci(scores, labels, num_resamples=1, seed=3)
    assert low == high
    generator = torch.Generator().manual_seed(3)
    normal = scores[labels == 0].sort().values
    abnormal = scores[labels == 1]
    n_draw = torch.randint(0, 3, (1, 3), generator=generator)[0]
    a_draw = torch.randint(0, 3, (1, 3), generator=generator)[0]
    resampled = torch.cat([normal[n_draw], abnormal[a_draw]])
    assert low == pytest.approx(pairwise_auroc(resampled.tolist(), [0, 0, 0, 1, 1, 1]))


def test_image_metrics_deduplicates_padded_samples_and_sorts_by_index():
    metric = ImageMetrics()
    metric.update(torch.tensor([0.3, 0.9]), torch.tensor([0, 1]), torch.tensor([2, 0]))
    # A DistributedSampler repeats samples to fill the last batch.
    metric.update(torch.tensor([0.1, 0.3]), torch.tensor([0, 0]), torch.tensor([1, 2]))
    out = metric.compute()
    assert out["index"].tolist() == [0, 1, 2]
    assert out["score"].tolist() == pytest.approx([0.9, 0.1, 0.3])
    assert out["label"].tolist() == [1, 0, 0]
    metric.reset()
    assert metric.compute()["index"].numel() == 0


def test_detection_metrics_keys():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    metrics = detection_metrics(scores, labels, num_resamples=50)
    assert metrics["AUROC"] == 1.0 and metrics["AP"] == pytest.approx(1.0)
    for key in (
        "F1_max",
        "sensitivity@specificity=0.90",
        "sensitivity@specificity=0.95",
        "specificity@sensitivity=0.90",
        "specificity@sensitivity=0.95",
    ):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["AUROC_CI_low"] == metrics["AUROC_CI_high"] == 1.0


def test_image_metrics_under_ddp_sees_every_rank_once():
    # Rank 1's states, as torchmetrics' gather would return them; its last sample (index 1) is
    # the DistributedSampler's padding and repeats rank 0's image 1.
    other_rank = {
        "scores": torch.tensor([0.8, 0.2], dtype=torch.float64),
        "labels": torch.tensor([1, 0]),
        "indices": torch.tensor([2, 1]),
        "statistics": torch.tensor([[0.8, 0.1], [0.2, 0.1]]),
    }
    states = iter(["scores", "labels", "indices", "statistics"])

    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, other_rank[next(states)]]

    metric = ImageMetrics(dist_sync_fn=gather, distributed_available_fn=lambda: True)
    statistics = torch.tensor([[0.1, 0.1], [0.2, 0.1]])
    metric.update(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), torch.tensor([0, 1]), statistics)
    out = metric.compute()
    assert out["index"].tolist() == [0, 1, 2]
    assert out["statistics"][:, 0].tolist() == pytest.approx([0.1, 0.2, 0.8])
    assert out["label"].tolist() == [0, 0, 1]
    assert out["score"].tolist() == pytest.approx([0.1, 0.2, 0.8])
