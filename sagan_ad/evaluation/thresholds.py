"""Choosing the operating threshold of a detector from validation scores.

An image is predicted abnormal when ``score >= threshold``. Policies:

- ``"balanced"``: sensitivity = specificity (the ROC point closest to that line; what the paper's
  code computes);
- ``"youden"``: the largest ``sensitivity + specificity - 1`` (Youden's J);
- ``"f1"``: the largest F1;
- ``"percentile"``: the ``percentile``-th percentile of the *normal* validation scores, so that
  about ``100 - percentile`` % of normals are flagged. It is the only policy that works when
  validation has no abnormal images; the others refuse such data with an error instead of
  returning an end of the ROC curve.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.evaluation.metrics import f1_max, roc_points

ThresholdPolicy = Literal["balanced", "youden", "f1", "percentile"]
"""Names of the threshold policies of `choose_threshold`."""

THRESHOLD_POLICIES: tuple[str, ...] = get_args(ThresholdPolicy)


def choose_threshold(
    scores: Tensor,
    labels: Tensor,
    policy: ThresholdPolicy = "balanced",
    percentile: float = 95.0,
) -> float:
    """The threshold of ``policy`` on validation ``scores`` and ``labels`` (1 = abnormal).

    Args:
        scores: validation scores.
        labels: validation labels, 0 or 1.
        policy: one of `THRESHOLD_POLICIES` (see the module docstring).
        percentile: for ``"percentile"``: the percentile of normal scores, in ``(0, 100)``.

    Raises:
        ValueError: unknown policy; no normal images; or no abnormal images with a policy other
            than ``"percentile"``.

    Examples:
        >>> s = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], dtype=torch.float64)
        >>> y = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> choose_threshold(s, y, "youden")
        0.7
        >>> round(choose_threshold(s[:3], y[:3], "percentile", percentile=50), 6)
        0.2
    """
    if policy not in THRESHOLD_POLICIES:
        raise InputError(f"threshold policy {policy!r}: choose one of {THRESHOLD_POLICIES}")
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().long()
    normal = scores[labels == 0]
    if normal.numel() == 0:
        raise InputError("choosing a threshold needs normal validation images; none were given")
    if policy == "percentile":
        if not 0.0 < percentile < 100.0:
            raise InputError(f"percentile={percentile}: must be in (0, 100)")
        return float(torch.quantile(normal, percentile / 100.0))
    if int((labels == 1).sum()) == 0:
        raise InputError(
            f"threshold policy {policy!r} needs abnormal validation images and the validation "
            "set has none: use policy 'percentile' (a percentile of the normal scores)"
        )
    if policy == "f1":
        return f1_max(scores, labels)[1]
    fpr, tpr, thresholds = roc_points(scores, labels)
    # The first ROC point (threshold +inf, nothing flagged) is never a usable operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if policy == "youden":
        best = int((tpr - fpr).argmax())
    else:
        best = int(((tpr - (1 - fpr)).abs()).argmin())
    return float(thresholds[best])


def apply_threshold(scores: Tensor, threshold: float | Tensor) -> Tensor:
    """Predicted labels (1 = abnormal) for ``score >= threshold``; ``-1`` everywhere when the
    threshold is NaN (none was chosen).

    Examples:
        >>> apply_threshold(torch.tensor([0.1, 0.5, 0.9]), 0.5).tolist()
        [0, 1, 1]
        >>> apply_threshold(torch.tensor([0.1]), float("nan")).tolist()
        [-1]
    """
    threshold = torch.as_tensor(threshold, dtype=scores.dtype, device=scores.device)
    if bool(threshold.isnan()):
        return torch.full_like(scores, -1, dtype=torch.long)
    return (scores >= threshold).long()
