"""The evaluation component of `sagan_ad.SAGAN`: metrics, threshold, localization, subgroups and
the shortcut audit of each validation and test, from what the evaluation batches carry."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.evaluation.audit import AuditThresholds
from sagan_ad.evaluation.localization import (
    PixelMetrics,
    PointingGame,
    map_peaks,
    pointing_game_hits,
)
from sagan_ad.evaluation.matching import MatchingSettings
from sagan_ad.evaluation.metrics import ImageMetrics
from sagan_ad.evaluation.report import EvaluationReport, build_report
from sagan_ad.evaluation.thresholds import THRESHOLD_POLICIES, ThresholdPolicy, choose_threshold

STAGES = ("val", "test")


class Evaluator(nn.Module):
    """Collects one validation or test run batch by batch and turns it into an
    `sagan_ad.EvaluationReport`.

    Everything it needs arrives in the evaluation batches (see `sagan_ad.data.LabelledImages`):
    ``label`` and ``index`` always; ``name``, ``statistics`` (for the shortcut audit),
    ``mask`` (pixel AUROC and AUPRO), ``boxes`` with ``original_size`` (pointing game) and
    ``metadata`` (subgroups) where the data know them. Its metric states are DDP-aware: each
    process evaluates its share and the report covers the whole set.

    Args:
        threshold_policy: how the operating threshold is chosen on each validation (see
            `sagan_ad.evaluation.thresholds`): ``"balanced"`` (sensitivity = specificity, the
            paper's code), ``"youden"``, ``"f1"`` or ``"percentile"`` (of the normal validation
            scores; the only one that works when validation has no abnormal images).
        threshold_percentile: the percentile of ``"percentile"``.
        bootstrap_resamples: resamples of the 95% AUROC confidence interval (0 skips it).
        shortcut_audit: thresholds of the shortcut audit (the fields of
            `sagan_ad.evaluation.audit.AuditThresholds`, for example ``{"margin": 0.05}``).
        subgroup_columns: the metadata columns that make subgroup metrics; default: those that
            `sagan_ad.evaluation.report.subgroups` picks (categorical, binned numbers; never
            identifiers, paths or label-like columns).
        seed: seed of the AUROC bootstrap.
        matched_subset: how each test's matched subset is built (the fields of
            `sagan_ad.evaluation.matching.MatchingSettings`, for example
            ``{"tolerance": 0.5, "min_pairs": 20, "columns": ["view_position"]}``): the abnormal
            images paired with normals that no trivial statistic tells apart, and the AUROC
            there (``matched/...`` metrics).

    Examples:
        >>> evaluator = Evaluator(bootstrap_resamples=0)
        >>> batch = {"label": torch.tensor([0, 1]), "index": torch.tensor([0, 1]),
        ...          "name": ["a", "b"]}
        >>> evaluator.update("test", batch, torch.tensor([0.2, 0.7]), torch.zeros(2, 1, 4, 4))
        >>> evaluator.report("test", threshold=0.5).metrics["AUROC"]
        1.0
    """

    def __init__(
        self,
        threshold_policy: ThresholdPolicy = "balanced",
        threshold_percentile: float = 95.0,
        bootstrap_resamples: int = 1000,
        shortcut_audit: dict[str, float] | None = None,
        subgroup_columns: list[str] | None = None,
        seed: int = 0,
        matched_subset: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if threshold_policy not in THRESHOLD_POLICIES:
            raise InputError(
                f"evaluator threshold_policy={threshold_policy!r}: choose one of "
                f"{THRESHOLD_POLICIES}"
            )
        if not 0.0 < threshold_percentile < 100.0:
            raise InputError(
                f"evaluator threshold_percentile={threshold_percentile}: must be in (0, 100)"
            )
        if bootstrap_resamples < 0:
            raise InputError(f"evaluator bootstrap_resamples={bootstrap_resamples}: must be >= 0")
        self.threshold_policy = threshold_policy
        self.threshold_percentile = threshold_percentile
        self.bootstrap_resamples = bootstrap_resamples
        self.shortcut_audit = shortcut_audit
        self.audit_thresholds = AuditThresholds.parse(shortcut_audit)
        self.subgroup_columns = subgroup_columns
        self.seed = seed
        self.matched_subset = matched_subset
        self.matching = MatchingSettings.parse(matched_subset)
        self.image_metrics = nn.ModuleDict({s: ImageMetrics() for s in STAGES})
        self.pixel_metrics = nn.ModuleDict({s: PixelMetrics() for s in STAGES})
        self.pointing_game = nn.ModuleDict({s: PointingGame() for s in STAGES})
        # Names and metadata per data-set index: Python values, gathered across processes in
        # `report`.
        self._records: dict[str, dict[int, tuple[str, dict[str, str] | None]]] = {
            s: {} for s in STAGES
        }
        self.reports: dict[str, EvaluationReport] = {}

    def reset(self, stage: str) -> None:
        """Forget what was collected in ``stage`` (``"val"`` or ``"test"``)."""
        for metrics in (self.image_metrics, self.pixel_metrics, self.pointing_game):
            metrics[stage].reset()
        self._records[stage] = {}

    def update(self, stage: str, batch: dict[str, Any], scores: Tensor, maps: Tensor) -> None:
        """Add a batch's ``scores`` ``(B,)`` and anomaly ``maps`` ``(B, 1, H, W)``."""
        labels, indices = batch["label"], batch["index"]
        if (labels < 0).any():
            raise InputError("evaluation batches need labels 0 (normal) or 1 (abnormal)")
        self.image_metrics[stage].update(scores.float(), labels, indices, batch.get("statistics"))
        masks = batch.get("mask")
        if masks is not None:
            truth = masks.to(maps.device).float()
            if truth.shape[-2:] != maps.shape[-2:]:
                truth = F.interpolate(truth, size=maps.shape[-2:], mode="nearest")
            self.pixel_metrics[stage].update(maps, truth > 0.5)
        boxes = batch.get("boxes")
        if boxes is not None:
            peaks = map_peaks(maps, batch.get("original_size"))
            self.pointing_game[stage].update(pointing_game_hits(peaks, boxes))
        names = batch.get("name") or [str(i) for i in indices.tolist()]
        metadata = batch.get("metadata") or [None] * len(names)
        self._records[stage].update(
            zip(indices.tolist(), zip(names, metadata, strict=True), strict=True)
        )

    def collected(self, stage: str) -> dict[str, Tensor]:
        """The whole set's ``index``, ``score``, ``label`` (and ``statistics``) so far, on the
        CPU, one entry per image even under DDP."""
        return {k: v.cpu() for k, v in self.image_metrics[stage].compute().items()}

    def choose_threshold(self, scores: Tensor, labels: Tensor) -> float:
        """The operating threshold of ``threshold_policy`` on validation scores and labels."""
        return choose_threshold(scores, labels, self.threshold_policy, self.threshold_percentile)

    def finish(self, stage: str, threshold: Tensor) -> EvaluationReport:
        """End ``stage``: on validation, first choose the operating threshold by
        ``threshold_policy`` and write it into ``threshold`` (the model's buffer); then the
        `report` at that threshold."""
        if stage == "val":
            collected = self.collected(stage)
            if len(collected["index"]):
                threshold.fill_(self.choose_threshold(collected["score"], collected["label"]))
        return self.report(stage, float(threshold))

    def report(self, stage: str, threshold: float) -> EvaluationReport:
        """The report of everything collected in ``stage`` at ``threshold``; resets ``stage``
        and keeps the report in ``reports[stage]``."""
        collected = self.collected(stage)
        records = _gathered(self._records[stage])
        indices = collected["index"].tolist()
        names = [records.get(i, (str(i), None))[0] for i in indices]
        metadata = [records.get(i, (str(i), None))[1] for i in indices]
        known = sum(m is not None for m in metadata)
        if 0 < known < len(metadata):
            warnings.warn(
                f"metadata came with {known} of {len(metadata)} evaluated images: no subgroup "
                "metrics (give every evaluation batch its 'metadata')",
                stacklevel=2,
            )
        report = build_report(
            stage,
            collected["score"],
            collected["label"],
            names,
            metadata if all(m is not None for m in metadata) and metadata else None,
            threshold=threshold,
            bootstrap_resamples=self.bootstrap_resamples,
            seed=self.seed,
            statistics=collected.get("statistics"),
            audit=self.audit_thresholds,
            subgroup_columns=self.subgroup_columns,
            matching=self.matching if stage == "test" else None,
        )
        if self.pixel_metrics[stage].update_called:
            report.metrics.update(self.pixel_metrics[stage].compute())
        if self.pointing_game[stage].update_called:
            report.metrics["pointing_game"] = float(self.pointing_game[stage].compute())
        self.reset(stage)
        self.reports[stage] = report
        return report


def _gathered(records: dict[int, Any]) -> dict[int, Any]:
    """``records`` of every process merged (each evaluated a share of the set under DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return records
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, records)
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
