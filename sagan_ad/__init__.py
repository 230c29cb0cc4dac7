"""sagan_ad: SAGAN (Spatial-aware Attention GAN, MICCAI 2024) for semi-supervised anomaly
detection in medical images, as a PyTorch Lightning library.

Examples:
    >>> import lightning as L
    >>> from sagan_ad import SAGAN, SyntheticCXRDataModule
    >>> model = SAGAN(base_channels=16, max_iterations=500)  # doctest: +SKIP
    >>> L.Trainer(max_epochs=-1, check_val_every_n_epoch=None, val_check_interval=100).fit(
    ...     model, SyntheticCXRDataModule())  # doctest: +SKIP
"""

from sagan_ad.callbacks import IterationProgressBar, best_and_last_checkpoints
from sagan_ad.critic import Critic
from sagan_ad.data import (
    AnomalyDataModule,
    DicomOptions,
    FolderDataModule,
    ImageCache,
    ImageReadError,
    ImageSet,
    LAGDataModule,
    MedADDataModule,
    PreprocessSettings,
    RSNADataModule,
    SplitData,
    SplitError,
    SyntheticCXRDataModule,
    VinDrCXRDataModule,
    scale_boxes,
)
from sagan_ad.generator import Generator
from sagan_ad.module import SAGAN, paper_adam
from sagan_ad.scoring import anomaly_map, anomaly_score, map_to_score
from sagan_ad.synthesis import (
    CutPasteSynthesizer,
    FPISynthesizer,
    PatchBlendSynthesizer,
    PerlinBlobSynthesizer,
    Synthesizer,
)

__version__ = "0.1.0"

__all__ = [
    "SAGAN",
    "AnomalyDataModule",
    "Critic",
    "CutPasteSynthesizer",
    "DicomOptions",
    "FPISynthesizer",
    "FolderDataModule",
    "Generator",
    "ImageCache",
    "ImageReadError",
    "ImageSet",
    "IterationProgressBar",
    "LAGDataModule",
    "MedADDataModule",
    "PatchBlendSynthesizer",
    "PerlinBlobSynthesizer",
    "PreprocessSettings",
    "RSNADataModule",
    "SplitData",
    "SplitError",
    "Synthesizer",
    "SyntheticCXRDataModule",
    "VinDrCXRDataModule",
    "__version__",
    "anomaly_map",
    "anomaly_score",
    "best_and_last_checkpoints",
    "map_to_score",
    "paper_adam",
    "scale_boxes",
]
