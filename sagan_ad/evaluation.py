"""The report of one evaluation: metrics overall, at the threshold and per subgroup, and the
per-image table that `sagan_ad.outputs.EvaluationWriter` writes to disk."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sagan_ad.metrics import SingleClassWarning, detection_metrics
from sagan_ad.thresholds import apply_threshold


@dataclass
class EvaluationReport:
    """Everything one validation or test produced.

    Attributes:
        stage: ``"val"`` or ``"test"``.
        metrics: flat metric names (without the stage prefix) to values; NaN where undefined.
        rows: one dictionary per image: ``name``, ``score``, ``label``, ``prediction``,
            ``threshold`` and the image's metadata columns.
        scores: the scores, in row order.
        labels: the labels, in row order.
    """

    stage: str
    metrics: dict[str, float]
    rows: list[dict[str, object]] = field(default_factory=list)
    scores: Tensor = field(default_factory=lambda: torch.zeros(0))
    labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def operating_point(scores: Tensor, labels: Tensor, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 and accuracy of ``score >= threshold``.

    Examples:
        >>> m = operating_point(torch.tensor([0.1, 0.6, 0.4, 0.9]), torch.tensor([0, 0, 1, 1]), 0.5)
        >>> m["sensitivity@threshold"], m["specificity@threshold"]
        (0.5, 0.5)
    """
    if math.isnan(threshold):
        return {}
    predicted = apply_threshold(scores, threshold).bool()
    truth = labels.bool()
    tp = float((predicted & truth).sum())
    fp = float((predicted & ~truth).sum())
    fn = float((~predicted & truth).sum())
    tn = float((~predicted & ~truth).sum())

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    return {
        "sensitivity@threshold": ratio(tp, tp + fn),
        "specificity@threshold": ratio(tn, tn + fp),
        "precision@threshold": ratio(tp, tp + fp),
        "F1@threshold": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy@threshold": ratio(tp + tn, tp + tn + fp + fn),
    }


def build_report(
    stage: str,
    scores: Tensor,
    labels: Tensor,
    names: list[str],
    metadata: list[dict[str, str]] | None = None,
    threshold: float = math.nan,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> EvaluationReport:
    """Metrics of the whole set, at ``threshold``, and for every metadata subgroup.

    Subgroup metrics are keyed ``"<metric>/<column>=<value>"`` (``"AUROC/view=AP"``); a subgroup
    with a single class gets NaN for the metrics that need both (one warning for all of them).

    Examples:
        >>> r = build_report("test", torch.tensor([0.1, 0.9, 0.2, 0.8]), torch.tensor([0, 1, 0, 1]),
        ...                  ["a", "b", "c", "d"], [{"view": "AP"}, {"view": "AP"},
        ...                  {"view": "PA"}, {"view": "PA"}], threshold=0.5, bootstrap_resamples=0)
        >>> r.metrics["AUROC/view=PA"], r.rows[1]["prediction"]
        (1.0, 1)
    """
    scores = scores.detach().double().cpu()
    labels = labels.detach().long().cpu()
    metrics = detection_metrics(scores, labels, bootstrap_resamples, seed)
    metrics["threshold"] = threshold
    metrics.update(operating_point(scores, labels, threshold))
    if metadata:
        columns = sorted({key for entry in metadata for key in entry})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            for column in columns:
                values = [str(entry.get(column, "")) for entry in metadata]
                for value in sorted(set(values)):
                    keep = torch.tensor([v == value for v in values])
                    group = detection_metrics(scores[keep], labels[keep], bootstrap_resamples, seed)
                    group.update(operating_point(scores[keep], labels[keep], threshold))
                    metrics.update({f"{k}/{column}={value}": v for k, v in group.items()})
    predictions = apply_threshold(scores, threshold).tolist()
    rows = []
    for i, name in enumerate(names):
        row: dict[str, object] = {
            "name": name,
            "score": float(scores[i]),
            "label": int(labels[i]),
            "prediction": predictions[i],
            "threshold": threshold,
        }
        if metadata:
            row.update(metadata[i])
        rows.append(row)
    return EvaluationReport(stage, metrics, rows, scores, labels)
