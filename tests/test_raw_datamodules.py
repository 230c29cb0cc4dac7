"""RSNA, VinDr-CXR, LAG and folder DataModules on fake raw trees in the release layouts."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chest_phantom, mark, tiny_networks, write_dicom
from conftest import film as film_png
from PIL import Image

from sagan_ad import (
    FolderDataModule,
    ImageReadError,
    LAGDataModule,
    RSNADataModule,
    SplitError,
    VinDrCXRDataModule,
    scale_boxes,
)

SIZE = 40  # original side of the fake films


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def film(i: int) -> np.ndarray:
    return mark(chest_phantom(SIZE, SIZE) // (1 + i % 3), i).astype(np.uint16)


def rsna_tree(root: Path, normal: int = 8, opacity: int = 6, other: int = 3) -> Path:
    info, labels = [], []
    for i in range(normal + opacity + other):
        pid = f"p{i:03d}"
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            (film(i) // 16).astype(np.uint8),
            ViewPosition="PA" if i % 2 else "AP",
        )
        if i < normal:
            info.append([pid, "Normal"])
            labels.append([pid, "", "", "", "", 0])
        elif i < normal + opacity:
            # Two boxes per opacity patient: one row each in both CSVs.
            for k in range(2):
                info.append([pid, "Lung Opacity"])
                labels.append([pid, 2 + k, 3, 10, 12 + k, 1])
        else:
            info.append([pid, "No Lung Opacity / Not Normal"])
            labels.append([pid, "", "", "", "", 0])
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], info)
    write_csv(
        root / "stage_2_train_labels.csv",
        ["patientId", "x", "y", "width", "height", "Target"],
        labels,
    )
    return root


RSNA_COUNTS = {
    "known_normal": 4,
    "pool_normal": 2,
    "pool_abnormal": 4,
    "test_normal": 2,
    "test_abnormal": 2,
}


def rsna(root: Path, tmp_path: Path, split: dict | None = None, **kwargs) -> RSNADataModule:
    """RSNA on a fake tree: `split` settings are merged into these tests' own."""
    options = dict(
        image_size=16,
        batch_size=2,
        cache={"dir": tmp_path / "cache", "workers": 1, "progress": False},
    )
    split = {"counts": RSNA_COUNTS, "val_fraction": 0.0, "anomaly_ratio": 0.5, **(split or {})}
    return RSNADataModule(root, split=split, **{**options, **kwargs})


def test_rsna_class_rules_counts_boxes_and_split_file(tmp_path):
    dm = rsna(rsna_tree(tmp_path / "rsna"), tmp_path, dicom_tags=["ViewPosition"])
    dm.setup()
    counts = dm.summary()
    assert counts["train/known_normal"] == 4 and counts["train/unlabeled"] == 4
    assert counts["train/unlabeled_abnormal"] == 2
    assert counts["test/normal"] == 2 and counts["test/abnormal"] == 2
    split = json.loads(dm.split_path.read_text())
    parts = [
        split["train"]["0"],
        split["train"]["unlabeled"]["0"],
        split["train"]["unlabeled"]["1"],
        split["test"]["0"],
        split["test"]["1"],
    ]
    names = [n for part in parts for n in part]
    assert len(names) == len(set(names)) == 14  # disjoint; "Not Normal" patients left out
    ids = {int(n[1:4]) for n in names}
    assert ids == set(range(14))
    assert all(int(n[1:4]) < 8 for n in split["train"]["0"] + split["test"]["0"])
    assert all(int(n[1:4]) >= 8 for n in split["test"]["1"])
    for name, label, boxes, size, meta in zip(
        dm.test.names,
        dm.test.labels,
        dm.test.boxes,
        dm.test.original_sizes,
        dm.test.metadata,
        strict=True,
    ):
        assert size == (SIZE, SIZE)
        assert meta["class"] == ("Lung Opacity" if label else "Normal")
        assert meta["ViewPosition"] in ("AP", "PA")
        if label:
            np.testing.assert_array_equal(boxes, [[2, 3, 12, 15], [3, 3, 13, 16]])
            np.testing.assert_allclose(
                scale_boxes(boxes, size, 16)[0], np.array([2, 3, 12, 15]) * 16 / SIZE
            )
        else:
            assert boxes.shape == (0, 4), name


