"""The protocol split: data.json parsing, unlabeled mixture, hold-out, leakage checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_medad_tree

from sagan_ad import MedADDataModule
from sagan_ad.data.splits.leakage import check_disjoint
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.split import (
    SplitError,
    build_unlabeled,
    holdout_indices,
    unlabeled_counts,
)
from sagan_ad.data.splits.split_file import read_medad_split


def test_unlabeled_mixture_takes_the_first_names_of_each_pool():
    normal = [f"n{i}" for i in range(10)]
    abnormal = [f"a{i}" for i in range(10)]
    names, labels = build_unlabeled(normal, abnormal, size=10, anomaly_ratio=0.6)
    assert names == ["a0", "a1", "a2", "a3", "a4", "a5", "n0", "n1", "n2", "n3"]
    assert labels == [1] * 6 + [0] * 4


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [(3851, 0.6, (2310, 1541)), (170, 0.6, (102, 68)), (10, 0.0, (0, 10)), (10, 1.0, (10, 0))],
)
def test_unlabeled_counts_floor_the_abnormal_share(size, ratio, expected):
    assert unlabeled_counts(size, ratio) == expected


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_anomaly_ratio_outside_unit_interval_is_rejected(ratio):
    with pytest.raises(SplitError, match="anomaly_ratio"):
        build_unlabeled(["n"], ["a"], 1, ratio)


def test_pool_too_small_says_what_is_needed_and_available():
    with pytest.raises(SplitError) as info:
        build_unlabeled(["n"] * 5, ["a"] * 3, size=10, anomaly_ratio=0.6)
    message = str(info.value)
    assert "needs 6 abnormal images but the abnormal pool has 3" in message
    assert "unlabeled_size" in message


def test_holdout_is_seeded_disjoint_and_complete():
    keep, held = holdout_indices(100, 0.1, seed=0)
    again_keep, again_held = holdout_indices(100, 0.1, seed=0)
    _, other_held = holdout_indices(100, 0.1, seed=1)
    assert len(held) == 10 and len(keep) == 90
    assert np.array_equal(held, again_held) and np.array_equal(keep, again_keep)
    assert not np.array_equal(held, other_held)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(100))
    with pytest.raises(SplitError, match="val_fraction"):
        holdout_indices(10, 1.0, seed=0)
    with pytest.raises(SplitError, match="leaves"):
        holdout_indices(3, 0.5, seed=0)


def test_leakage_and_duplicates_are_reported():
    with pytest.raises(SplitError, match="'x.png' is in both train and test"):
        check_disjoint({"train": ["x.png", "y.png"], "test": ["x.png"]})
    with pytest.raises(SplitError, match="twice in train"):
        check_disjoint({"train": ["x.png", "x.png"]})


def write(tmp_path, data) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_read_medad_split_round_trips(tmp_path):
    data = {
        "train": {"0": ["a"], "unlabeled": {"0": ["b"], "1": ["c"]}},
        "test": {"0": ["d"], "1": ["e"]},
    }
    split = read_medad_split(write(tmp_path, data))
    assert split.to_json() == data
    assert not split.has_validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing key .'train'"),
        ({"train": {}}, "missing key train.'0'"),
        ({"train": {"0": "a.png"}}, 'train."0" must be a list'),
        ({"train": {"0": ["a"]}, "test": {"0": ["b"]}}, "missing key test.'1'"),
        ("{not json", "not valid JSON"),
        ({"train": {"0": ["a"]}, "test": {"0": ["a"], "1": []}}, "in both"),
    ],
)
def test_bad_split_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(SplitError, match=message) as info:
        read_medad_split(path)
    assert str(path) in str(info.value)


def test_missing_split_file(tmp_path):
    with pytest.raises(SplitError, match="data.json does not exist"):
        read_medad_split(tmp_path / "data.json")


def _split(n_known: int = 10, n_pool_abnormal: int = 6) -> MedADSplit:
    return MedADSplit(
        known_normal=[f"k{i}" for i in range(n_known)],
        pool_normal=["p0", "p1"],
        pool_abnormal=[f"a{i}" for i in range(n_pool_abnormal)],
        test_normal=["t0"],
        test_abnormal=["t1"],
    )


def test_labelled_validation_comes_from_training_data_nobody_trains_on():
    split = _split()
    carved = split.with_labelled_validation(0.2, num_abnormal=2, seed=3)
    keep, held = holdout_indices(10, 0.2, seed=3)
    # The same normals as the pseudo-anomaly hold-out, so training known normals do not change.
    assert carved.known_normal == [f"k{i}" for i in keep]
    assert carved.val_normal == [f"k{i}" for i in held]
    # The mixture takes the first pool names: the last ones are the unused ones.
    assert carved.val_abnormal == ["a4", "a5"]
    assert carved.pool_abnormal == ["a0", "a1", "a2", "a3"]
    assert (carved.test_normal, carved.test_abnormal) == (["t0"], ["t1"])
    assert carved.to_json()["val"] == {"0": carved.val_normal, "1": ["a4", "a5"]}
    check_disjoint(
        {
            "known": carved.known_normal,
            "val": carved.val_normal + carved.val_abnormal,
            "pool": carved.pool_normal + carved.pool_abnormal,
            "test": carved.test_normal + carved.test_abnormal,
        }
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0, "num_abnormal": 2}, "val_fraction"),
        ({"val_fraction": 0.2, "num_abnormal": 0}, "num_abnormal=0"),
        ({"val_fraction": 0.2, "num_abnormal": 6}, "6 pool abnormals"),
    ],
)
def test_labelled_validation_rejects_impossible_requests(kwargs, message):
    with pytest.raises(SplitError, match=message):
        _split().with_labelled_validation(**kwargs)


def test_labelled_validation_is_not_carved_twice():
    carved = _split().with_labelled_validation(0.2, num_abnormal=2)
    with pytest.raises(SplitError, match="already has a labelled validation"):
        carved.with_labelled_validation(0.2, num_abnormal=1)


def test_datamodule_validates_on_the_carved_labelled_set(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    carved = read_medad_split(root / "data.json").with_labelled_validation(0.25, 3)
    (root / "data.json").write_text(json.dumps(carved.to_json()))
    data = MedADDataModule(root, image_size=32, batch_size=4, split={"unlabeled_size": 6})
    data.setup("fit")
    assert data.val.labels == [0] * 3 + [1] * 3
    assert data.val.names == carved.val_normal + carved.val_abnormal
    assert len(data.known_normal) == 9


def test_datamodule_carves_the_labelled_validation_itself(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    split = read_medad_split(root / "data.json")
    carved = split.with_labelled_validation(0.25, 3, seed=1)
    data = MedADDataModule(
        root, image_size=32, batch_size=4, seed=1, split={"val_fraction": 0.25, "val_abnormal": 3}
    )
    data.setup("fit")
    assert data.val.names == carved.val_normal + carved.val_abnormal
    assert data.val.labels == [0] * 3 + [1] * 3
    # Training data are those of the run without the carve-out: the same known normals (the
    # pseudo-anomaly hold-out takes the same ones) and the same unlabeled mixture, sized by all
    # 12 known normals listed in data.json.
    plain = MedADDataModule(root, image_size=32, batch_size=4, seed=1, split={"val_fraction": 0.25})
    plain.setup("fit")
    assert data.known_normal.names == plain.known_normal.names == carved.known_normal
    assert data.unlabeled.names == plain.unlabeled.names
    assert len(data.unlabeled) == 12
    assert not set(data.val.names) & set(data.unlabeled.names + data.test.names)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"val_abnormal": 10}, r"split\.val_abnormal=10 \(.*data.json\).*10 pool abnormals"),
        ({"val_abnormal": 3, "val_fraction": 0.0}, r"split\.val_fraction=0\.0; set it above 0"),
        ({"val_abnormal": -1}, r"split\.val_abnormal=-1"),
    ],
)
def test_datamodule_carve_out_errors_name_the_setting(tmp_path, split, message):
    root = write_medad_tree(tmp_path / "medad")
    with pytest.raises(ValueError, match=message):
        MedADDataModule(root, image_size=32, batch_size=4, split=split).setup("fit")


def test_datamodule_carve_out_refuses_a_split_with_its_own_validation(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    carved = read_medad_split(root / "data.json").with_labelled_validation(0.25, 3)
    (root / "data.json").write_text(json.dumps(carved.to_json()))
    data = MedADDataModule(root, image_size=32, batch_size=4, split={"val_abnormal": 2})
    with pytest.raises(
        ValueError, match=r"already has a labelled validation set.*split\.val_abnormal to 0"
    ):
        data.setup("fit")
