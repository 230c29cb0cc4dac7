"""The report of one evaluation: metrics overall, at the threshold and per subgroup, the
shortcut audit, and the per-image table that `sagan_ad.training.outputs.EvaluationWriter` writes to
disk."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.evaluation.audit import AuditThresholds, shortcut_audit
from sagan_ad.evaluation.matching import MatchedSubset, MatchingSettings, matched_metrics
from sagan_ad.evaluation.metrics import (
    MIN_CLASS_FOR_INTERVAL,
    SingleClassWarning,
    detection_metrics,
)
from sagan_ad.evaluation.thresholds import apply_threshold

MAX_GROUPS = 10
"""A metadata column with more distinct values than this is not a categorical subgroup."""

NUMERIC_BINS = 5
"""Numeric columns with more than `MAX_GROUPS` values are cut into at most this many bins."""

LABEL_LIKE = frozenset(
    {"class", "classes", "label", "labels", "target", "targets", "finding", "findings"}
    | {"diagnosis", "abnormal", "abnormality", "outcome", "truth", "ground"}
)
"""Name tokens of columns that restate the label (RSNA's ``class``): never subgroups."""

ID_LIKE = frozenset({"id", "ids", "uid", "uuid", "path", "paths", "file", "filename", "filepath"})
"""Name tokens of per-image identifiers (``PatientID``, ``attention_map_path``): never subgroups."""

SPLIT_LIKE = frozenset({"split", "splits", "part", "partition", "fold", "folds", "subset"})
"""Name tokens of columns that record where an image sits in the data split (``part``,
``release_split``): bookkeeping that follows the label by construction, never subgroups."""

MISSING = "missing"
"""The group of images without a value in a subgroup column."""


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
        warnings: the shortcut audit's warnings (`sagan_ad.evaluation.audit`), one sentence each.
        notes: what else the reader must know, one sentence each (for example that the matched
            subset is too small for its AUROC to mean anything).
        matched: the matched subset of the images (`sagan_ad.evaluation.matching`), positions
            in row order; None when it was not built.
    """

    stage: str
    metrics: dict[str, float]
    rows: list[dict[str, object]] = field(default_factory=list)
    scores: Tensor = field(default_factory=lambda: torch.zeros(0))
    labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    matched: MatchedSubset | None = None


def _tokens(column: str) -> set[str]:
    # "SOPInstanceUID" -> {"sopinstance", "uid"}, "patient_age" -> {"patient", "age"}.
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column)
    return {t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t}


def _number(text: str) -> float | None:
    """A numeric metadata value, DICOM ages (``045Y``, ``006M``) in years; None otherwise."""
    age = re.fullmatch(r"(\d{1,3})([DWMY])", text.strip().upper())
    if age:
        per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[age.group(2)]
        return int(age.group(1)) / per_year
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bins(values: list[float | None]) -> list[str]:
    """Numeric values as ``[low,high)`` bins of a round width (at most `NUMERIC_BINS`)."""
    present = [v for v in values if v is not None]
    low, high = min(present), max(present)
    raw = (high - low) / NUMERIC_BINS or 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    width = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / width) * width
    if math.floor((high - start) / width) >= NUMERIC_BINS:
        width *= 2
        start = math.floor(low / width) * width
    # Enough decimals for the width (2.5 needs one more than its magnitude).
    decimals = max(0, -math.floor(math.log10(width)) + (width / magnitude % 1 != 0))
    labels = []
    for v in values:
        if v is None:
            labels.append(MISSING)
            continue
        edge = start + math.floor((v - start) / width + 1e-9) * width
        labels.append(f"[{edge:.{decimals}f},{edge + width:.{decimals}f})")
    return labels


def subgroups(
    metadata: Sequence[dict[str, str]], columns: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """The subgroup of every image for each metadata column that makes subgroups.

    By default (``columns=None``) a column makes subgroups when:

    - its name is not label-like (`LABEL_LIKE` tokens, such as RSNA's ``class``), an
      identifier (`ID_LIKE` tokens, such as ``PatientID`` or ``file``) nor a record of the split
      (`SPLIT_LIKE` tokens, such as ``part``), and no value looks like a path;
    - it has 2 to `MAX_GROUPS` distinct values (categorical, such as the view or the sex), or
      its values are numbers (DICOM ages such as ``045Y`` included) with more distinct values,
      which are then cut into at most `NUMERIC_BINS` bins of a round width (``[40,60)``).

    Per-image values (paths, ids, free text) never make subgroups: one group per image is no
    subgroup analysis, and on a large test set it makes thousands of metrics. With ``columns``
    exactly those columns are used (numbers binned as above); images without a value form the
    group ``missing``.

    Examples:
        >>> meta = [{"view": "AP" if a % 2 else "PA", "class": "Normal", "age": str(a),
        ...          "path": f"/x/{a}.png"} for a in range(20, 86, 5)]
        >>> groups = subgroups(meta)
        >>> sorted(groups), groups["age"][:3]
        (['age', 'view'], ['[20,40)', '[20,40)', '[20,40)'])
    """
    names = (
        sorted({key for entry in metadata for key in entry}) if columns is None else list(columns)
    )
    out: dict[str, list[str]] = {}
    for column in names:
        values = [str(entry.get(column, "")).strip() for entry in metadata]
        present = {v for v in values if v}
        if columns is None:
            tokens = _tokens(column)
            if tokens & (LABEL_LIKE | ID_LIKE | SPLIT_LIKE):
                continue
            if any("/" in v or "\\" in v for v in present) or len(present) < 2:
                continue
        numbers = [_number(v) if v else None for v in values]
        numeric = all(n is not None for n, v in zip(numbers, values, strict=True) if v)
        if len(present) > MAX_GROUPS:
            if numeric:
                out[column] = _bins(numbers)
            elif columns is not None:
                out[column] = [v or MISSING for v in values]
            continue
        out[column] = [v or MISSING for v in values]
    return out


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
    statistics: Tensor | None = None,
    audit: AuditThresholds | None = None,
    subgroup_columns: Sequence[str] | None = None,
    matching: MatchingSettings | None = None,
) -> EvaluationReport:
    """Metrics of the whole set, at ``threshold``, for every metadata subgroup, and the
    shortcut audit.

    Subgroups are chosen by `subgroups` (``subgroup_columns``: which columns; default the
    low-cardinality, non-identifier, non-label columns). Their metrics are keyed
    ``"<metric>/<column>=<value>"`` (``"AUROC/view=AP"``); a subgroup with a single class gets
    NaN for the metrics that need both (one warning for all of them). With ``statistics`` (the
    ``(N, K)`` trivial statistics of each image as decoded, `sagan_ad.image_statistics`), the
    shortcut audit of `sagan_ad.evaluation.audit.shortcut_audit` adds its ``audit/...`` numbers
    and flags (thresholds ``audit``) and its warnings to the report; with ``matching`` too, the
    matched subset of `sagan_ad.evaluation.matching.matched_metrics` adds its ``matched/...``
    numbers, the subset, and a note when it is too small.

    Examples:
        >>> r = build_report("test", torch.tensor([0.1, 0.9, 0.2, 0.8]), torch.tensor([0, 1, 0, 1]),
        ...                  ["a", "b", "c", "d"], [{"view": "AP"}, {"view": "AP"},
        ...                  {"view": "PA"}, {"view": "PA"}], threshold=0.5, bootstrap_resamples=0)
        >>> r.metrics["AUROC/view=PA"], r.rows[1]["prediction"]
        (1.0, 1)
    """
    scores = scores.detach().double().cpu()
    labels = labels.detach().long().cpu()
    bad = [name for name, s in zip(names, scores.tolist(), strict=False) if not math.isfinite(s)]
    if bad:
        raise InputError(
            f"{stage}: {len(bad)} of {len(names)} image(s) have a NaN or infinite score "
            f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}): no metric can rank them; "
            "find why (non-finite weights, an image outside the model's range) and score again"
        )
    metrics = detection_metrics(scores, labels, bootstrap_resamples, seed)
    metrics["threshold"] = threshold
    metrics.update(operating_point(scores, labels, threshold))
    groups = subgroups(metadata, subgroup_columns) if metadata else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        for column, values in groups.items():
            for value in sorted(set(values)):
                keep = torch.tensor([v == value for v in values])
                group = detection_metrics(scores[keep], labels[keep], bootstrap_resamples, seed)
                group.update(operating_point(scores[keep], labels[keep], threshold))
                metrics.update({f"{k}/{column}={value}": v for k, v in group.items()})
    messages: list[str] = _few_images(stage, labels) + _no_threshold(stage, threshold)
    notes: list[str] = []
    matched = None
    if statistics is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            found, messages = shortcut_audit(
                scores, labels, statistics, metrics["AUROC"], groups, audit, stage
            )
            if matching is not None:
                paired_by = subgroups(metadata, matching.columns) if metadata else {}
                paired, matched, note = matched_metrics(
                    scores,
                    labels,
                    statistics,
                    matching,
                    {**groups, **paired_by},
                    bootstrap_resamples,
                    seed,
                )
                found.update(paired)
                notes += [f"{stage}: {note}"] if note else []
        metrics.update(found)
        messages = _few_images(stage, labels) + _no_threshold(stage, threshold) + messages
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
    return EvaluationReport(stage, metrics, rows, scores, labels, messages, notes, matched)


def _few_images(stage: str, labels: Tensor) -> list[str]:
    """A warning when a class has a single image: the AUROC is then the rank of that one image
    among the others, and no interval can say how uncertain it is."""
    counts = {"normal": int((labels == 0).sum()), "abnormal": int((labels == 1).sum())}
    few = [f"{n} {kind}" for kind, n in counts.items() if n == 1]
    if not few or 0 in counts.values():
        return []
    return [
        f"{stage}: the AUROC rests on {' and '.join(few)} image: it is the rank of that one "
        "image among the others, not a measure of the model; the bootstrap interval is left out "
        f"(NaN below {MIN_CLASS_FOR_INTERVAL} images per class). Evaluate on more images of each "
        "class"
    ]


def _no_threshold(stage: str, threshold: float) -> list[str]:
    """A note in a test report scored without a threshold (a model never validated on
    labelled or pseudo-anomaly data): its predictions are undecided."""
    if stage != "test" or not math.isnan(threshold):
        return []
    return [
        f"{stage}: no threshold (the model was never validated): predictions are -1 "
        "(undecided) and the metrics at the threshold are NaN; validate with a validation set "
        "(split.val_fraction above 0, or a val split) to choose one"
    ]