def test_split_is_seeded_and_repeatable_from_the_split_file(tmp_path):
    root = rsna_tree(tmp_path / "rsna")
    a, b = rsna(root, tmp_path / "a", seed=3), rsna(root, tmp_path / "b", seed=3)
    c = rsna(root, tmp_path / "c", seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert a.split_path.read_text() == b.split_path.read_text() != c.split_path.read_text()
    again = rsna(root, tmp_path / "d", seed=99, split={"file": c.split_path})
    again.setup()
    assert again.test.names == c.test.names
    assert torch.equal(again.test.images, c.test.images)


def test_default_counts_are_the_medad_table_and_too_few_images_are_explained(tmp_path):
    assert RSNADataModule.default_counts["pool_abnormal"] == 5012
    assert VinDrCXRDataModule.default_counts["pool_normal"] == 5606
    assert LAGDataModule.default_counts["test_abnormal"] == 811
    with pytest.raises(SplitError, match="needs 8851 normal images but it has 8"):
        rsna(rsna_tree(tmp_path / "rsna"), tmp_path, split={"counts": None}).setup()


def test_rsna_missing_files_and_boxes_outside_the_image(tmp_path, caplog):
    root = rsna_tree(tmp_path / "rsna")
    missing = root / "stage_2_train_images" / "p001.dcm"
    kept = missing.read_bytes()
    missing.unlink()
    with pytest.raises(ImageReadError, match="p001.dcm does not exist"):
        rsna(root, tmp_path).setup()
    missing.write_bytes(kept)
    labels_csv = root / "stage_2_train_labels.csv"
    labels_csv.write_text(labels_csv.read_text().replace("p010,2,3,10,12", "p010,35,3,10,12"))
    # Every abnormal image is decoded: 5 in the all-abnormal unlabeled set, 1 in test.
    counts = {**RSNA_COUNTS, "known_normal": 3, "pool_abnormal": 5, "test_abnormal": 1}
    split = {"counts": counts, "anomaly_ratio": 1.0, "unlabeled_size": 5}
    with pytest.raises(ImageReadError, match=r"p010.dcm .*outside the 40x40"):
        rsna(root, tmp_path, split=split).setup()
    missing.unlink()
    with caplog.at_level(logging.WARNING):
        dm = rsna(root, tmp_path, on_error="skip", split=split)
        dm.setup()
    assert "p001.dcm" in caplog.text and "p010.dcm" in caplog.text
    assert "p010.dcm" not in dm.split_path.read_text()
    assert "p001.dcm" not in dm.split_path.read_text()
    assert len(dm.unlabeled) == 4  # p010 left out of the all-abnormal unlabeled set


def vindr_tree(root: Path) -> Path:
    rows = []
    for i in range(12):
        image_id = f"v{i:02d}"
        pixels = (4095 - film(i)).astype(np.uint16)
        write_dicom(
            root / "train" / f"{image_id}.dicom",
            pixels,
            "MONOCHROME1",
            bits_stored=12,
            rle=i % 2 == 0,
        )
        for rad in ("R1", "R2", "R3"):
            if i < 7 or (i == 7 and rad != "R3"):
                rows.append([image_id, "No finding", 14, rad, "", "", "", ""])
            else:
                rows.append([image_id, "Nodule/Mass", 8, rad, 5, 6, 20 + (rad == "R2"), 30])
    write_csv(
        root / "train.csv",
        ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"],
        rows,
    )
    return root


def test_vindr_normal_only_when_every_radiologist_says_no_finding(tmp_path):
    counts = {
        "known_normal": 4,
        "pool_normal": 2,
        "pool_abnormal": 3,
        "test_normal": 1,
        "test_abnormal": 2,
    }
    dm = VinDrCXRDataModule(
        vindr_tree(tmp_path / "vindr"),
        image_size=16,
        split={"counts": counts, "val_fraction": 0.0},
        cache={"dir": tmp_path / "cache", "workers": 2, "progress": False},
    )
    dm.setup()
    split = json.loads(dm.split_path.read_text())
    abnormal = split["train"]["unlabeled"]["1"] + split["test"]["1"]
    # v07 has one radiologist with a finding: abnormal.
    assert sorted(abnormal) == [f"v{i:02d}.dicom" for i in range(7, 12)]
    for label, boxes, meta in zip(dm.test.labels, dm.test.boxes, dm.test.metadata, strict=True):
        if label:
            assert meta["findings"] == "Nodule/Mass"
            assert len(boxes) in (1, 3)  # every radiologist's box is kept
            assert boxes[:, 2].max() <= 21
        else:
            assert meta["findings"] == "" and len(boxes) == 0
        assert meta["radiologists"] == "R1;R2;R3"
    # MONOCHROME1 films come out with a bright spine, compressed or not.
    images = dm.known_normal.images.float()
    assert (images[..., 7:9].mean() > images[..., 1:4].mean() + 50).item()


def lag_tree(root: Path, normal: int = 8, glaucoma: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for folder, n in (("non_glaucoma", normal), ("suspicious_glaucoma", glaucoma)):
        for i in range(n):
            rgb = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            sub = "image" if i % 2 else "image/batch2"
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / folder / sub / f"{folder[:3]}{i}.jpg")
            (root / folder / "attention_map").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[..., 0]).save(
                root / folder / "attention_map" / f"{folder[:3]}{i}.jpg"
            )
    return root


LAG_COUNTS = {
    "known_normal": 4,
    "pool_normal": 2,
    "pool_abnormal": 4,
    "test_normal": 2,
    "test_abnormal": 2,
}


