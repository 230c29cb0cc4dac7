"""Scoring and evaluation: anomaly maps and scores, image and pixel metrics, thresholds, the
shortcut audit, reports and pictures.

The names of the former single module ``sagan_ad.evaluation`` (`EvaluationReport`,
`build_report`, `operating_point`, `subgroups`) are importable from here as before.
"""

from sagan_ad.evaluation.audit import AuditThresholds, ShortcutWarning, shortcut_audit
from sagan_ad.evaluation.localization import PixelMetrics, PointingGame
from sagan_ad.evaluation.metrics import ImageMetrics, SingleClassWarning, detection_metrics
from sagan_ad.evaluation.report import EvaluationReport, build_report, operating_point, subgroups
from sagan_ad.evaluation.scoring import (
    anomaly_map,
    anomaly_score,
    map_to_score,
    score_and_map,
    smooth_map,
)
from sagan_ad.evaluation.thresholds import ThresholdPolicy, apply_threshold, choose_threshold

__all__ = [
    "AuditThresholds",
    "EvaluationReport",
    "ImageMetrics",
    "PixelMetrics",
    "PointingGame",
    "ShortcutWarning",
    "SingleClassWarning",
    "ThresholdPolicy",
    "anomaly_map",
    "anomaly_score",
    "apply_threshold",
    "build_report",
    "choose_threshold",
    "detection_metrics",
    "map_to_score",
    "operating_point",
    "score_and_map",
    "shortcut_audit",
    "smooth_map",
    "subgroups",
]
