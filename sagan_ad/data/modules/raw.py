"""Shared machinery of the DataModules that read raw releases: split, cache, boxes, metadata."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sagan_ad.data.caching.cache import OnError
from sagan_ad.data.caching.setup_record import file_signatures, record_of, set_up_recorded
from sagan_ad.data.images.boxes import box_problem
from sagan_ad.data.images.sets import ImageSet, SplitData
from sagan_ad.data.messages import listing
from sagan_ad.data.modules.files import FileDataModule
from sagan_ad.data.reading.file_kinds import missing_reason
from sagan_ad.data.reading.image_io import ImageReadError
from sagan_ad.data.splits.groups import from_headers, group_identity, group_values
from sagan_ad.data.splits.leakage import check_disjoint, check_leakage
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.spellings import canonical_id
from sagan_ad.data.splits.split import SplitError, build_unlabeled, grouped_holdout, shares_groups
from sagan_ad.data.splits.split_draw import (
    SPLIT_PARTS,
    protocol_parts,
    protocol_split,
    split_tests,
    without_names,
)
from sagan_ad.data.splits.split_file import read_medad_split
from sagan_ad.data.splits.twins import SAME_PIXELS, remembered_pixel_twins
from sagan_ad.data.storage import atomic_write_text, file_identity, make_folder
from sagan_ad.errors import InputError, MissingFileError
from sagan_ad.protected import protect

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$SAGAN_AD_CACHE``, else ``~/.cache/sagan_ad``."""
    return Path(os.environ.get("SAGAN_AD_CACHE", "~/.cache/sagan_ad")).expanduser()


@dataclass
class Record:
    """One image of a raw release.

    Attributes:
        name: unique name of the image in the split file (``data.json``).
        path: the image file.
        label: 0 normal, 1 abnormal, -1 unknown.
        boxes: ``(k, 4)`` ``x0, y0, x1, y1`` ground-truth boxes in original pixels, if any.
        metadata: per-image columns carried to the outputs.
        group: the data set's own patient key, where it has one (RSNA's ``patientId``);
            empty: the image is a group of its own unless ``group_by`` says otherwise.
    """

    name: str
    path: Path
    label: int
    boxes: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    group: str = ""


