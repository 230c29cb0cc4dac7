"""DataModule for data sets in the Med-AD layout: ``<root>/images/*`` and ``<root>/data.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.datadict import tag_for_keyword

from sagan_ad.data.images.sets import ImageSet, SplitData
from sagan_ad.data.modules.files import FileDataModule
from sagan_ad.data.reading.dicom import read_tags
from sagan_ad.data.reading.file_kinds import is_dicom
from sagan_ad.data.reading.headers import IDENTITY_TAGS
from sagan_ad.data.reading.image_io import load_images
from sagan_ad.data.reading.tables import read_metadata_csv
from sagan_ad.data.splits.groups import group_identity, group_values
from sagan_ad.data.splits.leakage import SAME_BYTES, check_leakage, check_split_files
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.split import SplitError, build_unlabeled, unlabeled_counts
from sagan_ad.data.splits.split_file import read_medad_split
from sagan_ad.data.splits.twins import SAME_PIXELS, pixel_twins, remembered_pixel_twins
from sagan_ad.data.storage import content_digest
from sagan_ad.errors import InputError, MissingFileError
from sagan_ad.protected import protect


class MedADDataModule(FileDataModule):
    """A Med-AD data set folder (RSNA, VinCXR, LAG of the benchmark bundle, or your own).

    ``root`` holds ``images/`` and ``data.json`` (see `MedADSplit` for the schema; unknown keys,
    duplicate keys and names that are one file written two ways are refused). The unlabeled
    training set is built as in the benchmark: the first ``floor(N * anomaly_ratio)`` names of the
    abnormal pool followed by the first ``N - floor(N * anomaly_ratio)`` of the normal pool, with
    ``N = unlabeled_size`` (default: the number of known normals listed in ``data.json``). Images
    are decoded and resized once into memory. A ``val`` entry in ``data.json`` is used as the
    validation set; otherwise ``val_abnormal`` > 0 carves a labelled one from the training data,
    and ``val_abnormal=0`` validates on pseudo anomalies of held-out known normals (see
    `sagan_ad.data.modules.base.AnomalyDataModule`).

    The other arguments are those of [`FileDataModule`][sagan_ad.data.modules.files.FileDataModule]
    (the decoding settings, for DICOM and 16-bit images; ``cache``: with a ``cache.dir``, decoded
    images go through an `ImageCache` there, decoded once on ``cache.workers`` cores, so that a
    later run reads them in seconds; without one they are decoded into memory at every start)
    and of [`AnomalyDataModule`][sagan_ad.data.modules.base.AnomalyDataModule], passed on as
    ``**kwargs``.

    Of ``split`` (`sagan_ad.data.SplitSettings`) a Med-AD folder takes:

    - ``anomaly_ratio`` and ``unlabeled_size``, of the mixture;
    - ``file``: the split to read instead of ``<root>/data.json``, a file in the same schema
      (absolute, or relative to the working directory like ``root``): for example the
      ``test/matched_data.json`` that a test writes, to test on its matched subset. Its names
      are still relative to ``image_dir``;
    - ``val_abnormal``: for a ``data.json`` without ``val``: validate on the ``val_fraction``
      held-out known normals and this many abnormal images from the end of the unlabeled pool,
      which the mixture never uses (`MedADSplit.with_labelled_validation`). The training and
      test sets stay the same. Where pseudo anomalies are a poor proxy for the disease (on the
      NIH pneumonia films they score at chance), this is what makes the best checkpoint by
      ``val/AUROC`` meaningful;
    - ``val_balance_by``: with ``val_abnormal``: a ``metadata_csv`` column (for example
      ``view_position``) by which the abnormal validation images are balanced against the
      held-out normals, so that the group cannot tell the validation classes apart
      (`MedADSplit.with_labelled_validation`); the unlabeled mixture stays the same;
    - ``group_by``: what keeps images together on one side of training and validation (and in
      the leakage check): a ``metadata_csv`` column (``nih_patient_id``) or a DICOM keyword
      read from the headers (``PatientID``); images without a value are groups of their own.
      The ``val_fraction`` hold-out then takes whole groups; the ``val_abnormal`` carve-out
      takes only abnormals whose group has no kept known normal and no test image, passing
      over those whose groups the mixture needs; and the unlabeled mixture skips every image
      of a validation group, taking the next names of its pool instead, so its counts stay
      those asked for. The split of ``data.json`` itself (training against test) is not
      changed: the leakage check reports a group in both. Default: no grouping;
    - ``leakage``, for a group, PatientID or SOPInstanceUID on two sides, and ``val_fraction``.

    Args:
        root: the data set folder.
        image_dir: folder of the images, relative to ``root``.
        allow_outside_root: read ``data.json`` names that leave ``image_dir`` (absolute, or
            ``..`` past it); refused by default, so a split file cannot reach other folders.
        metadata_csv: a CSV file (relative to ``root``, or absolute) with a ``file`` column naming
            images as ``data.json`` does; its other columns become each image's metadata
            (subgroup metrics and the shortcut audit). Images it does not list get none.
        **kwargs: the arguments of `FileDataModule` and `AnomalyDataModule`.

    Examples:
        >>> dm = MedADDataModule("data/RSNA", image_size=64, batch_size=32)  # doctest: +SKIP
        >>> dm.setup(); dm.summary()  # doctest: +SKIP
        {'train/known_normal': 3466, 'train/unlabeled': 3851, ...}
    """

    split_options = (
        "val_fraction",
        "anomaly_ratio",
        "unlabeled_size",
        "file",
        "group_by",
        "leakage",
        "val_abnormal",
        "val_balance_by",
    )
    split_why = "data.json gives the split"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_dir: str = "images",
        allow_outside_root: bool = False,
        metadata_csv: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        split = self.split
        if split.val_balance_by is not None and (metadata_csv is None or not split.val_abnormal):
            raise InputError(
                f"split.val_balance_by={split.val_balance_by!r} balances the labelled validation "
                "carve-out by a metadata_csv column: set split.val_abnormal > 0 and metadata_csv "
                "too"
            )
        if (
            split.group_by is not None
            and metadata_csv is None
            and tag_for_keyword(split.group_by) is None
        ):
            raise InputError(
                f"split.group_by={split.group_by!r} is not a DICOM keyword such as 'PatientID'; "
                "to group by a column, set metadata_csv to the CSV that holds it"
            )
        self._held_normals: list[str] = []
        self.metadata_csv = None if metadata_csv is None else Path(metadata_csv)
        self.root = Path(root)
        self.image_dir = image_dir
        self.allow_outside_root = allow_outside_root

    @property
    def split_path(self) -> Path:
        """The split file read: ``split.file``, or ``data.json`` in ``root``."""
        return self.split_file or self.root / "data.json"

    def read_split(self) -> MedADSplit:
        """The validated split file (`split_path`)."""
        if not self.root.is_dir():
            raise MissingFileError(
                f"data.root={str(self.root)!r} is not a folder: point it at a Med-AD data set "
                "folder holding images/ and data.json"
            )
        path = self.split_path
        split = read_medad_split(path)
        if not (self.root / self.image_dir).is_dir():
            # Otherwise every name of data.json would be listed as a missing file.
            raise MissingFileError(
                f"image_dir={self.image_dir!r}: {self.root / self.image_dir} is not a folder; "
                f"name the folder of {self.root} that holds the images of data.json"
            )
        images = self.root / self.image_dir
        prefixed = [
            name
            for names in split.parts().values()
            for name in names
            if not (images / name).exists() and (self.root / name).is_file()
        ]
        if prefixed:
            # A common slip: names written relative to root ("images/x.png") instead of image_dir.
            raise SplitError(
                f"{path}: {len(prefixed)} name(s) are not files under {images} but are under "
                f"{self.root} (for example {prefixed[0]!r}): names in data.json are relative "
                f"to image_dir={self.image_dir!r}; drop the {self.image_dir}/ prefix"
            )
        check_split_files(split, images, str(path), self.allow_outside_root)
        return split

    def read_metadata(self, split: MedADSplit) -> dict[str, dict[str, str]]:
        """The rows of ``metadata_csv`` by the ``data.json`` name of the image they describe
        (empty without one; see `read_metadata_csv`)."""
        if self.metadata_csv is None:
            return {}
        required = (
            {}
            if self.split.val_balance_by is None
            else {"split.val_balance_by": self.split.val_balance_by}
        )
        return read_metadata_csv(
            self.root / self.metadata_csv,  # an absolute metadata_csv stays as it is
            self.root / self.image_dir,
            [name for names in split.parts().values() for name in names],
            required,
        )

    def _carve_validation(self, split: MedADSplit, metadata: dict, size: int) -> MedADSplit:
        where = f"split.val_abnormal={self.split.val_abnormal} ({self.split_path})"
        if split.has_validation:
            raise InputError(
                f"{where}: data.json already has a labelled validation set (val); set "
                "split.val_abnormal to 0 to use it"
            )
        if self.split.val_fraction <= 0:
            raise InputError(
                f"{where}: the validation normals are the split.val_fraction held-out known "
                f"normals, but split.val_fraction={self.split.val_fraction}; set it above 0"
            )
        groups = None
        reserve = reserve_normal = 0
        if self.split.val_balance_by is not None:
            where += f", balanced by {self.split.val_balance_by}"
            groups = {
                name: row.get(self.split.val_balance_by, "") for name, row in metadata.items()
            }
            reserve = unlabeled_counts(size, self.split.anomaly_ratio)[0]
        if self.split.group_by is not None:
            where += f", split.group_by={self.split.group_by!r}"
            # Validation groups leave the pools, so the mixture's counts must stay available.
            reserve, reserve_normal = unlabeled_counts(size, self.split.anomaly_ratio)
        try:
            return split.with_labelled_validation(
                self.split.val_fraction,
                self.split.val_abnormal,
                self.seed,
                groups=groups,
                reserve=reserve,
                together=None if self.split.group_by is None else self.groups,
                reserve_normal=reserve_normal,
            )
        except SplitError as err:
            raise InputError(f"{where}: {err}") from err

    def group_keys(self, split: MedADSplit, metadata: dict[str, dict[str, str]]) -> dict[str, str]:
        """The group of every image of ``split`` by ``group_by`` (see
        `sagan_ad.data.modules.raw.group_values`); empty without ``group_by``."""
        if self.split.group_by is None:
            return {}
        images = self.root / self.image_dir
        return group_values(
            self.split.group_by,
            metadata,
            {name: images / name for names in split.parts().values() for name in names},
            None if self.cache_dir is None else self.cache_dir / "headers.json",
            self.settings.force_dicom,
            type(self).__name__,
        )

    def holdout(self, known: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """The validation hold-out of the known normals: with ``group_by``, the whole groups
        `load` chose (`MedADSplit.normals_held_apart`); without, the plain seeded one."""
        if self.split.group_by is None:
            return super().holdout(known)
        held = set(self._held_normals)
        chosen = np.array([name in held for name in known.names])
        return np.flatnonzero(~chosen), np.flatnonzero(chosen)

    def _apart_from_validation(self, split: MedADSplit, size: int) -> MedADSplit:
        """``split`` with the pools apart from the validation groups when validation is not
        carved from it: ``val`` of ``data.json``, or the ``val_fraction`` hold-out, which
        `load` chooses here so that the mixture can skip its groups."""
        if split.has_validation:
            return split.apart_from(split.val_normal + split.val_abnormal, self.groups)
        if not self.split.val_fraction:
            return split
        # A pool of unknown labels has no counts to keep; it is only cut short.
        reserve = (0, 0) if split.pool_unknown else unlabeled_counts(size, self.split.anomaly_ratio)
        try:
            self._held_normals, split = split.normals_held_apart(
                self.split.val_fraction, self.seed, self.groups, *reserve
            )
        except SplitError as err:
            raise InputError(
                f"split.group_by={self.split.group_by!r} ({self.split_path}): {err}"
            ) from err
        return split

    def _unlabeled(self, split: MedADSplit, size: int) -> tuple[list[str], list[int]]:
        if not split.pool_unknown:
            return build_unlabeled(
                split.pool_normal, split.pool_abnormal, size, self.split.anomaly_ratio
            )
        where = f'{self.split_path}: train.unlabeled."unknown"'
        if split.pool_normal or split.pool_abnormal:
            raise SplitError(
                f'{where} lists images of unknown label beside the labelled pools "0" / '
                '"1": keep one kind of unlabeled pool'
            )
        size = len(split.pool_unknown) if self.split.unlabeled_size is None else size
        if size > len(split.pool_unknown):
            raise SplitError(
                f"split.unlabeled_size={size} but {where} lists {len(split.pool_unknown)} images: "
                "lower split.unlabeled_size"
            )
        return split.pool_unknown[:size], [-1] * size

    def load(self) -> SplitData:
        source = self.split_path
        split = original = self.read_split()
        metadata = self.read_metadata(split)
        self.groups = self.group_keys(split, metadata)
        # Sized before any carve-out, so the unlabeled set is the same with or without it.
        size = (
            len(split.known_normal)
            if self.split.unlabeled_size is None
            else self.split.unlabeled_size
        )
        if self.split.val_abnormal:
            split = self._carve_validation(split, metadata, size)
        elif self.split.group_by is not None:
            # The mixture must not train on a patient that validation holds.
            split = self._apart_from_validation(split, size)
        unlabeled_names, unlabeled_labels = self._unlabeled(split, size)
        parts = {
            "known_normal": (split.known_normal, [0] * len(split.known_normal)),
            "unlabeled": (unlabeled_names, unlabeled_labels),
            "test": (
                split.test_normal + split.test_abnormal,
                [0] * len(split.test_normal) + [1] * len(split.test_abnormal),
            ),
            "val": (
                split.val_normal + split.val_abnormal,
                [0] * len(split.val_normal) + [1] * len(split.val_abnormal),
            ),
        }
        # One decoding pass over every file, so that all missing or broken files of every part
        # are reported together.
        all_names = [name for names, _ in parts.values() for name in names]
        paths = [self.root / self.image_dir / name for name in all_names]
        protect(paths, "an image of the data")
        protect(self.root, "the data root read by this command")
        array, tags, identities = self._decode(paths)
        self.identities = {
            name: {**ids, **group_identity(self.split.group_by, self.groups.get(name, ""))}
            for name, ids in zip(all_names, identities, strict=True)
        }
        # Copies by decoded pixels too (a test film re-encoded into training); with a cache, the
        # answer is kept beside it for the next setup of the same images.
        twins = (
            pixel_twins(array, all_names)
            if self.cache_dir is None
            else remembered_pixel_twins(array, all_names, self.cache_dir / "twins.json")
        )
        for name, first in twins.items():
            self.identities[name][SAME_PIXELS] = first
        images = torch.from_numpy(array)
        sets: dict[str, ImageSet | None] = {}
        start = 0
        for part, (names, labels) in parts.items():
            stop = start + len(names)
            rows = None
            if metadata or self.settings.dicom_tags:
                rows = [
                    {**metadata.get(name, {}), **(tags[i] if self.settings.dicom_tags else {})}
                    for i, name in enumerate(names, start)
                ]
            sets[part] = ImageSet(images[start:stop], labels, names, rows) if names else None
            start = stop
        unlabeled = (
            'train.unlabeled."unknown"'
            if split.pool_unknown
            else f"the first names of each pool, split.anomaly_ratio={self.split.anomaly_ratio}"
        )
        grouping = ""
        if self.split.group_by is not None:
            grouping = f", split.group_by={self.split.group_by!r}"
            unlabeled += " (images of validation groups passed over)"
        self._manifest = {
            "source": f"read from {source}{grouping}; unlabeled set: {unlabeled}, "
            f"split.unlabeled_size={len(unlabeled_names)}; {self._validation_note(original)}",
            "split": original.to_json(),
        }
        return SplitData(
            known_normal=sets["known_normal"],
            unlabeled=sets["unlabeled"],
            test=sets["test"],
            val=sets["val"],
        )

    def _validation_note(self, split: MedADSplit) -> str:
        """How validation was formed from ``split`` (the split of ``data.json``)."""
        settings = self.split
        by_group = " by whole groups" if settings.group_by else ""
        if settings.val_abnormal:
            apart = " whose group has no image in training or test" if settings.group_by else ""
            return (
                f"val carved from the training data: split.val_abnormal={settings.val_abnormal} "
                f"last names of the abnormal pool{apart} and split.val_fraction="
                f"{settings.val_fraction} of the known normals{by_group} (seed={self.seed})"
            )
        if split.has_validation:
            return "validation: val of data.json"
        if settings.val_fraction:
            return (
                f"validation: split.val_fraction={settings.val_fraction} of the known normals "
                f"held out{by_group} (seed={self.seed}) with pseudo anomalies"
            )
        return "no validation set"

    def _decode(
        self, paths: list[Path]
    ) -> tuple[np.ndarray, list[dict[str, str]], list[dict[str, str]]]:
        """The images of ``paths`` with their requested header values and identities."""
        settings = self.settings
        if self.cache_dir is not None:
            cached = self.image_cache(self.cache_dir).load(paths)
            return cached.images, cached.tags, cached.identities
        array = load_images(
            paths,
            settings.image_size,
            settings.in_channels,
            dicom=settings.dicom,
            force_dicom=settings.force_dicom,
            bit_depth=settings.bit_depth,
        )
        keywords = tuple(dict.fromkeys(settings.dicom_tags + IDENTITY_TAGS))
        headers = [
            read_tags(path, keywords) if is_dicom(path, settings.force_dicom) else {}
            for path in paths
        ]
        tags = [{k: h.get(k, "") for k in settings.dicom_tags} if h else {} for h in headers]
        identities = [
            {**{k: h[k] for k in IDENTITY_TAGS if k in h}, SAME_BYTES: content_digest(path)}
            for h, path in zip(headers, paths, strict=True)
        ]
        return array, tags, identities

    def setup(self, stage: str | None = None) -> None:
        checked = self.known_normal is not None
        super().setup(stage)
        if not checked:
            check_leakage(
                self.sides(),
                self.identities,
                self.split.leakage,
                str(self.root),
                group_by=self.split.group_by,
                roles_given=True,
            )
