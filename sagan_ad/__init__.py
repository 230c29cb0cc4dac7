"""sagan_ad: SAGAN (Spatial-aware Attention GAN, MICCAI 2024) for semi-supervised anomaly
detection in medical images, as a PyTorch Lightning library.

Examples:
    >>> import lightning as L
    >>> from sagan_ad import SAGAN, Generator, SyntheticCXRDataModule
    >>> model = SAGAN(Generator(base_channels=16), max_iterations=500)  # doctest: +SKIP
    >>> L.Trainer(max_epochs=-1, check_val_every_n_epoch=None, val_check_interval=100).fit(
    ...     model, SyntheticCXRDataModule())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names are imported on first use (PEP 562), so that `import sagan_ad` and the command
# line's --help, --version and configs answer without loading torch and Lightning.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "sagan_ad.data": (
        "AnomalyDataModule",
        "Augmentation",
        "CacheSettings",
        "DecodeSettings",
        "DicomOptions",
        "FolderDataModule",
        "FolderPredictDataModule",
        "ImageCache",
        "ImageReadError",
        "ImageSet",
        "IntensityAugmentation",
        "IntensityNormalization",
        "LAGDataModule",
        "MedADDataModule",
        "PreprocessSettings",
        "RSNADataModule",
        "SplitData",
        "SplitError",
        "SplitSettings",
        "SyntheticCXRDataModule",
        "VinDrCXRDataModule",
        "normalize_images",
        "scale_boxes",
    ),
    "sagan_ad.errors": (
        "DataError",
        "DataMismatchError",
        "FileError",
        "InputError",
        "MissingExtraError",
        "MissingFileError",
        "RunError",
        "SaganError",
        "UserError",
    ),
    "sagan_ad.evaluation.audit": ("AuditThresholds", "ShortcutWarning", "shortcut_audit"),
    "sagan_ad.evaluation.evaluator": ("Evaluator",),
    "sagan_ad.evaluation.localization": ("PixelMetrics", "PointingGame"),
    "sagan_ad.evaluation.metrics": ("ImageMetrics", "SingleClassWarning", "detection_metrics"),
    "sagan_ad.evaluation.report": ("EvaluationReport", "build_report"),
    "sagan_ad.evaluation.scorer": ("Scorer",),
    "sagan_ad.evaluation.scoring": (
        "anomaly_map",
        "anomaly_score",
        "map_to_score",
        "score_and_map",
        "smooth_map",
    ),
    "sagan_ad.evaluation.thresholds": ("ThresholdPolicy", "apply_threshold", "choose_threshold"),
    "sagan_ad.export": ("export_scorer",),
    "sagan_ad.inference": ("AnomalyScorer",),
    "sagan_ad.module": ("SAGAN",),
    "sagan_ad.networks.cpu_kernels": ("pytorch_kernels", "uses_cpu_kernels"),
    "sagan_ad.networks.critic": ("Critic",),
    "sagan_ad.networks.generator": ("Generator",),
    "sagan_ad.preprocessing": ("Preprocessing",),
    "sagan_ad.synthesis": (
        "CutPasteSynthesizer",
        "FPISynthesizer",
        "PatchBlendSynthesizer",
        "PerlinBlobSynthesizer",
        "Synthesizer",
    ),
    "sagan_ad.training.callbacks": ("IterationProgressBar", "best_and_last_checkpoints"),
    "sagan_ad.training.checkpoint_files": (
        "CheckpointError",
        "UnsafeCheckpointError",
        "read_checkpoint",
    ),
    "sagan_ad.training.checkpointing": ("AtomicCheckpointIO", "LastCheckpoint", "load_checkpoint"),
    "sagan_ad.training.divergence": ("DivergenceError", "DivergenceGuard"),
    "sagan_ad.training.engine": ("Engine",),
    "sagan_ad.training.losses": ("SAGANLoss",),
    "sagan_ad.training.optimizers": ("paper_adam",),
    "sagan_ad.training.outputs": ("EvaluationWriter",),
    "sagan_ad.training.performance": ("Performance",),
    "sagan_ad.training.tracking": ("SplitRecorder", "ValidationSampleLogger"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sagan_ad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


if TYPE_CHECKING:
    from sagan_ad.data import (
        AnomalyDataModule,
        Augmentation,
        CacheSettings,
        DecodeSettings,
        DicomOptions,
        FolderDataModule,
        FolderPredictDataModule,
        ImageCache,
        ImageReadError,
        ImageSet,
        IntensityAugmentation,
        IntensityNormalization,
        LAGDataModule,
        MedADDataModule,
        PreprocessSettings,
        RSNADataModule,
        SplitData,
        SplitError,
        SplitSettings,
        SyntheticCXRDataModule,
        VinDrCXRDataModule,
        normalize_images,
        scale_boxes,
    )
    from sagan_ad.errors import (
        DataError,
        DataMismatchError,
        FileError,
        InputError,
        MissingExtraError,
        MissingFileError,
        RunError,
        SaganError,
        UserError,
    )
    from sagan_ad.evaluation.audit import AuditThresholds, ShortcutWarning, shortcut_audit
    from sagan_ad.evaluation.evaluator import Evaluator
    from sagan_ad.evaluation.localization import PixelMetrics, PointingGame
    from sagan_ad.evaluation.metrics import ImageMetrics, SingleClassWarning, detection_metrics
    from sagan_ad.evaluation.report import EvaluationReport, build_report
    from sagan_ad.evaluation.scorer import Scorer
    from sagan_ad.evaluation.scoring import (
        anomaly_map,
        anomaly_score,
        map_to_score,
        score_and_map,
        smooth_map,
    )
    from sagan_ad.evaluation.thresholds import ThresholdPolicy, apply_threshold, choose_threshold
    from sagan_ad.export import export_scorer
    from sagan_ad.inference import AnomalyScorer
    from sagan_ad.module import SAGAN
    from sagan_ad.networks.cpu_kernels import pytorch_kernels, uses_cpu_kernels
    from sagan_ad.networks.critic import Critic
    from sagan_ad.networks.generator import Generator
    from sagan_ad.preprocessing import Preprocessing
    from sagan_ad.synthesis import (
        CutPasteSynthesizer,
        FPISynthesizer,
        PatchBlendSynthesizer,
        PerlinBlobSynthesizer,
        Synthesizer,
    )
    from sagan_ad.training.callbacks import IterationProgressBar, best_and_last_checkpoints
    from sagan_ad.training.checkpoint_files import (
        CheckpointError,
        UnsafeCheckpointError,
        read_checkpoint,
    )
    from sagan_ad.training.checkpointing import AtomicCheckpointIO, LastCheckpoint, load_checkpoint
    from sagan_ad.training.divergence import DivergenceError, DivergenceGuard
    from sagan_ad.training.engine import Engine
    from sagan_ad.training.losses import SAGANLoss
    from sagan_ad.training.optimizers import paper_adam
    from sagan_ad.training.outputs import EvaluationWriter
    from sagan_ad.training.performance import Performance
    from sagan_ad.training.tracking import SplitRecorder, ValidationSampleLogger

__all__ = [
    "SAGAN",
    "AnomalyDataModule",
    "AnomalyScorer",
    "AtomicCheckpointIO",
    "AuditThresholds",
    "Augmentation",
    "CacheSettings",
    "CheckpointError",
    "Critic",
    "CutPasteSynthesizer",
    "DataError",
    "DataMismatchError",
    "DecodeSettings",
    "DicomOptions",
    "DivergenceError",
    "DivergenceGuard",
    "Engine",
    "EvaluationReport",
    "EvaluationWriter",
    "Evaluator",
    "FPISynthesizer",
    "FileError",
    "FolderDataModule",
    "FolderPredictDataModule",
    "Generator",
    "ImageCache",
    "ImageMetrics",
    "ImageReadError",
    "ImageSet",
    "InputError",
    "IntensityAugmentation",
    "IntensityNormalization",
    "IterationProgressBar",
    "LAGDataModule",
    "LastCheckpoint",
    "MedADDataModule",
    "MissingExtraError",
    "MissingFileError",
    "PatchBlendSynthesizer",
    "Performance",
    "PerlinBlobSynthesizer",
    "PixelMetrics",
    "PointingGame",
    "PreprocessSettings",
    "Preprocessing",
    "RSNADataModule",
    "RunError",
    "SAGANLoss",
    "SaganError",
    "Scorer",
    "ShortcutWarning",
    "SingleClassWarning",
    "SplitData",
    "SplitError",
    "SplitRecorder",
    "SplitSettings",
    "Synthesizer",
    "SyntheticCXRDataModule",
    "ThresholdPolicy",
    "UnsafeCheckpointError",
    "UserError",
    "ValidationSampleLogger",
    "VinDrCXRDataModule",
    "__version__",
    "anomaly_map",
    "anomaly_score",
    "apply_threshold",
    "best_and_last_checkpoints",
    "build_report",
    "choose_threshold",
    "detection_metrics",
    "export_scorer",
    "load_checkpoint",
    "map_to_score",
    "normalize_images",
    "paper_adam",
    "pytorch_kernels",
    "read_checkpoint",
    "scale_boxes",
    "score_and_map",
    "shortcut_audit",
    "smooth_map",
    "uses_cpu_kernels",
]
