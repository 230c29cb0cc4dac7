"""Real hospital folders (issue 14): junk-proof discovery, patient-level splits and leakage
checks, stable splits, the split manifest, bit depths, cache honesty and DICOM details, each on
fake trees in the release layouts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from conftest import chest_phantom, film, mark, write_dicom, write_medad_tree
from PIL import Image
from test_raw_datamodules import LAG_COUNTS, lag_tree, write_csv

import sagan_ad.data.caching.cache as cache_module
from sagan_ad import (
    DicomOptions,
    FolderDataModule,
    ImageCache,
    ImageReadError,
    LAGDataModule,
    MedADDataModule,
    PreprocessSettings,
    RSNADataModule,
    SplitError,
    SyntheticCXRDataModule,
)
from sagan_ad.atomic import _HOST
from sagan_ad.data import DecodeSettings, decode_image, load_image, protocol_split, read_dicom

QUIET = dict(image_size=16)


def quiet_cache(folder: Path, **settings) -> dict:
    """The cache settings of these tests: one worker, no progress bar."""
    return {"dir": folder, "workers": 1, "progress": False, **settings}


def rsna_tree(root: Path, normal: int, opacity: int, patient=None, start: int = 0) -> Path:
    """An RSNA release of tiny 8-bit DICOMs; ``patient(i)`` gives the PatientID tag of image i
    (default: its own patientId, as in the real release)."""
    info = ["patientId,class"]
    labels = ["patientId,x,y,width,height,Target"]
    for i in range(start, start + normal + opacity):
        pid = f"p{i:03d}"
        abnormal = i - start >= normal
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            (mark(chest_phantom(20, 20) // (1 + i % 3), i) // 16).astype(np.uint8),
            PatientID=patient(i) if patient else pid,
        )
        info.append(f"{pid},{'Lung Opacity' if abnormal else 'Normal'}")
        labels.append(f"{pid},2,3,5,5,1" if abnormal else f"{pid},,,,,0")
    for name, lines in (
        ("stage_2_detailed_class_info.csv", info),
        ("stage_2_train_labels.csv", labels),
    ):
        path = root / name
        old = path.read_text().splitlines()[1:] if path.is_file() else []
        path.write_text("\n".join(lines[:1] + old + lines[1:]) + "\n")
    return root


def rsna(
    root: Path, cache: Path, counts: dict[str, int], split: dict | None = None, **kwargs
) -> RSNADataModule:
    """RSNA on a fake tree: `split` settings are merged into these tests' own."""
    split = {"counts": counts, "val_fraction": 0.0, "anomaly_ratio": 0.5, **(split or {})}
    return RSNADataModule(root, **{**QUIET, "split": split, "cache": quiet_cache(cache), **kwargs})


def parts_of(split_json: dict) -> dict[str, str]:
    """Where each name sits in a written data.json."""
    places = {
        "known_normal": split_json["train"]["0"],
        "pool_normal": split_json["train"]["unlabeled"]["0"],
        "pool_abnormal": split_json["train"]["unlabeled"]["1"],
        "test_normal": split_json["test"]["0"],
        "test_abnormal": split_json["test"]["1"],
    }
    return {name: part for part, names in places.items() for name in names}


# ---------------------------------------------------------------- 1. discovery


def apple_double(root: Path) -> int:
    """Leave what a macOS copy and a Windows explorer leave beside every image."""
    count = 0
    for image in [p for p in root.rglob("*") if p.is_file()]:
        (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07 resource fork")
        count += 1
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "Thumbs.db").write_bytes(b"\0")
    return count + 2


