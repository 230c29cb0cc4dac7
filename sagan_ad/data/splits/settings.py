"""How a DataModule assigns images to training, validation and test, as one settings group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from sagan_ad.data.setting_groups import SettingsGroup, check_choice, check_numbers
from sagan_ad.data.splits.leakage import LeakageCheck
from sagan_ad.errors import InputError


@dataclass(frozen=True)
class SplitSettings(SettingsGroup):
    """Who goes where: the ``split`` of every DataModule (YAML ``data.split: {val_fraction: 0.2,
    group_by: PatientID}``, command line ``--data.split.val_fraction 0.2``).

    A DataModule takes the settings that mean something for its data (`split_options`) and
    refuses the others by name: a folder's roles are given, so it draws no ``counts``.

    Attributes:
        val_fraction: fraction of known normals held out for validation when the source has no
            labelled validation set; 0 disables validation.
        anomaly_ratio: fraction of abnormal images in the unlabeled set (0.6 in the paper).
        unlabeled_size: size of the unlabeled set (default: the number of known normals).
        counts: images per part of a drawn split (keys ``known_normal``, ``pool_normal``,
            ``pool_abnormal``, ``test_normal``, ``test_abnormal``); default: the Med-AD counts
            of the release.
        file: a split file (``data.json`` schema) to use instead of drawing one, or (Med-AD
            folders) instead of ``<root>/data.json``.
        group_by: what keeps images together on one side of the split, of the validation
            hold-out and of the leakage check: a column of the data (a CSV column, a metadata
            key) or a DICOM keyword read from each header (``PatientID``).
        leakage: what to do when a group, a PatientID or a SOPInstanceUID is on two sides
            (training, validation, test): ``"raise"`` (default), ``"warn"`` or ``"ignore"``.
        val_abnormal: Med-AD folders without a ``val`` entry: validate on the held-out known
            normals and this many abnormal images from the end of the unlabeled pool.
        val_balance_by: with ``val_abnormal``: a metadata column by which the abnormal
            validation images are balanced against the held-out normals.

    Examples:
        >>> SplitSettings(val_fraction=0.2, group_by="PatientID").changed()
        {'val_fraction': 0.2, 'group_by': 'PatientID'}
        >>> SplitSettings(val_fraction=1.0)
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: split.val_fraction=1.0: must be in [0, 1)
    """

    group: ClassVar[str] = "split"

    val_fraction: float = 0.1
    anomaly_ratio: float = 0.6
    unlabeled_size: int | None = None
    counts: dict[str, int] | None = None
    file: str | os.PathLike | None = None
    group_by: str | None = None
    leakage: LeakageCheck = "raise"
    val_abnormal: int = 0
    val_balance_by: str | None = None

    def __post_init__(self) -> None:
        check_numbers(
            whole={
                "split.unlabeled_size": self.unlabeled_size,
                "split.val_abnormal": self.val_abnormal,
            },
            real={
                "split.val_fraction": self.val_fraction,
                "split.anomaly_ratio": self.anomaly_ratio,
            },
        )
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"split.val_fraction={self.val_fraction}: must be in [0, 1)")
        if not 0.0 <= self.anomaly_ratio <= 1.0:
            raise InputError(f"split.anomaly_ratio={self.anomaly_ratio}: must be in [0, 1]")
        if self.unlabeled_size is not None and self.unlabeled_size < 1:
            raise InputError(f"split.unlabeled_size={self.unlabeled_size}: must be >= 1")
        if self.val_abnormal < 0:
            raise InputError(
                f"split.val_abnormal={self.val_abnormal}: must be >= 0 (0 = no carve-out)"
            )
        if self.counts is not None and not isinstance(self.counts, dict):
            raise InputError(
                f"split.counts={self.counts!r}: give images per part, such as "
                "{'known_normal': 100, 'pool_normal': 100, ...}"
            )
        check_choice("split", "leakage", self.leakage, ("raise", "warn", "ignore"))

    def refuse_outside(self, options: tuple[str, ...], owner: str, why: str = "") -> None:
        """Refuse, by name, a setting changed from its default that ``owner`` (a DataModule)
        does not take: only ``options`` mean something for its data."""
        for name, value in self.changed().items():
            if name not in options:
                reason = f" ({why})" if why else ""
                raise InputError(
                    f"split.{name}={value!r}: {owner} takes no split.{name}{reason}; its split "
                    f"settings are {', '.join(options)}"
                )
