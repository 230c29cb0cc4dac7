"""RSNA Pneumonia Detection Challenge (Kaggle release) as a protocol DataModule."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import numpy as np

from sagan_ad.data.messages import listing
from sagan_ad.data.modules.raw import RawDataModule, Record
from sagan_ad.data.reading.tables import number, read_csv
from sagan_ad.errors import InputError

LAYOUT = (
    "the Kaggle RSNA release: stage_2_train_images/<patientId>.dcm, "
    "stage_2_detailed_class_info.csv (patientId,class) and stage_2_train_labels.csv "
    "(patientId,x,y,width,height,Target)"
)
NORMAL, ABNORMAL = "Normal", "Lung Opacity"
CLASSES = (NORMAL, ABNORMAL, "No Lung Opacity / Not Normal")


def _target(text: str) -> int | None:
    """A ``Target`` cell as 0 or 1 (``"1"``, or ``"1.0"`` as pandas writes it); else ``None``."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


class RSNADataModule(RawDataModule):
    """RSNA Pneumonia from the raw Kaggle release, split as in Med-AD.

    Normal = class ``Normal``, abnormal = ``Lung Opacity``; ``No Lung Opacity / Not Normal`` is
    left out. The opacity boxes of ``stage_2_train_labels.csv`` (``x, y, width, height``) become
    ``x0, y0, x1, y1`` boxes in original pixels; the class is carried as metadata ``class``.
    ``patientId`` is the patient key: the split, the validation hold-out and the leakage check
    keep each patient on one side (``group_by`` chooses another key).
    Default counts (Med-AD): 3851 known normals, pools of 4000 normal / 5012 abnormal, test
    1000 / 1000. Arguments: those of
    [`RawDataModule`][sagan_ad.data.modules.raw.RawDataModule], `FileDataModule` and
    `AnomalyDataModule`.

    Examples:
        >>> dm = RSNADataModule("rsna-pneumonia-detection-challenge",
        ...                     dicom_tags=["ViewPosition", "PatientSex"])  # doctest: +SKIP
        >>> dm.setup(); dm.summary()["test/abnormal"]  # doctest: +SKIP
        1000
    """

    default_counts: ClassVar[dict[str, int]] = {
        "known_normal": 3851,
        "pool_normal": 4000,
        "pool_abnormal": 5012,
        "test_normal": 1000,
        "test_abnormal": 1000,
    }

    def records(self) -> list[Record]:
        self.require_root()
        classes: dict[str, str] = {}
        info = self.root / "stage_2_detailed_class_info.csv"
        unknown: Counter[str] = Counter()
        for line, row in enumerate(read_csv(info, ("patientId", "class"), LAYOUT), start=2):
            pid, cls = row["patientId"], row["class"]
            if cls not in CLASSES:
                unknown[cls] += 1  # a class left out unseen would shrink a class silently
            if classes.setdefault(pid, cls) != cls:
                raise InputError(
                    f"{info}, line {line}: patient {pid} is both {classes[pid]!r} and {cls!r}"
                )
        if unknown:
            found = ", ".join(f"{cls!r} ({n} rows)" for cls, n in unknown.most_common(5))
            raise InputError(
                f"{info}: unknown class value(s) {found}; the release's classes are "
                f"{', '.join(repr(c) for c in CLASSES)} (spelt exactly): correct the column"
            )
        boxes: dict[str, list[list[float]]] = {}
        columns = ("patientId", "x", "y", "width", "height", "Target")
        labels = self.root / "stage_2_train_labels.csv"
        bad = []
        for line, row in enumerate(read_csv(labels, columns, LAYOUT), start=2):
            target = _target(row["Target"])
            if target is None:
                bad.append(f"line {line}: Target {row['Target']!r} (must be 0 or 1)")
            elif target == 1:
                x, y = number(row["x"]), number(row["y"])
                w, h = number(row["width"]), number(row["height"])
                boxes.setdefault(row["patientId"], []).append([x, y, x + w, y + h])
        # The two files describe one truth: a box is a lung opacity and vice versa; otherwise
        # boxes would be lost (localization scored without them) or sit on normal films.
        bad += [
            f"patient {pid}: {len(boxes[pid])} opacity box(es) (Target 1) but class "
            f"{classes[pid]!r}"
            for pid in sorted(boxes)
            if pid in classes and classes[pid] != ABNORMAL
        ]
        bad += [
            f"patient {pid}: class {ABNORMAL!r} but no box (no row with Target 1)"
            for pid, cls in sorted(classes.items())
            if cls == ABNORMAL and pid not in boxes
        ]
        if bad:
            raise InputError(
                f"{labels} and {info.name} disagree or hold invalid values; correct them:\n  "
                + listing(bad)
            )
        images = self.root / "stage_2_train_images"
        records = []
        for pid, cls in sorted(classes.items()):
            if cls not in (NORMAL, ABNORMAL):
                continue
            records.append(
                Record(
                    name=f"{pid}.dcm",
                    path=images / f"{pid}.dcm",
                    label=int(cls == ABNORMAL),
                    boxes=np.array(boxes.get(pid, []), np.float64).reshape(-1, 4),
                    metadata={"class": cls},
                    group=pid,
                )
            )
        return records
