"""RSNA Pneumonia Detection Challenge (Kaggle release) as a protocol DataModule."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sagan_ad.data.raw import RawDataModule, Record, number, read_csv

LAYOUT = (
    "the Kaggle RSNA release: stage_2_train_images/<patientId>.dcm, "
    "stage_2_detailed_class_info.csv (patientId,class) and stage_2_train_labels.csv "
    "(patientId,x,y,width,height,Target)"
)
NORMAL, ABNORMAL = "Normal", "Lung Opacity"


class RSNADataModule(RawDataModule):
    """RSNA Pneumonia from the raw Kaggle release, split as in Med-AD.

    Normal = class ``Normal``, abnormal = ``Lung Opacity``; ``No Lung Opacity / Not Normal`` is
    left out. The opacity boxes of ``stage_2_train_labels.csv`` (``x, y, width, height``) become
    ``x0, y0, x1, y1`` boxes in original pixels; the class is carried as metadata ``class``.
    ``patientId`` is the patient key: the split, the validation hold-out and the leakage check
    keep each patient on one side (``group_by`` chooses another key).
    Default counts (Med-AD): 3851 known normals, pools of 4000 normal / 5012 abnormal, test
    1000 / 1000. Arguments: see `RawDataModule`.

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
        for line, row in enumerate(read_csv(info, ("patientId", "class"), LAYOUT), start=2):
            pid, cls = row["patientId"], row["class"]
            if classes.setdefault(pid, cls) != cls:
                raise ValueError(
                    f"{info}, line {line}: patient {pid} is both {classes[pid]!r} and {cls!r}"
                )
        boxes: dict[str, list[list[float]]] = {}
        columns = ("patientId", "x", "y", "width", "height", "Target")
        for row in read_csv(self.root / "stage_2_train_labels.csv", columns, LAYOUT):
            if row["Target"] == "1":
                x, y = number(row["x"]), number(row["y"])
                w, h = number(row["width"]), number(row["height"])
                boxes.setdefault(row["patientId"], []).append([x, y, x + w, y + h])
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
