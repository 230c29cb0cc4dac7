"""Med-AD metadata from a CSV, and the labelled validation carve-out balanced by a column."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from conftest import NIH_ROOT, requires_nih, write_medad_tree

from sagan_ad import MedADDataModule
from sagan_ad.data import MedADSplit, SplitError


def split_with_views() -> tuple[MedADSplit, dict[str, str]]:
    known = [f"k{i}" for i in range(20)]
    pool = [f"a{i}" for i in range(30)]
    # Normals mostly AP; the abnormal pool's tail mostly PA, as in the NIH release.
    views = {name: "AP" if i % 4 else "PA" for i, name in enumerate(known)}
    views.update({name: "PA" if i % 3 else "AP" for i, name in enumerate(pool)})
    return MedADSplit(known_normal=known, pool_normal=["n0"], pool_abnormal=pool), views


def test_balanced_carve_out_follows_the_normals_shares_and_spares_the_mixture():
    split, views = split_with_views()
    carved = split.with_labelled_validation(0.4, 8, seed=0, groups=views, reserve=10)
    normal_views = Counter(views[n] for n in carved.val_normal)
    abnormal_views = Counter(views[n] for n in carved.val_abnormal)
    assert len(carved.val_normal) == len(carved.val_abnormal) == 8
    assert abnormal_views == normal_views
    # The first 10 pool names (the mixture's) stay first, in order; the rest keep their order.
    assert carved.pool_abnormal[:10] == split.pool_abnormal[:10]
    assert sorted(carved.pool_abnormal + carved.val_abnormal) == sorted(split.pool_abnormal)
    # The known-normal hold-out is the one without balancing.
    plain = split.with_labelled_validation(0.4, 8, seed=0)
    assert carved.val_normal == plain.val_normal and carved.known_normal == plain.known_normal


def test_balance_shares_round_by_largest_remainder():
    split, views = split_with_views()
    carved = split.with_labelled_validation(0.4, 5, seed=0, groups=views)
    normals = Counter(views[n] for n in carved.val_normal)
    abnormals = Counter(views[n] for n in carved.val_abnormal)
    assert sum(abnormals.values()) == 5
    for view in normals:
        assert abs(abnormals[view] - 5 * normals[view] / 8) < 1


def test_balancing_that_the_pool_cannot_supply_is_refused():
    split, views = split_with_views()
    with pytest.raises(
        SplitError,
        match=r"cannot balance the 8 validation abnormals by group like the 8 held-out normals: "
        r"need 6 'AP' but only 3 are available outside the unlabeled mixture",
    ):
        split.with_labelled_validation(0.4, 8, seed=0, groups=views, reserve=21)


def write_labels(root, views: dict[str, str]) -> None:
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "view_position", "is_abnormal", "patient_sex"])
        for i, (name, view) in enumerate(sorted(views.items())):
            writer.writerow([name, view, int(name.startswith(("pool1", "test1"))), "FM"[i % 2]])


def fake_tree(tmp_path):
    root = write_medad_tree(
        tmp_path / "medad", {"known": 20, "pool0": 10, "pool1": 20, "test0": 4, "test1": 4}
    )
    split = json.loads((root / "data.json").read_text())
    names = [n for part in ("train", "test") for n in _flatten(split[part])]
    views = {n: ("AP" if (n.startswith("known") or int(n[-7:-4]) % 3) else "PA") for n in names}
    write_labels(root, views)
    return root, views


def _flatten(node) -> list[str]:
    if isinstance(node, list):
        return node
    return [n for child in node.values() for n in _flatten(child)]


def test_metadata_csv_reaches_every_image_set(tmp_path):
    root, views = fake_tree(tmp_path)
    dm = MedADDataModule(
        root, image_size=32, metadata_csv="labels.csv", split={"val_fraction": 0.2}
    )
    dm.setup()
    assert [m["view_position"] for m in dm.test.metadata] == [views[n] for n in dm.test.names]
    assert set(dm.known_normal.metadata[0]) == {"view_position", "is_abnormal", "patient_sex"}


def test_datamodule_balances_the_carve_out_by_a_metadata_column(tmp_path):
    root, _ = fake_tree(tmp_path)
    split = {"val_fraction": 0.2, "val_abnormal": 4}
    plain = MedADDataModule(root, image_size=32, metadata_csv="labels.csv", split=split)
    balanced = MedADDataModule(
        root,
        image_size=32,
        metadata_csv=root / "labels.csv",
        split={**split, "val_balance_by": "view_position"},
    )
    plain.setup()
    balanced.setup()
    by_class = Counter(
        (m["view_position"], label)
        for m, label in zip(balanced.val.metadata, balanced.val.labels, strict=True)
    )
    assert by_class[("AP", 0)] == by_class[("AP", 1)] and by_class[("PA", 0)] == by_class[("PA", 1)]
    # The training and test sets are those of the unbalanced carve-out.
    assert balanced.unlabeled.names == plain.unlabeled.names
    assert balanced.known_normal.names == plain.known_normal.names
    assert balanced.test.names == plain.test.names


@pytest.mark.parametrize(
    ("options", "split", "message"),
    [
        (
            {},
            {"val_balance_by": "view_position"},
            r"set split\.val_abnormal > 0 and metadata_csv too",
        ),
        (
            {"metadata_csv": "labels.csv"},
            {"val_balance_by": "view", "val_abnormal": 4},
            r"split\.val_balance_by='view' is not a column of .*labels\.csv "
            r"\(has \['file', 'view_po",
        ),
        ({"metadata_csv": "missing.csv"}, {}, r"metadata_csv='.*missing\.csv' does not exist"),
    ],
)
def test_metadata_and_balance_settings_are_checked(tmp_path, options, split, message):
    root, _ = fake_tree(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        MedADDataModule(
            root, image_size=32, **options, split={"val_fraction": 0.2, **split}
        ).setup()


@requires_nih
def test_nih_carve_out_balanced_by_view():
    dm = MedADDataModule(
        NIH_ROOT,
        image_size=64,
        metadata_csv="labels.csv",
        split={"val_fraction": 0.2, "val_abnormal": 34, "val_balance_by": "view_position"},
    )
    dm.setup()
    counts = Counter(
        (m["view_position"], label) for m, label in zip(dm.val.metadata, dm.val.labels, strict=True)
    )
    assert counts == {("AP", 0): 26, ("AP", 1): 26, ("PA", 0): 8, ("PA", 1): 8}
    assert dm.summary()["train/unlabeled_abnormal"] == 102


# ---------------------------------------------------------------- group_by: patients apart


def patient_tree(tmp_path):
    """A Med-AD folder whose patients have several films: two known normals each, some also in
    the unlabeled pools, at their heads (which the mixture takes) and at the abnormal pool's
    tail (which the carve-out takes)."""
    counts = {"known": 20, "pool0": 12, "pool1": 24, "test0": 4, "test1": 4}
    root = write_medad_tree(tmp_path / "medad", counts)
    patients = {f"known_{i:03d}.png": f"P{i // 2}" for i in range(20)}
    patients |= {f"pool0_{i:03d}.png": f"P{i}" if i < 4 else f"N{i}" for i in range(12)}
    patients |= {f"pool1_{i:03d}.png": f"P{i - 16}" if i >= 20 else f"A{i}" for i in range(24)}
    patients["pool1_000.png"] = patients["pool1_018.png"] = "Q"
    patients |= {f"{p}_{i:03d}.png": f"T{p}{i}" for p in ("test0", "test1") for i in range(4)}
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient", "view_position"])
        for name, patient in sorted(patients.items()):
            view = "PA" if int(name[-7:-4]) % (4 if name.startswith("known") else 3) == 0 else "AP"
            writer.writerow([name, patient, view])
    return root, patients


def patients_by_side(dm: MedADDataModule, patients: dict[str, str]) -> dict[str, set[str]]:
    return {side: {patients[n] for n in names} for side, names in dm.sides().items()}


GROUPED = {"image_size": 16, "metadata_csv": "labels.csv"}


@pytest.mark.parametrize(
    "split",
    [{}, {"val_abnormal": 4}, {"val_abnormal": 4, "val_balance_by": "view_position"}],
    ids=["pseudo-anomalies", "carve-out", "balanced-carve-out"],
)
def test_group_by_keeps_each_patient_on_one_side_and_the_counts(tmp_path, split):
    root, patients = patient_tree(tmp_path)
    loose = MedADDataModule(
        root, **GROUPED, split={"val_fraction": 0.2, "leakage": "ignore", **split}
    )
    loose.setup()
    assert (
        patients_by_side(loose, patients)["training"]
        & patients_by_side(loose, patients)["validation"]
    ), "the fixture must hold the leak that group_by prevents"
    # split.leakage="raise" (the default) also compares the group key across the sides.
    dm = MedADDataModule(
        root, **GROUPED, split={"val_fraction": 0.2, "group_by": "patient", **split}
    )
    dm.setup()
    sides = patients_by_side(dm, patients)
    assert not sides["training"] & sides["validation"]
    assert not sides["test"] & (sides["training"] | sides["validation"])
    # The counts asked for: the mixture's size and ratio, the hold-out, the carve-out.
    assert len(dm.unlabeled) == 20 and sum(dm.unlabeled.labels) == 12
    val_normal = [n for n, label in zip(dm.val.names, dm.val.labels, strict=True) if not label]
    assert len(val_normal) == 4 and len(dm.known_normal) == 16
    assert sum(dm.val.labels) == split.get("val_abnormal", len(val_normal))
    assert dm.test.names == loose.test.names
    if "val_balance_by" in split:
        views = Counter(
            (m["view_position"], label)
            for m, label in zip(dm.val.metadata, dm.val.labels, strict=True)
        )
        assert all(views[(view, 0)] == views[(view, 1)] for view in ("AP", "PA"))


def test_group_by_carve_out_passes_over_the_patients_of_training(tmp_path):
    root, patients = patient_tree(tmp_path)
    dm = MedADDataModule(
        root, **GROUPED, split={"val_fraction": 0.2, "group_by": "patient", "val_abnormal": 4}
    )
    dm.setup()
    # The pool's last films belong to known-normal patients (P4..P7) or share patient Q with the
    # mixture's first film: the carve-out skips those kept in training.
    kept = {patients[n] for n in dm.known_normal.names}
    val_abnormal = [n for n, label in zip(dm.val.names, dm.val.labels, strict=True) if label]
    assert not {patients[n] for n in val_abnormal} & kept
    assert val_abnormal != [f"pool1_{i:03d}.png" for i in range(20, 24)]
    source = dm.split_manifest()["source"]
    assert ", split.group_by='patient'; unlabeled set: the first names of each pool" in source
    assert "(images of validation groups passed over)" in source
    assert "abnormal pool whose group has no image in training or test" in source
    assert "of the known normals by whole groups (seed=0)" in source


def test_without_group_by_the_split_is_the_one_drawn_before(tmp_path):
    # Pinned from the release before group_by existed: a running study depends on it.
    root, _ = patient_tree(tmp_path)
    normals = [f"known_{i:03d}.png" for i in (2, 4, 6, 19)]
    mixture = [f"pool1_{i:03d}.png" for i in range(12)] + [f"pool0_{i:03d}.png" for i in range(8)]
    for val_abnormal, abnormals in ((4, [f"pool1_{i:03d}.png" for i in range(20, 24)]), (0, [])):
        dm = MedADDataModule(
            root,
            image_size=16,
            split={"val_fraction": 0.2, "val_abnormal": val_abnormal, "leakage": "ignore"},
        )
        dm.setup()
        assert [n for n in dm.val.names if not n.endswith("#pseudo_anomaly")] == normals + abnormals
        assert dm.unlabeled.names == mixture
        carved = (
            "val carved from the training data: split.val_abnormal=4 last names of the abnormal "
            "pool and split.val_fraction=0.2 of the known normals (seed=0)"
            if val_abnormal
            else "validation: split.val_fraction=0.2 of the known normals held out (seed=0) with "
            "pseudo anomalies"
        )
        assert dm.split_manifest()["source"] == (
            f"read from {root / 'data.json'}; unlabeled set: the first names of each pool, "
            f"split.anomaly_ratio=0.6, split.unlabeled_size=20; {carved}"
        )


def test_group_by_says_what_to_do_when_the_counts_cannot_be_kept(tmp_path):
    root, _ = patient_tree(tmp_path)
    split = {"val_fraction": 0.2, "val_abnormal": 22, "unlabeled_size": 2}
    # Without group_by the last 22 of the 24 pool abnormals are taken; with it, those of the
    # kept known normals' patients are not available.
    MedADDataModule(root, **GROUPED, split={**split, "leakage": "ignore"}).setup()
    with pytest.raises(
        ValueError,
        match=r"split\.val_abnormal=22 .*split\.group_by='patient': cannot take 22 validation "
        r"abnormals whose group has no image in training or test \(found 21\): of the 24 pool "
        r"abnormals, 3 share a group with the kept known normals or the test set, and 0 were "
        r"passed over because their groups hold pool images that the unlabeled mixture "
        r"\(1 abnormals, 1 normals\) needs; lower split\.val_abnormal or split\.unlabeled_size",
    ):
        MedADDataModule(root, **GROUPED, split={**split, "group_by": "patient"}).setup()


def test_the_carve_out_passes_over_a_patient_whose_films_the_mixture_needs():
    split = MedADSplit(
        known_normal=list("abcdef"), pool_normal=["n"], pool_abnormal=["a0", "a1", "a2"]
    )
    patients = {"a0": "P", "a2": "P"}

    def carve(count: int, reserve: int) -> MedADSplit:
        return split.with_labelled_validation(
            0.3, count, together=patients, reserve=reserve, reserve_normal=1
        )

    # Taking a2 takes its patient's a0 out of the pool too; a1 is left to the mixture.
    assert carve(1, reserve=1).val_abnormal == ["a2"]
    assert carve(1, reserve=1).pool_abnormal == ["a1"]
    # A second abnormal: a1 is what the mixture needs, a0 is on the validation side already.
    assert carve(2, reserve=1).val_abnormal == ["a0", "a2"]
    # With two for the mixture, patient P (two films) is passed over: only a1 can be taken.
    assert carve(1, reserve=2).val_abnormal == ["a1"]
    with pytest.raises(
        SplitError,
        match=r"cannot take 2 validation abnormals .* \(found 1\): of the 3 pool abnormals, 0 "
        r"share a group with the kept known normals or the test set, and 2 were passed over",
    ):
        carve(2, reserve=2)


def test_a_hold_out_that_would_starve_the_mixture_is_refused():
    # Every known normal's patient has a film in the normal pool, and the mixture needs them all.
    split = MedADSplit(
        known_normal=[f"k{i}" for i in range(6)], pool_normal=[f"n{i}" for i in range(6)]
    )
    patients = {f"{kind}{i}": f"P{i}" for kind in "kn" for i in range(6)}
    with pytest.raises(
        SplitError,
        match=r"val_fraction=0.3 holds out 2 of the 6 known normals, but only 0 are in groups "
        r"without pool images that the unlabeled mixture \(0 abnormals, 6 normals\) needs: lower "
        r"split\.val_fraction or split\.unlabeled_size",
    ):
        split.normals_held_apart(0.3, 0, patients, reserve_normal=6)
    held, apart = split.normals_held_apart(0.3, 0, patients, reserve_normal=4)
    assert len(held) == 2 and len(apart.pool_normal) == 4
    assert {patients[n] for n in held}.isdisjoint(patients[n] for n in apart.pool_normal)


@pytest.mark.parametrize(
    ("options", "group_by", "message"),
    [
        (
            {},
            "patient",
            r"split\.group_by='patient' is not a DICOM keyword .* set metadata_csv",
        ),
        (
            {"metadata_csv": "labels.csv"},
            "patient_id",
            r"split\.group_by='patient_id' is neither a column of the data "
            r"\(columns: patient, view_pos",
        ),
    ],
)
def test_group_by_must_name_a_column_or_a_dicom_keyword(tmp_path, options, group_by, message):
    root, _ = patient_tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        MedADDataModule(root, image_size=16, **options, split={"group_by": group_by}).setup()


@requires_nih
def test_nih_carve_out_by_patient_shares_no_patient_with_training():
    options = {"image_size": 64, "seed": 0, "metadata_csv": "labels.csv"}
    split = {
        "val_fraction": 0.2,
        "val_abnormal": 34,
        "anomaly_ratio": 0.6,
        "val_balance_by": "view_position",
    }
    dm = MedADDataModule(NIH_ROOT, **options, split={**split, "group_by": "nih_patient_id"})
    dm.setup()

    def patients(names: list[str], data: MedADDataModule) -> set[str]:
        rows = dict(zip(data.known_normal.names, data.known_normal.metadata, strict=True))
        for part in (data.unlabeled, data.val, data.test):
            rows |= dict(zip(part.names, part.metadata, strict=True))
        return {rows[n]["nih_patient_id"] for n in names}

    sides = {side: patients(names, dm) for side, names in dm.sides().items()}
    assert not sides["training"] & sides["validation"]
    assert not sides["test"] & (sides["training"] | sides["validation"])
    counts = Counter(
        (m["view_position"], label) for m, label in zip(dm.val.metadata, dm.val.labels, strict=True)
    )
    assert counts == {("AP", 0): 27, ("AP", 1): 27, ("PA", 0): 7, ("PA", 1): 7}
    assert len(sides["validation"]) == 40
    assert len(dm.known_normal) == 136 and len(dm.test) == 156
    assert len(dm.unlabeled) == 170 and sum(dm.unlabeled.labels) == 102
    # The same run without group_by: 18 of its 54 validation patients also train.
    loose = MedADDataModule(NIH_ROOT, **options, split={**split, "leakage": "warn"})
    loose.setup()
    before = {side: patients(names, loose) for side, names in loose.sides().items()}
    assert len(before["training"] & before["validation"]) == 18