class RawDataModule(FileDataModule):
    """Base of the DataModules over raw files: subclasses implement `records`.

    `load` draws the Med-AD protocol split from the records (seeded by ``seed``, counts
    ``split.counts``, or the split file ``split.file``), decodes the images it uses through the
    `ImageCache` at ``cache.dir``, checks the boxes against the original image sizes, writes the
    split actually used as ``<cache.dir>/data.json`` (give it back as ``split.file`` to repeat a
    run) and returns `ImageSet`s carrying boxes, original sizes and metadata.

    The other arguments are those of [`FileDataModule`][sagan_ad.data.modules.files.FileDataModule]
    (``decode``, ``dicom_tags``, ``cache``: its ``dir`` defaults to ``$SAGAN_AD_CACHE`` or
    ``~/.cache/sagan_ad``, then one folder per DataModule class and root) and of
    [`AnomalyDataModule`][sagan_ad.data.modules.base.AnomalyDataModule] (``seed`` also seeds the
    split), passed on as ``**kwargs``. Their ``split`` (`sagan_ad.data.SplitSettings`) takes here
    ``counts`` (images per part; default: the release's Med-AD counts), ``file`` (a
    ``data.json`` to use instead of drawing a split), ``group_by`` (default: the data set's own
    patient key where it has one, RSNA's ``patientId``, else none), ``leakage``,
    ``anomaly_ratio``, ``unlabeled_size`` and ``val_fraction``.

    Args:
        root: the release folder.
        on_error: ``"raise"``: missing or unreadable files and bad boxes stop with one error
            listing all of them; ``"skip"``: they are left out and logged.
        **kwargs: the arguments of `FileDataModule` and `AnomalyDataModule`.
    """

    split_options = (
        "val_fraction",
        "anomaly_ratio",
        "unlabeled_size",
        "counts",
        "file",
        "group_by",
        "leakage",
    )
    default_counts: ClassVar[dict[str, int]] = {}
    decodes_every_record: ClassVar[bool] = False
    """Whether every record is decoded whatever the split (roles given, nothing drawn): then a
    DICOM ``group_by`` is read while decoding, in the one read of each file."""
    roles_given: ClassVar[bool] = False
    """Whether the user gives each image's role (training, test) rather than the DataModule
    drawing it: the advice of the leakage check differs."""

    def __init__(
        self,
        root: str | os.PathLike,
        on_error: OnError = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r}: must be 'raise' or 'skip'")
        self.root = Path(root).expanduser()
        # Taken now: a relative root keeps its cache folder if the working directory changes.
        self._root_digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        self.on_error = on_error
        self._known_names: list[str] = []

    def default_cache_dir(self) -> Path:
        """``$SAGAN_AD_CACHE`` or ``~/.cache/sagan_ad``, then one folder per class and root."""
        return default_cache_root() / f"{type(self).__name__}-{self._root_digest}"

    @property
    def split_counts(self) -> dict[str, int]:
        """The images per part of a drawn split: ``split.counts`` over the release's defaults."""
        return {**self.default_counts, **(self.split.counts or {})}

    @property
    def split_path(self) -> Path:
        """Where the split actually used is written: ``<cache.dir>/data.json``."""
        return self.cache_dir / "data.json"

    @abstractmethod
    def records(self) -> list[Record]:
        """Every labelled image of the release (labels 0 / 1), with boxes and metadata."""

    def assign(self, records: dict[str, Record]) -> MedADSplit:
        """The split: ``split.file`` if given, else drawn with `protocol_split`."""
        if self.split_file is not None:
            split = read_medad_split(self.split_file)
            unknown = [n for part in protocol_parts(split) for n in part if n not in records]
            if unknown:
                raise SplitError(
                    f"split.file={str(self.split_file)!r} names {len(unknown)} image(s) that "
                    f"are not in {self.root}: {', '.join(unknown[:10])}"
                )
            # The labels come from the release, not from the split file: a split file of
            # another release version, or with parts swapped, would otherwise relabel images.
            wrong = [
                f"{name} ({part}, but labelled {'abnormal' if records[name].label else 'normal'})"
                for part in SPLIT_PARTS
                for name in getattr(split, part)
                if records[name].label != int(part.endswith("abnormal"))
            ]
            if wrong:
                raise SplitError(
                    f"split.file={str(self.split_file)!r} puts {len(wrong)} image(s) in a part "
                    f"of the other class than {self.root} gives them: {', '.join(wrong[:10])}; "
                    "use a split file written for this release (and these labels)"
                )
            return split
        normal = [name for name, r in records.items() if r.label == 0]
        abnormal = [name for name, r in records.items() if r.label == 1]
        return protocol_split(
            normal, abnormal, self.split_counts, self.seed, str(self.root), groups=self.groups
        )

    def group_keys(
        self, records: dict[str, Record], headers: dict[str, dict[str, str]] | None = None
    ) -> dict[str, str]:
        """The group of each image by ``group_by`` (see `group_values`; ``headers``: the DICOM
        header values already read, by name); without it, the data set's own patient key
        (empty: a group of its own)."""
        if self.split.group_by is None:  # compared as leakage checks compare: " P8" is "P8"
            return {name: canonical_id(r.group) for name, r in records.items()}
        return group_values(
            self.split.group_by,
            {name: r.metadata for name, r in records.items()},
            {name: r.path for name, r in records.items()},
            self.cache_dir / "headers.json",
            self.settings.force_dicom,
            type(self).__name__,
            headers,
        )

    def unlabeled_set(self, split: MedADSplit) -> tuple[list[str], list[int]]:
        """The unlabeled training set of the protocol (see `build_unlabeled`)."""
        size = (
            len(split.known_normal)
            if self.split.unlabeled_size is None
            else self.split.unlabeled_size
        )
        return build_unlabeled(
            split.pool_normal, split.pool_abnormal, size, self.split.anomaly_ratio
        )

    def split_json(self, split: MedADSplit) -> dict:
        """The content of the written ``data.json``."""
        return split.to_json()

    def _fail_or_skip(self, problems: list[str], what: str) -> None:
        if not problems:
            return
        if self.on_error == "raise":
            raise ImageReadError(
                f"{type(self).__name__}: {len(problems)} {what}; fix them or set "
                f"on_error='skip' to leave those images out:\n  {listing(problems)}"
            )
        log.warning(
            "%s: skipped %d %s:\n  %s",
            type(self).__name__,
            len(problems),
            what,
            "\n  ".join(problems),
        )

    def _existing(self, records: list[Record]) -> dict[str, Record]:
        check_disjoint({"images": [r.name for r in records]}, source=str(self.root))
        # Two names of one file (a link, a CSV row written two ways, a file given two roles)
        # would put the same image on both sides of the split.
        seen: dict[tuple, Record] = {}
        missing = []
        for record in records:
            # One stat per file, as a hospital export has many: a regular file is known by its
            # device and inode; anything else by `file_identity`, which also resolves the path.
            try:
                found = os.stat(record.path)
            except (OSError, ValueError):
                found = None
            if found is not None and stat.S_ISREG(found.st_mode):
                identity: tuple = ("inode", found.st_dev, found.st_ino)
            else:
                identity = file_identity(record.path)
                missing.append(record)
            other = seen.setdefault(identity, record)
            if other is not record:
                raise InputError(
                    f"{record.path} is both {other.name!r} and {record.name!r}: the same file "
                    "may appear once (one role, one class): remove one of them"
                )
        self._fail_or_skip(
            [f"{r.name}: {r.path} {missing_reason(r.path)}" for r in missing],
            "listed image(s) whose file does not exist (or is not a file)",
        )
        gone = {id(r) for r in missing}
        return {r.name: r for r in records if id(r) not in gone}

    def require_root(self) -> None:
        """Raise a clear error when ``root`` is not a folder."""
        if not self.root.is_dir():
            raise MissingFileError(
                f"data.root={str(self.root)!r} is not a folder: point it at the "
                f"{type(self).__name__} release folder"
            )

    def prepare_data(self) -> None:
        # Lightning runs this once per node before `setup` runs on every process: decoding
        # here fills the cache once, so that the ranks of a multi-GPU run only read it.
        if record_of(self).read(state=False) is None:
            self.load()

    def listed_folders(self) -> list[Path]:
        """The folders whose every file the setup record's digest covers: the release folder."""
        return [self.root] if self.root.is_dir() else []

    def load(self) -> SplitData:
        listed = self.records()
        # Taken before any file is read: a file changed while this setup runs is then seen.
        self._read_files = file_signatures([r.path for r in listed])
        records = self._existing(listed)
        cache = self.image_cache(self.cache_dir / "images")
        early, headers, unreadable = None, None, 0
        metadata = {name: r.metadata for name, r in records.items()}
        if self.decodes_every_record and from_headers(self.split.group_by, metadata):
            # Every file is decoded whatever the split: decode them now, reading the group's
            # header value from the same read of each file, instead of a header pass first.
            names = list(records)
            keyword = (self.split.group_by,)
            early = cache.load([records[n].path for n in names], self.on_error, keyword)
            kept = [names[i] for i in early.kept]
            headers = dict(zip(kept, early.headers, strict=True))
            unreadable = len(records) - len(kept)
            records = {name: records[name] for name in kept}
        self.groups = self.group_keys(records, headers)
        split = self.assign(records)
        unlabeled = self.unlabeled_set(split)
        used = list(dict.fromkeys(split.known_normal + unlabeled[0] + split_tests(split)))
        if early is None:
            cached = cache.load([records[n].path for n in used], on_error=self.on_error)
        else:
            row_of = {name: row for row, name in enumerate(headers)}
            cached = early.select([row_of[n] for n in used])
        protect([records[n].path for n in used], "an image of the data")
        protect(self.listed_folders(), "a data folder read by this command")
        rows: dict[str, int] = {}
        bad_boxes = []
        for row, i in enumerate(cached.kept):
            record = records[used[i]]
            problem = None
            if record.boxes is not None and len(record.boxes):
                problem = box_problem(record.boxes, cached.original_sizes[row])
            if problem is None:
                rows[record.name] = row
            else:
                bad_boxes.append(f"{record.name} ({record.path}): {problem}")
        self._fail_or_skip(bad_boxes, "image(s) with boxes outside the image")
        split = without_names(split, set(used) - set(rows))
        self.identities = {
            name: {
                **cached.identities[row],
                **group_identity(self.split.group_by, self.groups.get(name, "")),
            }
            for name, row in rows.items()
        }
        # Copies by decoded pixels too (a test film re-encoded into training); the answer is
        # kept beside the cache, so a second setup of unchanged data does not search again.
        twins = remembered_pixel_twins(
            cached.images[list(rows.values())], list(rows), self.cache_dir / "twins.json"
        )
        for name, first in twins.items():
            self.identities[name][SAME_PIXELS] = first
        self._known_names = list(split.known_normal)
        written = self.split_json(split)
        make_folder(self.cache_dir)
        # A split file given back from the cache folder is the record already: never rewrite
        # the user's input (the run folder's data.json records what was used).
        given = self.split_file is not None and file_identity(self.split_file) == file_identity(
            self.split_path
        )
        if not given:
            atomic_write_text(self.split_path, json.dumps(written, indent=1))
        left_out = len(used) - len(rows) + unreadable
        self._manifest = {
            "source": self.split_source()
            + (f"; {left_out} unreadable image(s) left out (on_error='skip')" if left_out else ""),
            "split": written,
        }
        unlabeled_names, unlabeled_labels = (
            [n for n in unlabeled[0] if n in rows],
            [lab for n, lab in zip(*unlabeled, strict=True) if n in rows],
        )

        def image_set(names: list[str], labels: list[int]) -> ImageSet | None:
            if not names:
                return None
            index = [rows[n] for n in names]
            return ImageSet(
                torch.from_numpy(cached.images[index]),
                labels,
                names,
                metadata=[{**records[n].metadata, **cached.tags[rows[n]]} for n in names],
                boxes=[
                    np.zeros((0, 4), np.float32)
                    if records[n].boxes is None
                    else np.asarray(records[n].boxes, np.float32).reshape(-1, 4)
                    for n in names
                ],
                original_sizes=[cached.original_sizes[rows[n]] for n in names],
            )

        tests = split_tests(split)
        known = image_set(split.known_normal, [0] * len(split.known_normal))
        if known is None:
            raise SplitError(f"{type(self).__name__}: no readable known-normal image is left")
        mixture = image_set(unlabeled_names, unlabeled_labels)
        if mixture is None:
            raise SplitError(f"{type(self).__name__}: no readable unlabeled image is left")
        return SplitData(
            known_normal=known,
            unlabeled=mixture,
            test=image_set(tests, [0] * len(split.test_normal) + [1] * len(split.test_abnormal)),
        )

    def split_source(self) -> str:
        """One line saying where the split comes from (see `split_manifest`)."""
        if self.split_file is not None:
            where = f"read from {self.split_file}"
        else:
            grouping = f", split.group_by={self.split.group_by!r}" if self.split.group_by else ""
            if self.split.group_by is None and any(self.groups.values()):
                grouping = ", grouped by the data set's patient key"
            where = (
                f"drawn by {type(self).__name__} from {self.root} with seed={self.seed}, "
                f"split.counts={self.split_counts}{grouping} (seeded hash of each image or "
                "group)"
            )
        size = (
            "the number of known normals"
            if self.split.unlabeled_size is None
            else self.split.unlabeled_size
        )
        return (
            f"{where}; unlabeled set: the first names of each pool, split.anomaly_ratio="
            f"{self.split.anomaly_ratio}, split.unlabeled_size={size}; "
            f"{self._validation_source(self._known_names)}"
        )

    def _grouped(self, known_names: list[str]) -> bool:
        """Whether the hold-out goes by group: some group has several known normals."""
        return shares_groups([self.groups.get(n, "") for n in known_names])

    def _validation_source(self, known_names: list[str]) -> str:
        if self.split.val_fraction == 0:
            return "no validation set"
        grouping = " by group" if self._grouped(known_names) else ""
        return (
            f"validation: split.val_fraction={self.split.val_fraction} of the known normals "
            f"held out{grouping} (seed={self.seed}) with pseudo anomalies"
        )

    def holdout(self, known: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """The validation hold-out of the known normals: by whole groups when some group has
        several known normals, so no patient is in both training and validation
        (`grouped_holdout`)."""
        groups = [self.groups.get(name, "") for name in known.names]
        return grouped_holdout(groups, self.split.val_fraction, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.known_normal is None:
            set_up_recorded(self, lambda: self._set_up(stage))

    def _set_up(self, stage: str | None) -> None:
        super().setup(stage)
        # Known normals that also serve as the unlabeled set (FolderDataModule without an
        # unlabeled source) must not bring the validation images back into training.
        held = set(self.sides()["validation"])
        if held & set(self.unlabeled.names):
            keep = [i for i, name in enumerate(self.unlabeled.names) if name not in held]
            self.unlabeled = self.unlabeled.subset(np.array(keep, dtype=np.int64))
        check_leakage(
            self.sides(),
            self.identities,
            self.split.leakage,
            type(self).__name__,
            group_by=self.split.group_by,
            roles_given=self.roles_given or self.split_file is not None,
        )