def test_lag_classes_from_folders_attention_maps_excluded(tmp_path):
    dm = LAGDataModule(
        lag_tree(tmp_path / "lag"),
        image_size=16,
        in_channels=3,
        split={"counts": LAG_COUNTS, "val_fraction": 0.0},
        cache={"dir": tmp_path / "cache", "workers": 1, "progress": False},
    )
    dm.setup()
    names = dm.known_normal.names + dm.unlabeled.names + dm.test.names
    assert not any("attention" in n for n in names)
    assert all(n.startswith("non_glaucoma/") for n in dm.known_normal.names)
    assert dm.test.images.shape[1] == 3
    for name, meta in zip(dm.test.names, dm.test.metadata, strict=True):
        assert meta["attention_map"].endswith("attention_map/" + Path(name).name)


def test_lag_empty_class_folder_is_an_error(tmp_path):
    root = tmp_path / "lag"
    lag_tree(root)
    for path in (root / "suspicious_glaucoma").rglob("*.jpg"):
        if "attention" not in str(path):
            path.unlink()
    with pytest.raises(ImageReadError, match="suspicious_glaucoma has no images"):
        LAGDataModule(root, split={"counts": LAG_COUNTS}, cache={"dir": tmp_path / "c"}).setup()


def test_folder_datamodule_from_folders_and_csv(tmp_path):
    normals = tmp_path / "normals"
    normals.mkdir()
    for i in range(6):
        pixels = np.full((20, 20), (60 + i) * 256, np.uint16)
        pixels[:, :10] += 256  # one grey above and below: a uniform film is refused as blank
        pixels[:, 10:] -= 256
        Image.fromarray(pixels).save(normals / f"n{i}.png")
    write_dicom(tmp_path / "ward" / "u0.dcm", chest_phantom(), bits_stored=12)
    write_dicom(tmp_path / "ward" / "sub" / "u1.dcm", chest_phantom(), bits_stored=12)
    write_dicom(tmp_path / "ward" / "IM0002", chest_phantom(), bits_stored=12)  # PACS export
    (tmp_path / "ward" / "notes.txt").write_text("not an image")
    test = tmp_path / "test"
    test.mkdir()
    Image.fromarray(film_png(200, (20, 20))).save(test / "t0.png")
    write_csv(test / "abnormal.csv", ["path", "site"], [["t0.png", "A"]])
    Image.fromarray(film_png(10, (20, 20))).save(test / "t1.png")
    write_csv(test / "normal.csv", ["path", "site"], [["t1.png", "B"]])
    dm = FolderDataModule(
        normals,
        unlabeled=tmp_path / "ward",
        test_normal=test / "normal.csv",
        test_abnormal=test / "abnormal.csv",
        image_size=8,
        split={"val_fraction": 0.0},
        cache={"dir": tmp_path / "cache", "workers": 1, "progress": False},
    )
    dm.setup()
    assert len(dm.known_normal) == 6 and dm.unlabeled.labels == [-1, -1, -1]
    assert dm.test.labels == [0, 1] and [m["site"] for m in dm.test.metadata] == ["B", "A"]
    assert dm.known_normal.images[0].float().mean() == pytest.approx(60 * 256 / 65535 * 255, abs=1)
    split = json.loads(dm.split_path.read_text())
    assert split["train"]["unlabeled"]["unknown"] == [
        "unlabeled/IM0002",
        "unlabeled/sub/u1.dcm",
        "unlabeled/u0.dcm",
    ]
    # Without an unlabeled pool the known normals serve as the unlabeled set.
    alone = FolderDataModule(
        normals, image_size=8, cache={"dir": tmp_path / "cache", "progress": False}
    )
    alone.setup()
    # Less the validation hold-out, which is never trained on.
    assert alone.unlabeled.names == alone.known_normal.names and alone.test is None
    assert len(alone.known_normal) == 4 and len(alone.val) == 2 * 2
    with pytest.raises(ValueError, match=r"the same file may appear once \(one role"):
        FolderDataModule(normals, test_normal=normals, cache={"dir": tmp_path / "c"}).setup()


def test_trainer_fits_and_tests_on_a_raw_release_with_the_cache_filled_once(tmp_path, monkeypatch):
    import lightning as L

    import sagan_ad.data.caching.cache as cache_module
    from sagan_ad import SAGAN

    decoded = []
    real = cache_module.read_image
    monkeypatch.setattr(
        cache_module, "read_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k)
    )
    dm = rsna(rsna_tree(tmp_path / "rsna"), tmp_path, image_size=32, split={"val_fraction": 0.25})
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=2)
    trainer = L.Trainer(
        max_epochs=-1,
        check_val_every_n_epoch=None,
        val_check_interval=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, dm)
    trainer.test(model, dm)
    assert model.iteration == 2
    assert len(decoded) == len(set(decoded)) == 12  # prepare_data decoded; setup only read
