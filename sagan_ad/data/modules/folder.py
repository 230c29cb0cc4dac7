"""A user's own images: folders or CSV lists of known normals, unlabeled and test images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sagan_ad.data.modules.raw import RawDataModule, Record
from sagan_ad.data.reading.discovery import discover_images
from sagan_ad.data.reading.tables import read_csv
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.errors import InputError, MissingFileError

CSV_LAYOUT = "a CSV with a 'path' column (relative to the CSV's folder); other columns = metadata"


def _source_records(source: Path, role: str, label: int, force_dicom: bool) -> list[Record]:
    if source.suffix.lower() == ".csv":
        records = []
        for line, row in enumerate(read_csv(source, ("path",), CSV_LAYOUT), start=2):
            if not row["path"]:
                # Path("") is the CSV's own folder: it would be reported as a missing image.
                raise InputError(f"{source}, line {line}: the path is empty; {CSV_LAYOUT}")
            path = Path(row["path"])
            path = path if path.is_absolute() else source.parent / path
            metadata = {k: v for k, v in row.items() if k != "path"}
            records.append(Record(f"{role}/{row['path']}", path, label, metadata=metadata))
        return records
    if not source.is_dir():
        raise MissingFileError(f"{role}={str(source)!r} is neither a folder nor a .csv file")
    found = discover_images(source, force_dicom=force_dicom)
    found.log_skipped(source)
    prefix = os.path.join(str(source), "")

    def name(path: Path) -> str:
        # What Path.relative_to gives, without its cost on large folders.
        text = str(path)
        if text.startswith(prefix):
            return text[len(prefix) :].replace(os.sep, "/")
        return path.relative_to(source).as_posix()

    return [Record(f"{role}/{name(p)}", p, label) for p in found.images]


class FolderDataModule(RawDataModule):
    """Your own data: known normals, and optionally an unlabeled pool and labelled test images.

    Each source is a folder (images found recursively: PNG / JPEG / TIFF / BMP at 8 or 16 bit,
    DICOM; hidden and system files are skipped and counted in one warning) or a CSV with a
    ``path`` column (relative to the CSV's folder; the other columns are carried as metadata,
    and one of them can be ``group_by``). Without ``unlabeled`` the known normals also serve as
    the unlabeled set (plain one-class training), less those held out for validation. The roles
    are taken as given (no drawing); the same file in two roles is refused, and a patient in
    two (``group_by``, PatientID) is caught by the leakage check. The split used is written to
    ``<cache.dir>/data.json``.

    The other arguments are those of [`RawDataModule`][sagan_ad.data.modules.raw.RawDataModule],
    and so those of `FileDataModule` and `AnomalyDataModule`, passed on as ``**kwargs``; of
    ``split`` a folder takes ``val_fraction``, ``group_by`` (a CSV column or a DICOM keyword,
    which also makes the validation hold-out keep patients whole) and ``leakage``: nothing is
    drawn, so ``counts``, ``file``, ``anomaly_ratio`` and ``unlabeled_size`` are refused.

    Args:
        normal: known normals (folder or CSV).
        unlabeled: unlabeled pool, labels unknown (folder or CSV).
        test_normal: normal test images (folder or CSV).
        test_abnormal: abnormal test images (folder or CSV).
        **kwargs: the arguments of `RawDataModule` (but its split options), `FileDataModule`
            and `AnomalyDataModule`.

    Examples:
        >>> dm = FolderDataModule("normals/", unlabeled="ward_2024/",
        ...                       test_abnormal="confirmed.csv")  # doctest: +SKIP
    """

    split_options = ("val_fraction", "group_by", "leakage")
    split_why = "the folders give the roles, nothing is drawn"
    decodes_every_record = True
    roles_given = True

    def __init__(
        self,
        normal: str | os.PathLike,
        unlabeled: str | os.PathLike | None = None,
        test_normal: str | os.PathLike | None = None,
        test_abnormal: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=normal, **kwargs)
        self.sources = {
            "normal": (Path(normal), 0),
            "unlabeled": (None if unlabeled is None else Path(unlabeled), -1),
            "test_normal": (None if test_normal is None else Path(test_normal), 0),
            "test_abnormal": (None if test_abnormal is None else Path(test_abnormal), 1),
        }
        self._roles: dict[str, list[str]] = {}

    def records(self) -> list[Record]:
        records = []
        self._roles = {}
        for role, (source, label) in self.sources.items():
            found = (
                []
                if source is None
                else _source_records(source, role, label, self.settings.force_dicom)
            )
            if source is not None:
                self._fail_or_skip(
                    [] if found else [f"{role}={str(source)!r} lists no images"], "empty source(s)"
                )
            records += found
            self._roles[role] = [r.name for r in found]
        return records

    def listed_folders(self) -> list[Path]:
        """The source folders (a CSV source is a setting: its size and time count, and the
        files it lists are checked one by one)."""
        return [source for source, _ in self.sources.values() if source and source.is_dir()]

    def assign(self, records: dict[str, Record]) -> MedADSplit:
        return MedADSplit(
            known_normal=[n for n in self._roles["normal"] if n in records],
            test_normal=[n for n in self._roles["test_normal"] if n in records],
            test_abnormal=[n for n in self._roles["test_abnormal"] if n in records],
            pool_normal=[n for n in self._roles["unlabeled"] if n in records],
        )

    def unlabeled_set(self, split: MedADSplit) -> tuple[list[str], list[int]]:
        if split.pool_normal:
            return split.pool_normal, [-1] * len(split.pool_normal)
        return split.known_normal, [0] * len(split.known_normal)

    def split_source(self) -> str:
        roles = ", ".join(
            f"{role}={str(source)!r}" for role, (source, _) in self.sources.items() if source
        )
        grouping = f", split.group_by={self.split.group_by!r}" if self.split.group_by else ""
        held = self._validation_source(self._known_names)
        return f"roles as given ({roles}{grouping}); {held}"

    def split_json(self, split: MedADSplit) -> dict:
        data = split.to_json()
        # The user's unlabeled images have unknown labels: not the Med-AD "0" pool.
        data["train"]["unlabeled"] = {"0": [], "1": [], "unknown": split.pool_normal}
        return data
