"""Shortcut audit: does a detector beat what one number per image already achieves?

On real radiographs the classes often differ in things other than the finding: brightness and
contrast (scanner, exposure, a sicker patient imaged lying down), sharpness and fine detail
(detector, reconstruction, resizing), the view, the hospital. A model can score those instead of
the disease and still reach a respectable AUROC. The audit puts the model next to such shortcuts
on the very same evaluation images:

- the AUROC of each **trivial image statistic** of the images as decoded (before any intensity
  normalisation; `sagan_ad.image_statistics.STATISTICS`: mean intensity, contrast, centre-crop
  contrast, vertical and horizontal sharpness, high-frequency energy), each in the direction
  that separates the classes better (that direction is chosen on the evaluation labels, so the
  trivial AUROC is an optimistic floor);
- the AUROC of each low-cardinality **metadata column** (view, sex, site, ...), scoring every
  image by the share of abnormal images in its group (again optimistic: the shares are read off
  the evaluation labels);
- the **best** of these, named, and the model's **margin** over it;
- the **correlation** (Pearson and Spearman) of the model's score with the mean intensity;
- for each metadata subgroup column, the **share** of each group among the normal and among the
  abnormal images, and the gap between the two distributions (total variation distance): with a
  gap ``d`` the group alone separates the classes with an AUROC of up to ``0.5 + d / 2``.

`shortcut_audit` returns the numbers (keys under ``audit/``) and flags, and the warnings to show
when the model does not beat the best trivial statistic by `AuditThresholds.margin`, when its
score follows the mean intensity (``|r| >= max_intensity_corr``), or when a subgroup is
distributed differently among normals and abnormals (gap ``>= max_share_gap``); `best_trivial`
reads the best shortcut back from those numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.evaluation.metrics import auroc
from sagan_ad.image_statistics import STATISTICS, describe_statistic
from sagan_ad.settings import from_mapping

AUDIT_DOCS = "docs/evaluation.md, 'Shortcut audit'"
_AUROC = "audit/AUROC_"


class ShortcutWarning(UserWarning):
    """The shortcut audit found that the model may score a shortcut rather than the finding."""


@dataclass(frozen=True)
class AuditThresholds:
    """When the shortcut audit warns.

    Attributes:
        margin: the model's AUROC must exceed the best trivial statistic's by at least this
            much. An AUROC within 0.05 of what one number per image achieves has not shown that
            the model learned more than that number; 0.05 is also about the smallest difference
            a test set of a few hundred images resolves (the 95% interval of an AUROC near 0.75
            is about ±0.05 with 600 images and ±0.08 with 150).
        max_intensity_corr: warn when ``|Pearson|`` or ``|Spearman|`` of the score with the mean
            intensity reaches this: at 0.7 the brightness alone explains about half of the
            score's variance (``r**2 = 0.49``).
        max_share_gap: warn when a subgroup column's distribution differs between normals and
            abnormals by this total variation distance: at 0.25 the group alone separates the
            classes with an AUROC of up to 0.625 (two groups), a confound large enough to move
            the metrics; smaller gaps arise by chance in sets of a few dozen images per class.

    Examples:
        >>> AuditThresholds.parse({"margin": 0.1}).margin
        0.1
    """

    margin: float = 0.05
    max_intensity_corr: float = 0.7
    max_share_gap: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 0.5:
            raise InputError(f"shortcut_audit.margin={self.margin}: must be in [0, 0.5)")
        if not 0.0 < self.max_intensity_corr <= 1.0:
            raise InputError(
                f"shortcut_audit.max_intensity_corr={self.max_intensity_corr}: must be in (0, 1]"
            )
        if not 0.0 < self.max_share_gap <= 1.0:
            raise InputError(
                f"shortcut_audit.max_share_gap={self.max_share_gap}: must be in (0, 1]"
            )

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | AuditThresholds | None) -> AuditThresholds:
        """Thresholds from a mapping of the fields to change (None: the defaults)."""
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        return from_mapping(cls, spec, "shortcut_audit", convert=float)


def trivial_auroc(values: Tensor, labels: Tensor) -> tuple[float, float]:
    """AUROC of a statistic in its better direction, and that direction (+1: higher values are
    abnormal, -1: lower values are abnormal); NaN and 0 with a single class.

    Examples:
        >>> trivial_auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1]))
        (1.0, -1.0)
    """
    value = auroc(values, labels)
    if math.isnan(value):
        return math.nan, 0.0
    return (value, 1.0) if value >= 0.5 else (1.0 - value, -1.0)


def _ranks(values: Tensor) -> Tensor:
    # Average ranks: tied values share the mean of the ranks they occupy.
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    return (last - (counts.double() - 1) / 2)[inverse]


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation; NaN when either is constant or fewer than two values are given.

    Examples:
        >>> pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])) > 0.98
        True
    """
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else math.nan


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation (Pearson of average ranks).

    Examples:
        >>> round(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 70.0])), 6)
        1.0
    """
    return pearson(_ranks(a.double().flatten()), _ranks(b.double().flatten()))


def group_shares(groups: Sequence[str], labels: Tensor) -> dict[str, tuple[float, float]]:
    """Share of each group among the normal and among the abnormal images.

    Examples:
        >>> group_shares(["AP", "AP", "PA", "AP"], torch.tensor([0, 0, 1, 1]))
        {'AP': (1.0, 0.5), 'PA': (0.0, 0.5)}
    """
    labels = labels.long().flatten().tolist()
    normals = sum(1 for label in labels if label == 0)
    abnormals = sum(1 for label in labels if label == 1)
    shares = {}
    for group in sorted(set(groups)):
        n = sum(1 for g, label in zip(groups, labels, strict=True) if g == group and label == 0)
        a = sum(1 for g, label in zip(groups, labels, strict=True) if g == group and label == 1)
        shares[group] = (
            n / normals if normals else math.nan,
            a / abnormals if abnormals else math.nan,
        )
    return shares


def group_auroc(groups: Sequence[str], labels: Tensor) -> float:
    """AUROC of a metadata column as a score: each image scored by the share of abnormal images
    in its group, which orders the groups in the way that separates the classes best (so at
    least 0.5); NaN with a single class.

    Examples:
        >>> group_auroc(["AP", "AP", "PA", "PA"], torch.tensor([0, 0, 1, 1]))
        1.0
        >>> group_auroc(["M", "F", "M", "F"], torch.tensor([0, 0, 1, 1]))
        0.5
    """
    labels = labels.long().flatten()
    rate = {}
    for group in set(groups):
        members = torch.tensor([g == group for g in groups])
        rate[group] = float(labels[members].double().mean())
    return auroc(torch.tensor([rate[g] for g in groups], dtype=torch.float64), labels)


def statistic_names(count: int) -> tuple[str, ...]:
    """The names of the first ``count`` columns of a statistics tensor (`STATISTICS`)."""
    if not 1 <= count <= len(STATISTICS):
        raise InputError(
            f"image statistics have {count} column(s): the audit knows {len(STATISTICS)} "
            f"({', '.join(STATISTICS)}), and takes the first of them in that order; compute "
            "them with sagan_ad.image_statistics.image_statistics"
        )
    return STATISTICS[:count]


def best_trivial(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The best shortcut of an audit's ``metrics`` and its AUROC: a statistic's name
    (``"sharpness_vertical"``) or ``"metadata/<column>"``; None when no shortcut has an AUROC.

    Examples:
        >>> best_trivial({"audit/AUROC_mean_intensity": 0.6, "audit/AUROC_contrast": 0.7,
        ...               "audit/AUROC_metadata/view": 0.55, "audit/AUROC_best_trivial": 0.7})
        ('contrast', 0.7)
    """
    found = {}
    for key, value in metrics.items():
        if not key.startswith(_AUROC) or math.isnan(value):
            continue
        name = key.removeprefix(_AUROC)
        if name in STATISTICS or name.startswith("metadata/"):
            found[name] = value
    if not found:
        return None
    # Ties go to the first statistic in `STATISTICS` order, then to metadata by name.
    order = {name: i for i, name in enumerate(STATISTICS)}
    name = max(sorted(found, key=lambda n: (order.get(n, len(order)), n)), key=found.get)
    return name, found[name]