def test_apple_double_files_change_nothing_in_lag_and_are_counted_once(tmp_path, caplog):
    root = lag_tree(tmp_path / "lag")
    options = dict(**QUIET, split={"counts": LAG_COUNTS, "val_fraction": 0.0})
    clean = LAGDataModule(root, **options, cache=quiet_cache(tmp_path / "a"))
    clean.setup()
    junk = apple_double(root)
    with caplog.at_level(logging.WARNING):
        copied = LAGDataModule(root, **options, cache=quiet_cache(tmp_path / "b"))
        copied.prepare_data()
        copied.setup()
    assert copied.split_manifest()["split"] == clean.split_manifest()["split"]
    assert torch.equal(copied.test.images, clean.test.images)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1  # once, although prepare_data and setup both list the files
    # Beside the 14 films and their 14 attention maps (the two at the top are not searched).
    assert f"skipped {junk - 2} hidden or system file(s)" in skipped[0]
    assert skipped[0].endswith("; read 14 image(s)")


def test_apple_double_files_are_not_images_of_a_folder_datamodule(tmp_path):
    normals = tmp_path / "normals"
    normals.mkdir()
    for i in range(4):
        Image.fromarray(film(40 * i, (12, 12))).save(normals / f"n{i}.png")
    apple_double(normals)
    (normals / ".git").mkdir()
    (normals / ".git" / "x.png").write_bytes(b"")
    dm = FolderDataModule(
        normals,
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    dm.setup()
    assert dm.known_normal.names == [f"normal/n{i}.png" for i in range(4)]


# ---------------------------------------------------------------- 2. patients


def dicom_folder(folder: Path, patients: list[str], start: int = 0) -> list[Path]:
    return [
        write_dicom(
            folder / f"im{start + i}.dcm",
            mark(chest_phantom(20, 20) // (1 + i % 3), start + i),
            bits_stored=12,
            PatientID=patient,
        )
        for i, patient in enumerate(patients)
    ]


def test_a_patient_in_training_and_test_is_refused_or_reported(tmp_path, caplog):
    dicom_folder(tmp_path / "normals", ["P1", "P2", "P3", "P4", "P5", "P6"])
    dicom_folder(tmp_path / "sick", ["P2", "P9"], start=10)

    def folder(**split) -> FolderDataModule:
        dm = FolderDataModule(
            tmp_path / "normals",
            test_abnormal=tmp_path / "sick",
            **QUIET,
            split={"val_fraction": 0.0, **split},
            cache=quiet_cache(tmp_path / "c"),
        )
        dm.setup()
        return dm

    with pytest.raises(SplitError) as info:
        folder()
    assert str(info.value).startswith(
        "FolderDataModule: 1 patient(s) or image(s) are on two sides of the split: PatientID "
        "'P2' in training (1) and test (1). A model validated or tested on a patient or image "
        "it trained on scores too well: the split you gave puts a patient (PatientID) in "
        "training and test: move each patient's images to one side of it; "
        "split.leakage='warn' only reports this"
    )
    with caplog.at_level(logging.WARNING):
        folder(leakage="warn")
    assert "PatientID 'P2' in training (1) and test (1)" in caplog.text
    folder(leakage="ignore")


def test_the_same_image_under_two_names_is_caught_by_its_sop_instance_uid(tmp_path):
    (normal,) = dicom_folder(tmp_path / "normals", [""])
    dicom_folder(tmp_path / "normals", ["", "", ""], start=1)
    (tmp_path / "test").mkdir()
    shutil.copy(normal, tmp_path / "test" / "copy_of_im0.dcm")
    dm = FolderDataModule(
        tmp_path / "normals",
        test_normal=tmp_path / "test",
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError, match=r"SOPInstanceUID '[\d.]+' in training \(1\) and test"):
        dm.setup()


def test_validation_hold_out_keeps_patients_whole_by_csv_column(tmp_path):
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(12):
        Image.fromarray(film(10 * i, (12, 12))).save(tmp_path / "img" / f"{i}.png")
        rows.append([f"img/{i}.png", f"patient{i // 3}"])
    write_csv(tmp_path / "normals.csv", ["path", "patient"], rows)
    dm = FolderDataModule(
        tmp_path / "normals.csv",
        **QUIET,
        split={"val_fraction": 0.25, "group_by": "patient"},
        cache=quiet_cache(tmp_path / "c"),
    )
    dm.setup()
    patient = {f"normal/img/{i}.png": f"patient{i // 3}" for i in range(12)}
    held = {patient[n] for n in dm.sides()["validation"]}
    trained = {patient[n] for n in dm.sides()["training"]}
    assert len(set(dm.sides()["validation"])) == 3 and len(held) == 1 and not held & trained


def test_group_by_patient_keeps_every_patient_on_one_side_of_a_drawn_split(tmp_path):
    # Two films per patient, a patient's films labelled alike except patient P05 (one of each).
    root = rsna_tree(tmp_path / "rsna", normal=24, opacity=16, patient=lambda i: f"P{i // 2:02d}")
    info = root / "stage_2_detailed_class_info.csv"
    info.write_text(info.read_text().replace("p011,Normal", "p011,Lung Opacity"))
    labels = root / "stage_2_train_labels.csv"
    labels.write_text(labels.read_text().replace("p011,,,,,0", "p011,2,3,5,5,1"))
    counts = dict(known_normal=8, pool_normal=6, pool_abnormal=6, test_normal=6, test_abnormal=6)
    dm = rsna(root, tmp_path / "c", counts, split={"group_by": "PatientID", "val_fraction": 0.25})
    dm.setup()
    patient = {f"p{i:03d}.dcm": f"P{i // 2:02d}" for i in range(40)}
    sides = {side: {patient[n] for n in names} for side, names in dm.sides().items()}
    assert not sides["training"] & sides["test"]
    assert not sides["training"] & sides["validation"]
    assert not sides["validation"] & sides["test"]
    # P05's normal and abnormal films are drawn on one side (or left unused).
    split = parts_of(dm.split_manifest()["split"])
    sides_of_p05 = {split[n].startswith("test") for n in ("p010.dcm", "p011.dcm") if n in split}
    assert len(sides_of_p05) <= 1
    assert "split.group_by='PatientID'" in dm.split_manifest()["source"]
    # Without grouping the same draw puts some patient on two sides, and is refused.
    with pytest.raises(SplitError, match=r"PatientID 'P\d\d' in training \(\d\) and test"):
        rsna(root, tmp_path / "d", counts).setup()


def test_a_folder_grouped_by_a_dicom_keyword_reads_each_file_once(tmp_path, monkeypatch):
    """The group's header value is read while decoding (no header pass first), and it keeps
    each patient's films on one side of the validation hold-out."""
    import sagan_ad.data.splits.groups as groups_module

    for i in range(12):
        write_dicom(
            tmp_path / "normal" / f"{i:02d}.dcm",
            chest_phantom(20, 20) // (i + 1),
            bits_stored=12,
            PatientID=f"P{i // 3}",
        )
    monkeypatch.setattr(groups_module, "header_tags", lambda *a: pytest.fail("header pass"))
    decoded = []
    real = cache_module.read_image
    monkeypatch.setattr(
        cache_module, "read_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k)
    )
    options = dict(
        **QUIET,
        split={"group_by": "PatientID", "val_fraction": 0.25},
        cache=quiet_cache(tmp_path / "c"),
    )
    dm = FolderDataModule(tmp_path / "normal", **options)
    dm.setup()
    assert sorted(decoded) == sorted(str(p) for p in (tmp_path / "normal").iterdir())
    patient = {f"normal/{i:02d}.dcm": f"P{i // 3}" for i in range(12)}
    assert dm.groups == patient
    held = {patient[n] for n in dm.sides()["validation"]}
    trained = {patient[n] for n in dm.sides()["training"]}
    assert len(held) == 1 and not held & trained
    # The next run finds everything in the cache, the group's values included.
    decoded.clear()
    again = FolderDataModule(tmp_path / "normal", **options)
    again.setup()
    assert decoded == [] and again.groups == patient


def test_group_by_must_name_a_column_or_a_dicom_keyword(tmp_path):
    root = rsna_tree(tmp_path / "rsna", normal=6, opacity=4)
    counts = dict(known_normal=2, pool_normal=1, pool_abnormal=2, test_normal=1, test_abnormal=1)
    with pytest.raises(ValueError) as info:
        rsna(root, tmp_path / "c", counts, split={"group_by": "PatientIdentity"}).setup()
    assert str(info.value) == (
        "split.group_by='PatientIdentity' is neither a column of the data (columns: class) nor a "
        "DICOM keyword such as 'PatientID'"
    )


def test_medad_data_with_dicom_images_is_checked_for_patient_leakage(tmp_path):
    images = tmp_path / "medad" / "images"
    patients = {"k0": "A", "k1": "B", "k2": "C", "k3": "D", "u0": "E", "u1": "F", "t0": "B"}
    for i, (name, patient) in enumerate(patients.items()):
        write_dicom(
            images / f"{name}.dcm",
            mark(chest_phantom(20, 20), i),
            bits_stored=12,
            PatientID=patient,
        )
    split = {
        "train": {
            "0": ["k0.dcm", "k1.dcm", "k2.dcm", "k3.dcm"],
            "unlabeled": {"0": ["u0.dcm"], "1": ["u1.dcm"]},
        },
        "test": {"0": [], "1": ["t0.dcm"]},
    }
    (tmp_path / "medad" / "data.json").write_text(json.dumps(split))
    dm = MedADDataModule(
        tmp_path / "medad",
        image_size=16,
        split={"val_fraction": 0.0, "unlabeled_size": 2, "anomaly_ratio": 0.5},
    )
    with pytest.raises(SplitError, match=r"PatientID 'B' in training \(1\) and test \(1\)"):
        dm.setup()


def test_medad_group_by_a_dicom_keyword_keeps_patients_apart(tmp_path):
    images = tmp_path / "medad" / "images"
    patients = {f"k{i}": "ABCDEF"[i // 2] for i in range(12)}  # two known normals each
    patients |= {"u0": "A", "u1": "G", "u2": "H", "u3": "I", "t0": "J"}
    for i, (name, patient) in enumerate(patients.items()):
        write_dicom(
            images / f"{name}.dcm",
            mark(chest_phantom(20, 20), i),
            bits_stored=12,
            PatientID=patient,
        )
    split = {
        "train": {
            "0": [f"k{i}.dcm" for i in range(12)],
            "unlabeled": {"0": ["u0.dcm", "u3.dcm"], "1": ["u1.dcm", "u2.dcm"]},
        },
        "test": {"0": [], "1": ["t0.dcm"]},
    }
    (tmp_path / "medad" / "data.json").write_text(json.dumps(split))
    split = {"val_fraction": 0.25, "unlabeled_size": 2, "anomaly_ratio": 0.5}
    # The plain hold-out splits patients (their PatientIDs are compared with or without group_by).
    with pytest.raises(SplitError, match=r"PatientID '[A-F]' in training \(1\) and validation"):
        MedADDataModule(tmp_path / "medad", image_size=16, split=split).setup()
    dm = MedADDataModule(
        tmp_path / "medad", image_size=16, split={**split, "group_by": "PatientID"}
    )
    dm.setup()
    sides = {side: {patients[n[:-4]] for n in names} for side, names in dm.sides().items()}
    assert not sides["training"] & sides["validation"]
    assert len(dm.known_normal) == 8 and len(dm.val) == 8  # two patients and pseudo anomalies
    # Patient A is held out, so the mixture passes over its pool normal u0 for the next, u3.
    assert {"k0.dcm", "k1.dcm"} <= set(dm.val.names)
    assert dm.unlabeled.names == ["u1.dcm", "u3.dcm"]


def test_medad_group_by_a_column_is_in_the_leakage_check(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    # data.json puts one patient's films in training and in test: group_by cannot move them
    # (the split is given), but the check names the patient.
    with (root / "labels.csv").open("w") as handle:
        handle.write("file,patient\nknown_000.png,P1\ntest1_000.png,P1\n")
    options = dict(image_size=16, metadata_csv="labels.csv")
    MedADDataModule(root, **options, split={"val_fraction": 0.0}).setup()
    with pytest.raises(
        SplitError, match=r"group \(patient\) 'P1' in training \(1\) and test \(1\)"
    ):
        MedADDataModule(root, **options, split={"val_fraction": 0.0, "group_by": "patient"}).setup()


# ---------------------------------------------------------------- 3. stable splits

COUNTS = dict(known_normal=12, pool_normal=8, pool_abnormal=8, test_normal=6, test_abnormal=6)


def test_one_file_added_to_a_raw_tree_moves_only_that_file_or_one_other(tmp_path):
    root = rsna_tree(tmp_path / "rsna", normal=40, opacity=24)
    before = rsna(root, tmp_path / "c0", COUNTS)
    before.setup()
    old = parts_of(before.split_manifest()["split"])
    others_moved = []
    for k in range(6):
        # A new normal film each time (the tree keeps growing by one).
        rsna_tree(root, normal=1, opacity=0, start=100 + k)
        after = rsna(root, tmp_path / f"c{k + 1}", COUNTS)
        after.setup()
        new = parts_of(after.split_manifest()["split"])
        assert {p: list(new.values()).count(p) for p in COUNTS} == COUNTS  # counts honoured
        moved = {n for n in set(old) | set(new) if old.get(n) != new.get(n)}
        added = f"p{100 + k:03d}.dcm"
        others = moved - {added}
        # The only other file that may move is one pushed out of a full part to unused.
        assert len(others) <= 1 and all(n not in new for n in others), (added, moved)
        others_moved.append(len(others))
        old = new
    assert 0 in others_moved  # some new files land among the unused and move nothing else


def test_one_file_lost_lets_at_most_one_unused_file_in(tmp_path):
    root = rsna_tree(tmp_path / "rsna", normal=40, opacity=24)
    before = rsna(root, tmp_path / "a", COUNTS)
    before.setup()
    old = parts_of(before.split_manifest()["split"])
    lost = before.known_normal.names[0]
    (root / "stage_2_train_images" / lost).unlink()
    after = rsna(root, tmp_path / "b", COUNTS, on_error="skip")
    after.setup()
    new = parts_of(after.split_manifest()["split"])
    moved = {n for n in set(old) | set(new) if old.get(n) != new.get(n)} - {lost}
    assert len(moved) <= 1 and all(n not in old for n in moved)
    assert len(after.known_normal) == COUNTS["known_normal"]


def test_the_draw_depends_on_the_seed_and_old_split_files_still_load(tmp_path):
    normal = [f"n{i}" for i in range(30)]
    abnormal = [f"a{i}" for i in range(20)]
    counts = dict(known_normal=10, pool_normal=5, pool_abnormal=8, test_normal=5, test_abnormal=5)
    a = protocol_split(normal, abnormal, counts, seed=0)
    assert a == protocol_split(list(reversed(normal)), abnormal, counts, seed=0)
    assert a != protocol_split(normal, abnormal, counts, seed=1)
    root = rsna_tree(tmp_path / "rsna", normal=10, opacity=6)
    # A split file in the version 0.1 layout (any split): read as it is, not redrawn.
    names = [f"p{i:03d}.dcm" for i in range(16)]
    old = {
        "train": {"0": names[:4], "unlabeled": {"0": names[4:6], "1": names[10:13]}},
        "test": {"0": names[6:8], "1": names[13:15]},
    }
    (tmp_path / "old.json").write_text(json.dumps(old, indent=1))
    dm = rsna(root, tmp_path / "c", COUNTS, split={"file": tmp_path / "old.json"})
    dm.setup()
    assert dm.split_manifest() == {
        "source": f"read from {tmp_path / 'old.json'}; unlabeled set: the first names of each "
        "pool, split.anomaly_ratio=0.5, split.unlabeled_size=the number of known normals; no "
        "validation set",
        "split": old,
    }


# ---------------------------------------------------------------- 4. the split manifest


def test_split_manifest_says_where_the_split_came_from(tmp_path, medad_root):
    root = rsna_tree(tmp_path / "rsna", normal=10, opacity=6)
    counts = dict(known_normal=4, pool_normal=2, pool_abnormal=4, test_normal=2, test_abnormal=2)
    dm = rsna(root, tmp_path / "c", counts, seed=3, split={"val_fraction": 0.25})
    assert dm.split_manifest() is None  # before setup
    dm.setup()
    manifest = dm.split_manifest()
    assert manifest["split"] == json.loads(dm.split_path.read_text())
    assert manifest["source"] == (
        f"drawn by RSNADataModule from {root} with seed=3, split.counts={counts}, grouped by "
        "the data set's patient key (seeded hash of each image or group); unlabeled set: the "
        "first names of each pool, split.anomaly_ratio=0.5, split.unlabeled_size=the number of "
        "known normals; validation: split.val_fraction=0.25 of the known normals held out "
        "(seed=3) with pseudo anomalies"
    )
    medad = MedADDataModule(medad_root, image_size=16, split={"val_abnormal": 2})
    medad.setup()
    assert medad.split_manifest()["split"] == json.loads((medad_root / "data.json").read_text())
    assert medad.split_manifest()["source"].startswith(
        f"read from {medad_root / 'data.json'}; unlabeled set: the first names of each pool, "
        "split.anomaly_ratio=0.6, split.unlabeled_size=12; val carved from the training data: "
        "split.val_abnormal=2 last names of the abnormal pool and split.val_fraction=0.1"
    )
    synthetic = SyntheticCXRDataModule(num_known_normal=8, num_test=4, image_size=32)
    synthetic.setup()
    assert synthetic.split_manifest() is None


def test_folder_datamodule_manifest_lists_its_roles(tmp_path):
    (tmp_path / "n").mkdir()
    for i in range(4):
        Image.fromarray(film(i, (12, 12))).save(tmp_path / "n" / f"{i}.png")
    dm = FolderDataModule(
        tmp_path / "n",
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    dm.setup()
    assert dm.split_manifest() == {
        "source": f"roles as given (normal={str(tmp_path / 'n')!r}); no validation set",
        "split": json.loads(dm.split_path.read_text()),
    }


# ---------------------------------------------------------------- 6. bit depth


def twelve_bit_ramps(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ramp = np.tile(np.linspace(0, 4095 - 100 * i, 32).round().astype(np.uint16), (32, 1))
        Image.fromarray(ramp).save(folder / f"r{i}.png")


def test_twelve_bit_pngs_keep_their_contrast_in_a_datamodule(tmp_path, caplog):
    twelve_bit_ramps(tmp_path / "n")
    options = dict(image_size=32, split={"val_fraction": 0.0})
    dm = FolderDataModule(tmp_path / "n", **options, cache=quiet_cache(tmp_path / "a"))
    dm.setup()
    first = dm.known_normal.images[0, 0]
    assert first.min() == 0 and first.max() == 255 and len(first.unique()) == 32
    # One scale for the whole data set: the dimmer ramps stay dimmer.
    assert dm.known_normal.images[3].max() == round((4095 - 300) / 4095 * 255)
    with caplog.at_level(logging.WARNING):
        old = FolderDataModule(
            tmp_path / "n",
            decode=DecodeSettings(bit_depth="dtype"),
            **options,
            cache=quiet_cache(tmp_path / "b"),
        )
        old.prepare_data()
        old.setup()
    assert old.known_normal.images.max() == 16
    warned = [r.getMessage() for r in caplog.records if "bit_depth='dtype'" in r.getMessage()]
    assert warned == [
        f"{tmp_path / 'n'}: of the 16-bit files, 4 use 12 bits; bit_depth='dtype' scales them "
        "by 65535, so they lose contrast: set bit_depth='auto' or the depth they were exported "
        "with (for example 12; a DataModule's decode.bit_depth)"
    ]


def test_files_of_different_depths_share_the_largest_and_say_so(tmp_path, caplog):
    twelve_bit_ramps(tmp_path / "n", 3)
    Image.fromarray(film(12000, (32, 32), np.uint16)).save(tmp_path / "n" / "deep.png")
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(
            tmp_path / "n",
            image_size=32,
            split={"val_fraction": 0.0},
            cache=quiet_cache(tmp_path / "c"),
        )
        dm.setup()
    assert "of the 16-bit files, 3 use 12 bits, 1 use 14 bits" in caplog.text
    ramp = dm.known_normal.names.index("normal/r0.png")
    assert dm.known_normal.images[ramp].max() == round(4095 / 16383 * 255)


# ---------------------------------------------------------------- 7. cache honesty


def rewrite_keeping_size_and_time(path: Path, pixels: np.ndarray) -> None:
    """What ``cp -p`` or ``rsync -t`` of other content does: new bytes, same size and mtime."""
    stat = path.stat()
    # A fresh random UID can differ in length; keep the old one so only the pixels change.
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    write_dicom(path, pixels, bits_stored=12, SOPInstanceUID=uid)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize(
    ("identity", "detected"), [("stat", False), ("verify", True), ("content", True)]
)
def test_a_cp_p_style_rewrite_is_detected_by_content_identity(tmp_path, identity, detected):
    path = write_dicom(tmp_path / "x.dcm", chest_phantom(), bits_stored=12)
    cache = ImageCache(
        tmp_path / "c", PreprocessSettings(16), num_workers=1, progress=False, identity=identity
    )
    before = cache.load([path]).images[0]
    lesion = chest_phantom()
    lesion[10:30, 5:15] = 4095
    rewrite_keeping_size_and_time(path, lesion)
    now = load_image(path, 16)
    after = cache.load([path]).images[0]
    assert not np.array_equal(before, now)
    np.testing.assert_array_equal(after, now if detected else before)


def test_content_identity_reuses_moved_files_without_decoding(tmp_path, monkeypatch):
    paths = [
        write_dicom(tmp_path / f"{i}.dcm", chest_phantom() // (i + 1), bits_stored=12)
        for i in range(3)
    ]
    settings = PreprocessSettings(16)
    first = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    moved = []
    for path in paths:
        moved.append(tmp_path / "moved" / path.name)
        moved[-1].parent.mkdir(exist_ok=True)
        path.rename(moved[-1])
    decoded = []
    real = cache_module.read_image
    monkeypatch.setattr(
        cache_module, "read_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k)
    )
    cache = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False, identity="content")
    np.testing.assert_array_equal(cache.load(moved).images, first.images)
    assert decoded == []


def test_a_killed_writers_temporary_in_the_cache_is_removed_by_the_next_write(tmp_path):
    # Temporaries named by a process that no longer runs are what a kill mid-write leaves.
    paths = [
        write_dicom(tmp_path / f"{i}.dcm", chest_phantom() // (i + 1), bits_stored=12)
        for i in range(2)
    ]
    settings = PreprocessSettings(16)
    folder = tmp_path / "c" / settings.key()
    folder.mkdir(parents=True)
    stale = folder / f".shard-00000.partial-999999999-{_HOST}.npy"
    stale.write_bytes(b"half a shard")
    loaded = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    assert len(loaded.images) == 2
    assert not stale.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_an_interrupted_build_resumes_from_its_last_save(tmp_path, monkeypatch):
    paths = [
        write_dicom(tmp_path / f"{i}.dcm", chest_phantom() // (i + 1), bits_stored=12)
        for i in range(6)
    ]
    settings = PreprocessSettings(16)
    real = ImageCache._decoded

    def interrupted(self, *args):
        for i, result in enumerate(real(self, *args)):
            if i == 4:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(ImageCache, "_decoded", interrupted)
    # Saves every 1e-9 s: each finished image is kept (the default is every 60 s).
    cache = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False, save_interval=1e-9)
    with pytest.raises(KeyboardInterrupt):
        cache.load(paths)
    assert len(json.loads(cache.index_path.read_text())) == 4
    monkeypatch.undo()
    decoded = []
    real_read = cache_module.read_image
    monkeypatch.setattr(
        cache_module, "read_image", lambda *a, **k: decoded.append(a[0]) or real_read(*a, **k)
    )
    result = cache.load(paths)
    assert decoded == [str(paths[4]), str(paths[5])]
    np.testing.assert_array_equal(result.images[5], load_image(paths[5], 16))


def test_cache_options_reach_the_datamodules(tmp_path):
    with pytest.raises(ValueError, match=r"cache.identity='hash': must be 'stat', 'verify' or"):
        FolderDataModule(tmp_path, cache={"identity": "hash"})
    with pytest.raises(ValueError, match=r"cache.save_interval=0: must be > 0 seconds"):
        FolderDataModule(tmp_path, cache={"save_interval": 0})
    root = write_medad_tree(tmp_path / "medad")
    dm = MedADDataModule(root, image_size=16, cache={"dir": tmp_path / "c", "identity": "verify"})
    dm.setup()
    plain = MedADDataModule(root, image_size=16)
    plain.setup()
    assert torch.equal(dm.test.images, plain.test.images)


# ---------------------------------------------------------------- 8. DICOM details


def test_window_width_below_one_falls_back_to_the_configured_window(tmp_path):
    pixels = chest_phantom()
    header = write_dicom(
        tmp_path / "w.dcm", pixels, bits_stored=12, WindowCenter=2000, WindowWidth=0.5
    )
    plain = write_dicom(tmp_path / "p.dcm", pixels, bits_stored=12)
    for fallback in ("minmax", "percentile"):
        options = DicomOptions(fallback_window=fallback)
        np.testing.assert_array_equal(read_dicom(header, options), read_dicom(plain, options))


def test_pixel_padding_is_masked_before_windowing_and_shown_black(tmp_path):
    pixels = np.maximum(chest_phantom(24, 20, high=3000), 1000).astype(np.uint16)
    padded = pixels.copy()
    padded[:4] = 0  # the collimator border a scanner marks as padding
    path = write_dicom(
        tmp_path / "pad.dcm", padded, photometric="MONOCHROME1", bits_stored=12, PixelPaddingValue=0
    )
    shown = decode_image(path)
    assert shown[:4].max() == 0.0  # black, although MONOCHROME1 inverts everything else
    inner = write_dicom(
        tmp_path / "inner.dcm", pixels[4:], photometric="MONOCHROME1", bits_stored=12
    )
    np.testing.assert_allclose(shown[4:], decode_image(inner), atol=1e-6)
    ranged = write_dicom(
        tmp_path / "range.dcm",
        padded + 10,
        photometric="MONOCHROME1",
        bits_stored=12,
        PixelPaddingValue=0,
        PixelPaddingRangeLimit=20,
    )
    np.testing.assert_allclose(decode_image(ranged), shown, atol=1e-6)


def test_force_dicom_and_dicom_options_reach_every_datamodule(tmp_path):
    # Old ACR-NEMA files: no preamble, no suffix, only force_dicom tells what they are.
    images = tmp_path / "medad" / "images"
    names = [f"IM{i}" for i in range(8)]
    for i, name in enumerate(names):
        write_dicom(
            images / name, mark(chest_phantom() // (1 + i % 3), i), bits_stored=12, file_meta=False
        )
    split = {"train": {"0": names[:4], "unlabeled": {"0": names[4:6], "1": names[6:]}}}
    (tmp_path / "medad" / "data.json").write_text(json.dumps(split))
    options = dict(
        image_size=16, split={"val_fraction": 0.0, "unlabeled_size": 2, "anomaly_ratio": 0.5}
    )
    with pytest.raises(ImageReadError, match=r"IM0: .*DICOM without preamble \(set force_dicom"):
        MedADDataModule(tmp_path / "medad", **options).setup()
    decode = DecodeSettings(dicom_mode="benchmark", force_dicom=True)
    bench = MedADDataModule(tmp_path / "medad", decode=decode, **options)
    bench.setup()
    expected = load_image(
        images / "IM0", 16, force_dicom=True, dicom=DicomOptions(mode="benchmark")
    )
    np.testing.assert_array_equal(bench.known_normal.images[0].numpy(), expected)
    folder = FolderDataModule(
        images,
        decode=DecodeSettings(window="percentile", force_dicom=True),
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    folder.setup()
    assert len(folder.known_normal) == 8
    assert folder.settings.dicom == DicomOptions(window="percentile")
