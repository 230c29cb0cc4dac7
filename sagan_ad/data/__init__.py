"""Data: DataModules, the protocol split, image reading and the built-in synthetic data."""

from sagan_ad.data.base import AnomalyDataModule, ImageSet, SplitData
from sagan_ad.data.datasets import LabelledImages, TrainingStream, to_model_range
from sagan_ad.data.image_io import ImageReadError, load_image, load_images
from sagan_ad.data.medad import MedADDataModule
from sagan_ad.data.predict import (
    IMAGE_EXTENSIONS,
    FolderPredictDataModule,
    ImageFolder,
    list_images,
    original_size,
)
from sagan_ad.data.split import (
    MedADSplit,
    SplitError,
    build_unlabeled,
    check_disjoint,
    holdout_indices,
    read_medad_split,
)
from sagan_ad.data.synthetic import SyntheticCXRDataModule

__all__ = [
    "IMAGE_EXTENSIONS",
    "AnomalyDataModule",
    "FolderPredictDataModule",
    "ImageFolder",
    "ImageReadError",
    "ImageSet",
    "LabelledImages",
    "MedADDataModule",
    "MedADSplit",
    "SplitData",
    "SplitError",
    "SyntheticCXRDataModule",
    "TrainingStream",
    "build_unlabeled",
    "check_disjoint",
    "holdout_indices",
    "list_images",
    "load_image",
    "load_images",
    "original_size",
    "read_medad_split",
    "to_model_range",
]
