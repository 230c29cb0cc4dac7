"""Data: DataModules, the protocol split, image reading and the built-in synthetic data."""

from sagan_ad.data.caching.cache import CachedImages, ImageCache, PreprocessSettings
from sagan_ad.data.caching.settings import CacheSettings
from sagan_ad.data.images.augmentation import Augmentation, IntensityAugmentation
from sagan_ad.data.images.boxes import box_problem, scale_boxes
from sagan_ad.data.images.intensity import (
    IntensityNormalization,
    IntensityNormalizer,
    normalize_images,
)
from sagan_ad.data.images.sets import ImageSet, SplitData
from sagan_ad.data.modules.base import AnomalyDataModule
from sagan_ad.data.modules.datasets import (
    DeviceTrainingStream,
    LabelledImages,
    TrainingStream,
    collate_evaluation,
    to_model_range,
)
from sagan_ad.data.modules.files import FileDataModule
from sagan_ad.data.modules.folder import FolderDataModule
from sagan_ad.data.modules.lag import LAGDataModule
from sagan_ad.data.modules.medad import MedADDataModule
from sagan_ad.data.modules.predict import (
    IMAGE_EXTENSIONS,
    FolderPredictDataModule,
    ImageFolder,
    list_images,
    original_size,
)
from sagan_ad.data.modules.raw import RawDataModule, Record
from sagan_ad.data.modules.rsna import RSNADataModule
from sagan_ad.data.modules.synthetic import SyntheticCXRDataModule
from sagan_ad.data.modules.vindr import VinDrCXRDataModule
from sagan_ad.data.reading.bit_depth import data_set_depth, unify_bit_depth
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.data.reading.dicom import DicomReadError, read_dicom
from sagan_ad.data.reading.dicom_options import DicomOptions
from sagan_ad.data.reading.discovery import IMAGE_SUFFIXES, Discovery, discover_images, find_images
from sagan_ad.data.reading.headers import header_tags
from sagan_ad.data.reading.image_io import (
    ImageReadError,
    ReadImage,
    decode_image,
    load_image,
    load_image_and_size,
    load_images,
    read_image,
)
from sagan_ad.data.splits.leakage import (
    check_disjoint,
    check_leakage,
    check_split_files,
)
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.settings import SplitSettings
from sagan_ad.data.splits.split import (
    SplitError,
    build_unlabeled,
    hash_position,
    holdout_groups,
    holdout_indices,
)
from sagan_ad.data.splits.split_draw import protocol_split, stable_draw
from sagan_ad.data.splits.split_file import read_medad_split
from sagan_ad.data.storage import content_digest, file_identity
from sagan_ad.image_statistics import STATISTICS, image_statistics

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "STATISTICS",
    "AnomalyDataModule",
    "Augmentation",
    "CacheSettings",
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
    "SplitSettings",
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
