"""Data: DataModules, the protocol split, image reading and the built-in synthetic data."""

from sagan_ad.data.augmentation import Augmentation, IntensityAugmentation
from sagan_ad.data.base import AnomalyDataModule, ImageSet, SplitData
from sagan_ad.data.bit_depth import data_set_depth, unify_bit_depth
from sagan_ad.data.boxes import box_problem, scale_boxes
from sagan_ad.data.cache import CachedImages, ImageCache, PreprocessSettings
from sagan_ad.data.cache_files import content_digest
from sagan_ad.data.datasets import (
    DeviceTrainingStream,
    LabelledImages,
    TrainingStream,
    collate_evaluation,
    to_model_range,
)
from sagan_ad.data.decoding import DecodeSettings
from sagan_ad.data.dicom import DicomOptions, DicomReadError, read_dicom
from sagan_ad.data.discovery import IMAGE_SUFFIXES, Discovery, discover_images, find_images
from sagan_ad.data.files import FileDataModule
from sagan_ad.data.folder import FolderDataModule
from sagan_ad.data.headers import header_tags
from sagan_ad.data.image_io import (
    ImageReadError,
    ReadImage,
    decode_image,
    load_image,
    load_image_and_size,
    load_images,
    read_image,
)
from sagan_ad.data.intensity import (
    IntensityNormalization,
    IntensityNormalizer,
    normalize_images,
)
from sagan_ad.data.lag import LAGDataModule
from sagan_ad.data.leakage import (
    check_disjoint,
    check_leakage,
    check_split_files,
    file_identity,
)
from sagan_ad.data.medad import MedADDataModule
from sagan_ad.data.medad_split import MedADSplit
from sagan_ad.data.predict import (
    IMAGE_EXTENSIONS,
    FolderPredictDataModule,
    ImageFolder,
    list_images,
    original_size,
)
from sagan_ad.data.raw import RawDataModule, Record
from sagan_ad.data.rsna import RSNADataModule
from sagan_ad.data.split import (
    SplitError,
    build_unlabeled,
    hash_position,
    holdout_groups,
    holdout_indices,
)
from sagan_ad.data.split_draw import protocol_split, stable_draw
from sagan_ad.data.split_file import read_medad_split
from sagan_ad.data.synthetic import SyntheticCXRDataModule
from sagan_ad.data.vindr import VinDrCXRDataModule
from sagan_ad.image_statistics import STATISTICS, image_statistics

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "STATISTICS",
    "AnomalyDataModule",
    "Augmentation",
    "CachedImages",
    "DecodeSettings",
    "DeviceTrainingStream",
    "DicomOptions",
    "DicomReadError",
    "Discovery",
    "FileDataModule",
    "FolderDataModule",
    "FolderPredictDataModule",
    "ImageCache",
    "ImageFolder",
    "ImageReadError",
    "ImageSet",
    "IntensityAugmentation",
    "IntensityNormalization",
    "IntensityNormalizer",
    "LAGDataModule",
    "LabelledImages",
    "MedADDataModule",
    "MedADSplit",
    "PreprocessSettings",
    "RSNADataModule",
    "RawDataModule",
    "ReadImage",
    "Record",
    "SplitData",
    "SplitError",
    "SyntheticCXRDataModule",
    "TrainingStream",
    "VinDrCXRDataModule",
    "box_problem",
    "build_unlabeled",
    "check_disjoint",
    "check_leakage",
    "check_split_files",
    "collate_evaluation",
    "content_digest",
    "data_set_depth",
    "decode_image",
    "discover_images",
    "file_identity",
    "find_images",
    "hash_position",
    "header_tags",
    "holdout_groups",
    "holdout_indices",
    "image_statistics",
    "list_images",
    "load_image",
    "load_image_and_size",
    "load_images",
    "normalize_images",
    "original_size",
    "protocol_split",
    "read_dicom",
    "read_image",
    "read_medad_split",
    "scale_boxes",
    "stable_draw",
    "to_model_range",
    "unify_bit_depth",
]
