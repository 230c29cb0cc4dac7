"""The matched subset: abnormal and normal films that no trivial statistic tells apart.

The shortcut audit (`sagan_ad.evaluation.audit`) says how well one number per image separates
the classes; the matched subset takes that cue away and asks what is left. Each abnormal image
is paired with a different normal image whose trivial statistics
(`sagan_ad.image_statistics.STATISTICS`) all lie within ``tolerance`` of its own, after z-scoring
each statistic over the evaluated set (optionally also in the same group of some metadata
columns, such as the view). On the pairs, every statistic scores an AUROC near 0.5, so a model's
AUROC there measures what it sees beyond brightness, contrast and sharpness.

The algorithm, deterministic for the same statistics and labels (no random draw):

1. z-score each statistic over all evaluated images (a constant statistic is left out);
2. the distance of an abnormal image ``a`` and a normal image ``n`` is the largest absolute
   difference of their z-scores, ``max_k |z_ak - z_nk|`` (a pair must be close in *every*
   statistic); pairs farther than ``tolerance``, or in different groups of a ``columns``
   metadata column, are not allowed;
3. among the allowed pairs, a maximum-cardinality matching (each image in at most one pair) with
   the smallest total distance among those of maximum size, found as a linear assignment
   (`scipy.optimize.linear_sum_assignment`) whose disallowed pairs cost more than any complete
   matching of allowed ones.

It is the largest subset of pairs within the tolerance. It is reported only when it has at least
``min_pairs`` pairs: the 95% interval of an AUROC near 0.75 on 20 + 20 images is about ±0.15, so
a smaller subset cannot tell a detector from chance, and its AUROC is withheld (NaN) with a note
that says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from sagan_ad.errors import InputError
from sagan_ad.evaluation.audit import group_auroc, statistic_names, trivial_auroc
from sagan_ad.evaluation.metrics import auroc, bootstrap_auroc_ci
from sagan_ad.settings import from_mapping


@dataclass(frozen=True)
class MatchingSettings:
    """How the matched subset of a test is built.

    Attributes:
        tolerance: the largest difference, in standard deviations of the evaluated set, allowed
            between a pair's values of every trivial statistic. At 0.5 the pairs' statistics
            score AUROCs of about 0.45-0.55 on the real pediatric set, where sharpness alone
            separates the whole test set at 0.92 (docs/results.md); a wider tolerance keeps
            more pairs and more of the shortcut.
        min_pairs: below this many pairs the subset's AUROC is withheld (see the module).
        columns: metadata columns a pair must share exactly (for example ``["view_position"]``);
            default none.

    Examples:
        >>> MatchingSettings.parse({"tolerance": 0.25}).tolerance
        0.25
    """

    tolerance: float = 0.5
    min_pairs: int = 20
    columns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not (isinstance(self.tolerance, int | float) and self.tolerance > 0):
            raise InputError(
                f"matched_subset.tolerance={self.tolerance!r}: must be a number > 0 (standard "
                "deviations)"
            )
        if isinstance(self.min_pairs, bool) or not (
            isinstance(self.min_pairs, int) and self.min_pairs >= 2
        ):
            raise InputError(f"matched_subset.min_pairs={self.min_pairs!r}: must be a whole >= 2")
        if isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns):
            raise InputError(
                f"matched_subset.columns={self.columns!r}: must be a list of metadata column names"
            )
        object.__setattr__(self, "columns", tuple(self.columns))

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | MatchingSettings | None) -> MatchingSettings:
        """Settings from a mapping of the fields to change (None: the defaults)."""
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        return from_mapping(cls, spec, "matched_subset")


@dataclass(frozen=True)
class MatchedSubset:
    """The pairs of a matched subset: positions in the evaluated set, abnormal and normal image
    of each pair at the same position of the two tensors, ordered by the abnormal image."""

    abnormal: Tensor
    normal: Tensor

    @property
    def pairs(self) -> int:
        """The number of pairs."""
        return len(self.abnormal)

    @property
    def indices(self) -> Tensor:
        """The positions of every image of the subset, sorted."""
        return torch.cat([self.abnormal, self.normal]).sort().values

    def split(self, names: Sequence[str]) -> dict[str, dict[str, list[str]]]:
        """The subset as the ``test`` entry of a Med-AD ``data.json``, from the set's ``names``.

        Examples:
            >>> pairs = MatchedSubset(torch.tensor([2]), torch.tensor([0]))
            >>> pairs.split(["n0", "n1", "a2"])
            {'test': {'0': ['n0'], '1': ['a2']}}
        """
        return {
            "test": {
                "0": [names[i] for i in sorted(self.normal.tolist())],
                "1": [names[i] for i in sorted(self.abnormal.tolist())],
            }
        }


def match_pairs(
    statistics: Tensor,
    labels: Tensor,
    tolerance: float = 0.5,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> MatchedSubset:
    """The matched subset of an evaluated set (the algorithm of the module docstring).

    Args:
        statistics: ``(N, K)`` trivial statistics of the images
            (`sagan_ad.image_statistics.image_statistics`).
        labels: 1 abnormal, 0 normal.
        tolerance: the largest allowed difference of every z-scored statistic within a pair.
        groups: metadata column -> each image's group; a pair shares the group of every column.

    Examples:
        >>> stats = torch.tensor([[0.1], [0.5], [0.9], [0.12], [0.52], [0.3]])
        >>> labels = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> pairs = match_pairs(stats, labels, tolerance=0.2)
        >>> pairs.abnormal.tolist(), pairs.normal.tolist()
        ([3, 4], [0, 1])
    """
    statistics = statistics.detach().double().cpu()
    labels = labels.detach().long().cpu().flatten()
    abnormal = torch.nonzero(labels == 1).flatten()
    normal = torch.nonzero(labels == 0).flatten()
    empty = torch.zeros(0, dtype=torch.long)
    if not len(abnormal) or not len(normal):
        return MatchedSubset(empty, empty)
    spread = statistics.std(0, unbiased=False)
    varying = spread > 0
    z = (statistics[:, varying] - statistics[:, varying].mean(0)) / spread[varying]
    if z.shape[1]:
        distance = (z[abnormal, None, :] - z[None, normal, :]).abs().amax(-1)
    else:
        distance = torch.zeros(len(abnormal), len(normal), dtype=torch.float64)
    allowed = distance <= tolerance
    for values in (groups or {}).values():
        codes = {value: i for i, value in enumerate(sorted(set(values)))}
        code = torch.tensor([codes[value] for value in values])
        allowed &= code[abnormal, None] == code[None, normal]
    # Any complete matching of allowed pairs costs at most pairs * tolerance: a disallowed pair
    # costing more than that is never worth one allowed pair more.
    forbidden = (min(len(abnormal), len(normal)) + 1) * (tolerance + 1.0)
    cost = torch.where(allowed, distance, torch.tensor(forbidden, dtype=torch.float64))
    rows, cols = linear_sum_assignment(cost.numpy())
    kept = [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if allowed[r, c]]
    if not kept:
        return MatchedSubset(empty, empty)
    return MatchedSubset(
        abnormal[torch.tensor([r for r, _ in kept])], normal[torch.tensor([c for _, c in kept])]
    )


def too_small_note(pairs: int, settings: MatchingSettings) -> str | None:
    """The sentence that replaces the matched AUROC when the subset is too small, else None.

    Examples:
        >>> too_small_note(7, MatchingSettings())[:58]
        'matched subset: only 7 abnormal/normal pairs within 0.5 SD'
    """
    if pairs >= settings.min_pairs:
        return None
    return (
        f"matched subset: only {pairs} abnormal/normal pairs within {settings.tolerance:g} SD of "
        f"every trivial statistic (at least {settings.min_pairs} are needed for its AUROC to "
        "mean anything), so no matched AUROC is given; evaluate on more images, or widen "
        "evaluator.matched_subset.tolerance (which keeps more of the shortcut)"
    )


def matched_metrics(
    scores: Tensor,
    labels: Tensor,
    statistics: Tensor,
    settings: MatchingSettings | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, float], MatchedSubset, str | None]:
    """The model's and the statistics' numbers on the matched subset of an evaluated set.

    Args:
        scores: the model's scores ``(N,)``.
        labels: 1 abnormal, 0 normal.
        statistics: ``(N, K)`` trivial statistics of the images.
        settings: tolerance, minimum size and the columns pairs share.
        groups: metadata column -> each image's group: the subgroup columns (reported on the
            subset) and the ``settings.columns`` (matched exactly).
        bootstrap_resamples: resamples of the subset AUROC's 95% interval (0: none).
        seed: seed of the bootstrap.

    Returns the metrics, the subset, and a note when there is no matched AUROC (the subset is
    too small, or a ``settings.columns`` column is not in ``groups``). Keys:
    ``matched/pairs``; ``matched/AUROC`` with ``matched/AUROC_CI_low`` / ``_high``;
    ``matched/AUROC_<s>`` for each statistic ``<s>``, in the direction that separates the whole
    set (so 0.5 means the cue is gone, below 0.5 that the pairs reversed it);
    ``matched/AUROC_best_trivial``, the best statistic on the subset in either direction, and
    ``matched/AUROC_margin``, the model's AUROC minus that; ``matched/AUROC_metadata/<column>``
    for each column of ``groups``; ``matched/too_small`` (1 or 0). With a note, every AUROC is
    NaN.

    Examples:
        >>> generator = torch.Generator().manual_seed(0)
        >>> stats = torch.rand(200, 6, generator=generator)
        >>> labels = torch.arange(200) % 2
        >>> lesion_detector = labels + torch.rand(200, generator=generator)
        >>> metrics, subset, note = matched_metrics(lesion_detector, labels, stats,
        ...                                         MatchingSettings(tolerance=0.75))
        >>> metrics["matched/pairs"] >= 20, metrics["matched/AUROC"], note
        (True, 1.0, None)
    """
    settings = settings or MatchingSettings()
    groups = dict(groups or {})
    scores = scores.detach().double().cpu().flatten()
    labels = labels.detach().long().cpu().flatten()
    statistics = statistics.detach().double().cpu()
    missing = [column for column in settings.columns if column not in groups]
    if missing:
        subset = MatchedSubset(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        note = (
            f"matched subset: the evaluated images have no metadata column "
            f"{', '.join(map(repr, missing))} to pair them by (evaluator.matched_subset.columns), "
            "so no matched AUROC is given; give the data that metadata (metadata_csv) or drop "
            "the column from the setting"
        )
    else:
        paired_by = {column: groups[column] for column in settings.columns}
        subset = match_pairs(statistics, labels, settings.tolerance, paired_by)
        note = too_small_note(subset.pairs, settings)
    index = subset.indices
    kept_labels = labels[index]

    def on_subset(values: Tensor) -> float:
        return math.nan if note else auroc(values[index], kept_labels)

    metrics = {"matched/pairs": float(subset.pairs), "matched/too_small": float(note is not None)}
    metrics["matched/AUROC"] = on_subset(scores)
    low, high = (math.nan, math.nan)
    if not note and bootstrap_resamples:
        low, high = bootstrap_auroc_ci(scores[index], kept_labels, bootstrap_resamples, seed=seed)
    metrics.update({"matched/AUROC_CI_low": low, "matched/AUROC_CI_high": high})
    either_way = []
    for column, name in enumerate(statistic_names(statistics.shape[1])):
        _, direction = trivial_auroc(statistics[:, column], labels)
        value = on_subset(statistics[:, column] * (direction or 1.0))
        metrics[f"matched/AUROC_{name}"] = value
        either_way.append(max(value, 1.0 - value))
    best = math.nan if note else max(either_way)
    metrics["matched/AUROC_best_trivial"] = best
    metrics["matched/AUROC_margin"] = metrics["matched/AUROC"] - best
    for column, values in groups.items():
        metrics[f"matched/AUROC_metadata/{column}"] = (
            math.nan if note else group_auroc([values[i] for i in index.tolist()], kept_labels)
        )
    return metrics, subset, note