def describe_trivial(name: str, metrics: Mapping[str, float]) -> str:
    """A shortcut of `best_trivial` in words, with its direction.

    Examples:
        >>> describe_trivial("sharpness_vertical", {"audit/sharpness_vertical_direction": -1.0})
        'vertical sharpness (blurrier = abnormal)'
        >>> describe_trivial("metadata/view", {})
        "metadata column 'view' (its groups' share of abnormal images)"
    """
    if name.startswith("metadata/"):
        column = name.removeprefix("metadata/")
        return f"metadata column {column!r} (its groups' share of abnormal images)"
    return describe_statistic(name, metrics.get(f"audit/{name}_direction", 0.0))


def shortcut_audit(
    scores: Tensor,
    labels: Tensor,
    statistics: Tensor,
    model_auroc: float,
    groups: Mapping[str, Sequence[str]] | None = None,
    thresholds: AuditThresholds | None = None,
    stage: str = "test",
) -> tuple[dict[str, float], list[str]]:
    """The audit's numbers (keys ``audit/...``) and its warnings, one sentence each.

    Args:
        scores: the model's scores ``(N,)``, higher = more abnormal.
        labels: 1 abnormal, 0 normal.
        statistics: ``(N, K)`` trivial statistics of each image as decoded, the columns of
            `sagan_ad.image_statistics.STATISTICS` (or its first ``K``, mean intensity and
            contrast at least), from `sagan_ad.image_statistics.image_statistics`.
        model_auroc: the model's AUROC on these images.
        groups: subgroup column name -> the group of each image.
        thresholds: when to warn (default `AuditThresholds`).
        stage: named in the warnings.

    Keys: for each statistic ``<s>`` of `STATISTICS`, ``audit/AUROC_<s>`` and
    ``audit/<s>_direction`` (+1: higher values are abnormal, -1: lower values);
    ``audit/AUROC_metadata/<column>`` for each subgroup column; ``audit/AUROC_best_trivial``
    (the best of them, named by `best_trivial`), ``audit/AUROC_margin`` (the model's AUROC
    minus the best trivial one), ``audit/intensity_corr_pearson``,
    ``audit/intensity_corr_spearman``, per subgroup ``audit/share_normal/<column>=<group>``,
    ``audit/share_abnormal/<column>=<group>`` and ``audit/share_gap/<column>``, and the flags
    (1 or 0) ``audit/flag_below_trivial``, ``audit/flag_intensity_correlated``,
    ``audit/flag_subgroup_confound`` and ``audit/shortcut_warning`` (any of them).

    Examples:
        >>> labels = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> stats = torch.full((6, 6), 0.5)
        >>> stats[:, 3] = torch.tensor([0.9, 0.8, 0.85, 0.3, 0.2, 0.25])  # blurrier abnormals
        >>> sharpness_meter = -stats[:, 3]
        >>> metrics, warnings = shortcut_audit(sharpness_meter, labels, stats, model_auroc=1.0)
        >>> best_trivial(metrics), metrics["audit/flag_below_trivial"]
        (('sharpness_vertical', 1.0), 1.0)
        >>> warnings[0].split("does not beat the ")[1].split(",")[0]
        'vertical sharpness (blurrier = abnormal) of the decoded images'
    """
    thresholds = thresholds or AuditThresholds()
    scores = scores.detach().double().cpu().flatten()
    labels = labels.detach().long().cpu().flatten()
    statistics = statistics.detach().double().cpu()
    metrics: dict[str, float] = {}
    for column, name in enumerate(statistic_names(statistics.shape[1])):
        value, direction = trivial_auroc(statistics[:, column], labels)
        metrics[f"{_AUROC}{name}"] = value
        metrics[f"audit/{name}_direction"] = direction
    for column, values in (groups or {}).items():
        metrics[f"{_AUROC}metadata/{column}"] = group_auroc(list(values), labels)
    best = best_trivial(metrics)
    best_auroc = math.nan if best is None else best[1]
    r_pearson = pearson(scores, statistics[:, 0])
    r_spearman = spearman(scores, statistics[:, 0])
    metrics.update(
        {
            "audit/AUROC_best_trivial": best_auroc,
            "audit/AUROC_margin": model_auroc - best_auroc,
            "audit/intensity_corr_pearson": r_pearson,
            "audit/intensity_corr_spearman": r_spearman,
        }
    )
    messages = []
    below = best is not None and not model_auroc >= best_auroc + thresholds.margin
    if below:
        of_films = "" if best[0].startswith("metadata/") else " of the decoded images"
        messages.append(
            f"the model's AUROC {model_auroc:.3f} does not beat the "
            f"{describe_trivial(best[0], metrics)}{of_films}, AUROC {best_auroc:.3f} "
            f"({_AUROC}{best[0]}), by the margin {thresholds.margin:g}"
        )
    correlations = [abs(r) for r in (r_pearson, r_spearman) if not math.isnan(r)]
    correlated = bool(correlations) and max(correlations) >= thresholds.max_intensity_corr
    if correlated:
        messages.append(
            f"the score follows the mean intensity of the decoded images (Pearson "
            f"{r_pearson:+.2f}, Spearman {r_spearman:+.2f}; "
            f"limit ±{thresholds.max_intensity_corr:g})"
        )
    confounded = []
    for column, values in (groups or {}).items():
        shares = group_shares(list(values), labels)
        for group, (normal, abnormal) in shares.items():
            metrics[f"audit/share_normal/{column}={group}"] = normal
            metrics[f"audit/share_abnormal/{column}={group}"] = abnormal
        gap = 0.5 * sum(abs(a - n) for n, a in shares.values())
        metrics[f"audit/share_gap/{column}"] = gap
        if gap >= thresholds.max_share_gap:
            detail = ", ".join(f"{g} {n:.0%} / {a:.0%}" for g, (n, a) in shares.items())
            confounded.append(f"{column} (normals / abnormals: {detail})")
    if confounded:
        messages.append(
            "subgroups are distributed differently among normal and abnormal images, so the "
            f"group alone separates them in part (gap limit {thresholds.max_share_gap:g}): "
            + "; ".join(confounded)
        )
    metrics["audit/flag_below_trivial"] = float(below)
    metrics["audit/flag_intensity_correlated"] = float(correlated)
    metrics["audit/flag_subgroup_confound"] = float(bool(confounded))
    metrics["audit/shortcut_warning"] = float(bool(messages))
    warnings = [
        f"shortcut audit ({stage}): {message}; the model may detect this instead of the "
        f"finding (see {AUDIT_DOCS})"
        for message in messages
    ]
    return metrics, warnings
