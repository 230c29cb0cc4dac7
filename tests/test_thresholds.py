"""Threshold policies on constructed score distributions."""

from __future__ import annotations

import math

import pytest
import torch

from sagan_ad.evaluation.thresholds import apply_threshold, choose_threshold


def scores_and_labels(normal: list[float], abnormal: list[float]) -> tuple[torch.Tensor, ...]:
    scores = torch.tensor(normal + abnormal, dtype=torch.float64)
    labels = torch.tensor([0] * len(normal) + [1] * len(abnormal))
    return scores, labels


def rates(scores, labels, threshold) -> tuple[float, float]:
    predicted = apply_threshold(scores, threshold).bool()
    sensitivity = float(predicted[labels == 1].double().mean())
    specificity = float((~predicted[labels == 0]).double().mean())
    return sensitivity, specificity


def test_separable_classes_every_policy_separates_them():
    scores, labels = scores_and_labels([0.1, 0.2, 0.3], [0.7, 0.8, 0.9])
    for policy in ("balanced", "youden", "f1"):
        threshold = choose_threshold(scores, labels, policy)
        assert threshold == 0.7, policy
        assert rates(scores, labels, threshold) == (1.0, 1.0)


def test_balanced_policy_equalises_sensitivity_and_specificity():
    # Normals 0..99, abnormals 80..179 (overlap 80..99): sens = spec at the middle of the overlap.
    scores, labels = scores_and_labels(
        [float(i) for i in range(100)], [float(i) for i in range(80, 180)]
    )
    threshold = choose_threshold(scores, labels, "balanced")
    sensitivity, specificity = rates(scores, labels, threshold)
    assert abs(sensitivity - specificity) <= 0.01
    assert threshold == 90.0


def test_youden_and_f1_differ_when_classes_are_imbalanced():
    # 100 normals over 0..9.9, 10 abnormals at 9.5, 10.5, ..., 18.5. Youden's J weighs both
    # classes' rates equally and catches every abnormal at the cost of 5 normals (J = 0.95); F1
    # cares about precision and drops one abnormal to flag no normal (F1 = 18/19 > 0.8).
    normal = [i / 10 for i in range(100)]
    abnormal = [9.5 + i for i in range(10)]
    scores, labels = scores_and_labels(normal, abnormal)
    assert choose_threshold(scores, labels, "youden") == 9.5
    assert choose_threshold(scores, labels, "f1") == 10.5


def test_percentile_policy_uses_normal_scores_only():
    normal = [float(i) for i in range(101)]
    scores, labels = scores_and_labels(normal, [1000.0, 2000.0])
    assert choose_threshold(scores, labels, "percentile", percentile=95) == pytest.approx(95.0)
    only_normals = torch.tensor(normal, dtype=torch.float64)
    threshold = choose_threshold(only_normals, torch.zeros(101, dtype=torch.long), "percentile")
    flagged = apply_threshold(only_normals, threshold).double().mean()
    assert float(flagged) == pytest.approx(6 / 101)  # 95..100 are at or above the 95th


@pytest.mark.parametrize("policy", ["balanced", "youden", "f1"])
def test_curve_policies_refuse_validation_without_anomalies(policy):
    with pytest.raises(ValueError, match="use policy 'percentile'"):
        choose_threshold(torch.rand(10), torch.zeros(10, dtype=torch.long), policy)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="needs normal"):
        choose_threshold(torch.rand(3), torch.ones(3, dtype=torch.long), "percentile")
    with pytest.raises(ValueError, match="choose one of"):
        choose_threshold(torch.rand(3), torch.tensor([0, 1, 0]), "median")
    with pytest.raises(ValueError, match="percentile"):
        choose_threshold(torch.rand(3), torch.tensor([0, 1, 0]), "percentile", percentile=100)


def test_apply_threshold_without_a_threshold_predicts_unknown():
    assert apply_threshold(torch.tensor([0.2, 0.9]), math.nan).tolist() == [-1, -1]
    assert apply_threshold(torch.tensor([0.2, 0.5, 0.9]), torch.tensor(0.5)).tolist() == [0, 1, 1]
