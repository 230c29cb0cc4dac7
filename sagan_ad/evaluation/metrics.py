"""Image-level detection metrics: AUROC with a bootstrap interval, AP, F1-max, operating points.

All functions take scores (higher = more abnormal) and labels (1 = abnormal, 0 = normal). A
metric that needs both classes returns NaN, with a `SingleClassWarning`, when the labels hold one
class only (an all-normal validation set, a batch of one class): training and checkpointing go on,
and the missing number is visible in the logs instead of a misleading 0.5 or 0.

`ImageMetrics` is the torchmetrics version used by `SAGAN` for validation and test; its states are
concatenated across processes, so the numbers are the same under DDP as on one device.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torchmetrics import Metric

from sagan_ad.errors import InputError

FIXED_LEVELS = (0.90, 0.95)
"""The specificity and sensitivity levels of `detection_metrics`' operating points."""


class SingleClassWarning(UserWarning):
    """A metric that needs normal and abnormal images got only one class; it returns NaN."""


MIN_CLASS_FOR_INTERVAL = 2
"""Images of each class the bootstrap interval of the AUROC needs (NaN below)."""


def _check(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().long()
    if scores.shape != labels.shape:
        raise InputError(f"{scores.numel()} scores but {labels.numel()} labels")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise InputError("labels must be 0 (normal) or 1 (abnormal)")
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        # A NaN has no rank: AUROC and AP would each place it somewhere of their own choosing.
        raise InputError(
            f"{bad} of {scores.numel()} scores are NaN or infinite: no metric can rank them; "
            "find why (a model with non-finite weights, an image outside the model's range) "
            "and score again"
        )
    return scores, labels


def _has_both_classes(labels: Tensor, what: str) -> bool:
    positives = int(labels.sum())
    if 0 < positives < labels.numel():
        return True
    kind = "no abnormal" if positives == 0 else "no normal"
    warnings.warn(f"{what} is undefined with {kind} images: NaN", SingleClassWarning, stacklevel=3)
    return False


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: the probability that an abnormal image outscores a normal one,
    ties counting one half (the Mann-Whitney statistic).

    Returns NaN with a `SingleClassWarning` when only one class is present.

    Examples:
        >>> auroc(torch.tensor([0.1, 0.4, 0.4, 0.9]), torch.tensor([0, 0, 1, 1]))
        0.875
    """
    scores, labels = _check(scores, labels)
    if not _has_both_classes(labels, "AUROC"):
        return math.nan
    normal = scores[labels == 0].sort().values
    abnormal = scores[labels == 1]
    below = torch.searchsorted(normal, abnormal, right=False)
    below_or_tied = torch.searchsorted(normal, abnormal, right=True)
    wins = below.double().sum() + 0.5 * (below_or_tied - below).double().sum()
    return float(wins / (normal.numel() * abnormal.numel()))


def bootstrap_auroc_ci(
    scores: Tensor,
    labels: Tensor,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUROC.

    Normals and abnormals are resampled separately (a stratified bootstrap), so every resample
    keeps both classes at their observed counts. Each resample's AUROC comes from weighted counts
    over the normals sorted once, ``O(num_resamples * N)`` time and memory.

    Args:
        scores: image scores.
        labels: 0/1 labels.
        num_resamples: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling (same seed, same interval).

    Returns:
        ``(low, high)``; ``(nan, nan)`` with a `SingleClassWarning` when only one class is present.

    Examples:
        >>> s, y = torch.arange(20.0), (torch.arange(20) >= 8).long()
        >>> bootstrap_auroc_ci(s, y)
        (1.0, 1.0)
    """
    scores, labels = _check(scores, labels)
    if not 0.0 < level < 1.0:
        raise InputError(f"level={level}: must be in (0, 1)")
    if num_resamples < 1:
        raise InputError(f"num_resamples={num_resamples}: must be >= 1")
    if not _has_both_classes(labels, "the AUROC interval"):
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    normal = scores[labels == 0].sort().values
    abnormal = scores[labels == 1]
    n, m = normal.numel(), abnormal.numel()

    def resample_counts(size: int) -> Tensor:
        draws = torch.randint(0, size, (num_resamples, size), generator=generator)
        return torch.zeros(num_resamples, size, dtype=torch.float64).scatter_add_(
            1, draws, torch.ones(num_resamples, size, dtype=torch.float64)
        )

    normal_weights, abnormal_weights = resample_counts(n), resample_counts(m)
    # cumulative[b, k] = resampled normals among the k lowest normal scores.
    cumulative = torch.nn.functional.pad(normal_weights.cumsum(dim=1), (1, 0))
    below = torch.searchsorted(normal, abnormal, right=False)
    below_or_tied = torch.searchsorted(normal, abnormal, right=True)
    wins = 0.5 * (cumulative[:, below] + cumulative[:, below_or_tied])
    values = (abnormal_weights * wins).sum(dim=1) / (n * m)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision (area under the precision-recall curve, step-wise).

    NaN with a `SingleClassWarning` without abnormal images (precision is then meaningless); with
    only abnormal images it is 1.

    Examples:
        >>> average_precision(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1]))
        1.0
    """
    scores, labels = _check(scores, labels)
    if int(labels.sum()) == 0:
        warnings.warn(
            "AP is undefined with no abnormal images: NaN", SingleClassWarning, stacklevel=2
        )
        return math.nan
    _, tps, fps = curve_counts(scores, labels)
    recall_steps = torch.diff(tps, prepend=torch.zeros(1, dtype=torch.float64)) / tps[-1]
    return float((recall_steps * tps / (tps + fps)).sum())


def f1_max(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """The best F1 over all thresholds, and the threshold that reaches it (``score >= t``).

    Examples:
        >>> s = torch.tensor([0.1, 0.2, 0.8, 0.9], dtype=torch.float64)
        >>> f1_max(s, torch.tensor([0, 0, 1, 1]))
        (1.0, 0.8)
    """
    scores, labels = _check(scores, labels)
    if int(labels.sum()) == 0:
        warnings.warn(
            "F1 is undefined with no abnormal images: NaN", SingleClassWarning, stacklevel=2
        )
        return math.nan, math.nan
    thresholds, tps, fps = curve_counts(scores, labels)
    f1 = 2 * tps / (tps + fps + tps[-1])
    best = int(f1.argmax())
    return float(f1[best]), float(thresholds[best])


def curve_counts(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every distinct score as a threshold (decreasing), with the true and false positives of
    ``score >= threshold``, all float64 and exact (thresholds are the scores themselves).

    Examples:
        >>> s = torch.tensor([0.2, 0.8, 0.8], dtype=torch.float64)
        >>> t, tp, fp = curve_counts(s, torch.tensor([0, 1, 0]))
        >>> t.tolist(), tp.tolist(), fp.tolist()
        ([0.8, 0.2], [1.0, 1.0], [1.0, 2.0])
    """
    scores, labels = _check(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    ordered, positives = scores[order], labels[order].double()
    # The last position of each group of tied scores closes one ROC point.
    ends = torch.cat(
        [torch.nonzero(ordered[1:] != ordered[:-1]).flatten(), torch.tensor([len(ordered) - 1])]
    )
    tps = positives.cumsum(0)[ends]
    return ordered[ends], tps, (ends + 1).double() - tps


def roc_points(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ROC curve ``(fpr, tpr, thresholds)``, thresholds decreasing, predicted abnormal when
    ``score >= threshold``; the first point (0, 0) has threshold ``+inf``.

    Examples:
        >>> fpr, tpr, t = roc_points(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    thresholds, tps, fps = curve_counts(scores, labels)
    zero = torch.zeros(1, dtype=torch.float64)
    fpr = torch.cat([zero, fps / fps[-1]])
    tpr = torch.cat([zero, tps / tps[-1]])
    return fpr, tpr, torch.cat([torch.full((1,), math.inf, dtype=torch.float64), thresholds])


def _best_rate_given(
    best: str, given: str, minimum: float, scores: Tensor, labels: Tensor
) -> float:
    """Highest ``best`` rate over the ROC thresholds whose ``given`` rate is >= ``minimum``."""
    scores, labels = _check(scores, labels)
    if not _has_both_classes(labels, f"{best} at {given} {minimum}"):
        return math.nan
    fpr, tpr, _ = roc_points(scores, labels)
    rates = {"sensitivity": tpr, "specificity": 1 - fpr}
    return float(rates[best][rates[given] >= minimum - 1e-12].max())


def sensitivity_at_specificity(scores: Tensor, labels: Tensor, specificity: float) -> float:
    """Highest sensitivity among thresholds whose specificity is at least ``specificity``.

    Examples:
        >>> s, y = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 0, 1, 1])
        >>> sensitivity_at_specificity(s, y, 0.9)
        1.0
    """
    return _best_rate_given("sensitivity", "specificity", specificity, scores, labels)


def specificity_at_sensitivity(scores: Tensor, labels: Tensor, sensitivity: float) -> float:
    """Highest specificity among thresholds whose sensitivity is at least ``sensitivity``.

    Examples:
        >>> s, y = torch.tensor([0.1, 0.3, 0.2, 0.4]), torch.tensor([0, 0, 1, 1])
        >>> specificity_at_sensitivity(s, y, 0.9)
        0.5
    """
    return _best_rate_given("specificity", "sensitivity", sensitivity, scores, labels)


def detection_metrics(
    scores: Tensor,
    labels: Tensor,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Every image-level metric of an evaluation, keyed as logged (``AUROC``, ``AUROC_CI_low``...).

    Keys: ``AUROC``, ``AUROC_CI_low`` / ``AUROC_CI_high`` (95% stratified bootstrap, seeded),
    ``AP``, ``F1_max``, ``sensitivity@specificity=0.90`` / ``0.95``,
    ``specificity@sensitivity=0.90`` / ``0.95``, and the counts ``num_normal`` / ``num_abnormal``.
    Values that need a missing class are NaN (see the module docstring).

    Examples:
        >>> m = detection_metrics(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1]))
        >>> m["AUROC"], m["F1_max"], m["num_abnormal"]
        (1.0, 1.0, 2.0)
    """
    scores, labels = _check(scores, labels)
    with warnings.catch_warnings():
        # One warning for the whole set rather than one per metric.
        warnings.simplefilter("ignore", SingleClassWarning)
        metrics = {
            "AUROC": auroc(scores, labels),
            "AP": average_precision(scores, labels),
            "F1_max": f1_max(scores, labels)[0],
        }
        # A class of one image resamples to itself: the interval would show only the other
        # class's spread, as if the AUROC were known that well.
        smallest = min(int((labels == 0).sum()), int((labels == 1).sum()))
        low, high = (
            bootstrap_auroc_ci(scores, labels, num_resamples=num_resamples, seed=seed)
            if num_resamples and smallest >= MIN_CLASS_FOR_INTERVAL
            else (math.nan, math.nan)
        )
        metrics.update(AUROC_CI_low=low, AUROC_CI_high=high)
        for level in FIXED_LEVELS:
            metrics[f"sensitivity@specificity={level:.2f}"] = sensitivity_at_specificity(
                scores, labels, level
            )
            metrics[f"specificity@sensitivity={level:.2f}"] = specificity_at_sensitivity(
                scores, labels, level
            )
    metrics["num_normal"] = float((labels == 0).sum())
    metrics["num_abnormal"] = float((labels == 1).sum())
    _has_both_classes(labels, "AUROC, sensitivity and specificity")
    return metrics


class ImageMetrics(Metric):
    """Collects the scores, labels and data set indices of an evaluation, across processes, and
    each image's intensity statistics when given (for the shortcut audit).

    `compute` returns the indices, scores and labels (and ``"statistics"`` when every update
    had them) of every evaluated image, sorted by index with duplicates removed (a
    `DistributedSampler` pads the last batch by repeating images), so callers compute
    `detection_metrics`, thresholds and per-subgroup numbers on the whole set.

    Examples:
        >>> metric = ImageMetrics()
        >>> metric.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), torch.tensor([1, 0]))
        >>> metric.update(torch.tensor([0.9]), torch.tensor([1]), torch.tensor([1]))
        >>> metric.compute()["index"].tolist()
        [0, 1]
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("statistics", default=[], dist_reduce_fx="cat")

    def update(
        self, scores: Tensor, labels: Tensor, indices: Tensor, statistics: Tensor | None = None
    ) -> None:
        self.scores.append(scores.detach().flatten().double())
        self.labels.append(labels.detach().flatten().long())
        self.indices.append(indices.detach().flatten().long())
        if statistics is not None:
            self.statistics.append(statistics.detach().flatten(1).float())

    def compute(self) -> dict[str, Tensor]:
        def joined(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
            if isinstance(state, Tensor):
                return state
            return torch.cat(state) if state else torch.zeros(0, dtype=dtype, device=self.device)

        indices = joined(self.indices, torch.long)
        scores = joined(self.scores, torch.float64)
        labels = joined(self.labels, torch.long)
        unique, inverse = torch.unique(indices, return_inverse=True)
        first = torch.full_like(unique, indices.numel()).scatter_reduce_(
            0, inverse, torch.arange(indices.numel(), device=indices.device), reduce="amin"
        )
        out = {"index": unique, "score": scores[first], "label": labels[first]}
        statistics = joined(self.statistics, torch.float32)
        if len(statistics) == len(indices) and len(indices):
            out["statistics"] = statistics[first]
        elif len(statistics):
            warnings.warn(
                f"intensity statistics came with {len(statistics)} of {len(indices)} evaluated "
                "images: the shortcut audit is skipped (give every evaluation batch its "
                "'statistics', see sagan_ad.data.LabelledImages)",
                stacklevel=2,
            )
        return out
