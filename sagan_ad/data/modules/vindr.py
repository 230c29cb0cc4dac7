"""VinDr-CXR (Kaggle / PhysioNet training release) as a protocol DataModule."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sagan_ad.data.messages import listing
from sagan_ad.data.modules.raw import RawDataModule, Record
from sagan_ad.data.reading.tables import number, read_csv
from sagan_ad.errors import InputError

LAYOUT = (
    "the VinDr-CXR release: train/<image_id>.dicom and train.csv "
    "(image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max)"
)
NO_FINDING = "No finding"
NO_FINDING_ID = 14


class VinDrCXRDataModule(RawDataModule):
    """VinDr-CXR from the raw training release, split as in Med-AD.

    ``train.csv`` has one row per finding per radiologist (three per image). An image is normal
    only when every row says ``No finding``; otherwise abnormal, and every finding row gives a
    box (all radiologists' boxes are kept, in original pixels). Metadata: ``findings`` (the
    distinct class names, ``;``-separated) and ``radiologists``. Many files are MONOCHROME1,
    12 to 16 bit, windowed or compressed: see `DicomOptions` and the ``sagan-ad[dicom]`` extra.
    Default counts (Med-AD): 4000 known normals, pools of 5606 normal / 3394 abnormal, test
    1000 / 1000. Arguments: those of
    [`RawDataModule`][sagan_ad.data.modules.raw.RawDataModule], `FileDataModule` and
    `AnomalyDataModule`.

    Examples:
        >>> dm = VinDrCXRDataModule("vinbigdata-chest-xray", image_size=64)  # doctest: +SKIP
        >>> dm.setup(); dm.test.boxes[-1].shape  # doctest: +SKIP
        (6, 4)
    """

    default_counts: ClassVar[dict[str, int]] = {
        "known_normal": 4000,
        "pool_normal": 5606,
        "pool_abnormal": 3394,
        "test_normal": 1000,
        "test_abnormal": 1000,
    }

    def records(self) -> list[Record]:
        self.require_root()
        columns = ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max")
        rows: dict[str, list[dict[str, str]]] = {}
        table = self.root / "train.csv"
        mismatched = []
        for line, row in enumerate(read_csv(table, columns, LAYOUT), start=2):
            # "No Finding" in another letter case is still no finding; class_id, where given,
            # must agree (14 is "No finding"), or a relabelled CSV would flip images silently.
            row["no_finding"] = "1" if row["class_name"].casefold() == NO_FINDING.casefold() else ""
            class_id = row.get("class_id", "")
            if class_id and (number(class_id) == NO_FINDING_ID) != bool(row["no_finding"]):
                mismatched.append(
                    f"line {line}: class_name {row['class_name']!r} with class_id {class_id}"
                )
            rows.setdefault(row["image_id"], []).append(row)
        if mismatched:
            raise InputError(
                f"{table}: class_name and class_id disagree (class_id {NO_FINDING_ID} is "
                f"{NO_FINDING!r}); correct them:\n  {listing(mismatched)}"
            )
        records = []
        for image_id, image_rows in sorted(rows.items()):
            findings = [r for r in image_rows if not r["no_finding"]]
            boxes = [[number(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")] for r in findings]
            path = self.root / "train" / f"{image_id}.dicom"
            if not path.is_file() and path.with_suffix(".dcm").is_file():
                path = path.with_suffix(".dcm")
            records.append(
                Record(
                    name=path.name,
                    path=path,
                    label=int(bool(findings)),
                    boxes=np.array(boxes, np.float64).reshape(-1, 4),
                    metadata={
                        "findings": ";".join(sorted({r["class_name"] for r in findings})),
                        "radiologists": ";".join(sorted({r["rad_id"] for r in image_rows})),
                    },
                )
            )
        return records
