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
    dm = MedADDataModule(root, image_size=32, val_fraction=0.2, metadata_csv="labels.csv")
    dm.setup()
    assert [m["view_position"] for m in dm.test.metadata] == [views[n] for n in dm.test.names]
    assert set(dm.known_normal.metadata[0]) == {"view_position", "is_abnormal", "patient_sex"}


def test_datamodule_balances_the_carve_out_by_a_metadata_column(tmp_path):
    root, _ = fake_tree(tmp_path)
    options = {"image_size": 32, "val_fraction": 0.2, "val_abnormal": 4}
    plain = MedADDataModule(root, metadata_csv="labels.csv", **options)
    balanced = MedADDataModule(
        root, metadata_csv=root / "labels.csv", val_balance_by="view_position", **options
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
    ("options", "message"),
    [
        ({"val_balance_by": "view_position"}, r"set val_abnormal > 0 and metadata_csv too"),
        (
            {"val_balance_by": "view", "val_abnormal": 4, "metadata_csv": "labels.csv"},
            r"val_balance_by='view' is not a column of .*labels\.csv \(has \['file', 'view_po",
        ),
        ({"metadata_csv": "missing.csv"}, r"metadata_csv='.*missing\.csv' does not exist"),
    ],
)
def test_metadata_and_balance_settings_are_checked(tmp_path, options, message):
    root, _ = fake_tree(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        MedADDataModule(root, image_size=32, val_fraction=0.2, **options).setup()


@requires_nih
def test_nih_carve_out_balanced_by_view():
    dm = MedADDataModule(
        NIH_ROOT,
        image_size=64,
        val_fraction=0.2,
        val_abnormal=34,
        metadata_csv="labels.csv",
        val_balance_by="view_position",
    )
    dm.setup()
    counts = Counter(
        (m["view_position"], label) for m, label in zip(dm.val.metadata, dm.val.labels, strict=True)
    )
    assert counts == {("AP", 0): 26, ("AP", 1): 26, ("PA", 0): 8, ("PA", 1): 8}
    assert dm.summary()["train/unlabeled_abnormal"] == 102
