"""Hostile data inputs beyond issues 13 and 14, one test per class of problem: each either
works correctly or stops with a message that names the file and says what to do; nothing is
silently dropped, clipped, inverted or leaked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_medad_tree
from PIL import Image

from sagan_ad import FolderDataModule, MedADDataModule, SplitError

QUIET = dict(image_size=8, val_fraction=0.0, cache_workers=1, progress=False)


def medad(tmp: Path, edit=None) -> Path:
    counts = {"known": 6, "pool0": 3, "pool1": 3, "test0": 2, "test1": 2}
    root = write_medad_tree(tmp / "medad", counts, size=8)
    if edit is not None:
        split = json.loads((root / "data.json").read_text())
        edit(split)
        (root / "data.json").write_text(json.dumps(split, ensure_ascii=False))
    return root


# ---------------------------------------------------------------- copies of one image


@pytest.mark.parametrize("copy_name", ["copy.png", "TEST1_000.png", "cafe\u0301.png"])
@pytest.mark.parametrize("cached", [False, True])
def test_a_copy_of_a_test_image_among_the_training_images_is_leakage(tmp_path, copy_name, cached):
    # A byte-identical copy under another name (another case, another Unicode normalization)
    # is not the same file to the file system, but it is the same image to the model.
    root = medad(tmp_path, lambda split: split["train"]["0"].append(copy_name))
    shutil.copy(root / "images" / "test1_000.png", root / "images" / copy_name)
    cache = {"cache_dir": tmp_path / "cache"} if cached else {}
    dm = MedADDataModule(root, image_size=8, val_fraction=0.0, unlabeled_size=5, **cache)
    with pytest.raises(SplitError) as err:
        dm.setup()
    assert f"identical bytes ({copy_name}, test1_000.png) in training (1) and test (1)" in str(
        err.value
    )
    dm = MedADDataModule(
        root, image_size=8, val_fraction=0.0, unlabeled_size=5, leakage="warn", **cache
    )
    dm.setup()
    assert copy_name in dm.known_normal.names


def test_a_copy_given_two_roles_in_folders_is_leakage(tmp_path):
    for folder, value in (("normal", 80), ("sick", 200)):
        (tmp_path / folder).mkdir()
        for i in range(4):
            Image.new("L", (8, 8), value + i).save(tmp_path / folder / f"{folder}{i}.png")
    shutil.copy(tmp_path / "normal" / "normal0.png", tmp_path / "sick" / "copy.png")
    dm = FolderDataModule(
        tmp_path / "normal", test_abnormal=tmp_path / "sick", cache_dir=tmp_path / "c", **QUIET
    )
    with pytest.raises(SplitError, match=r"identical bytes \(normal/normal0.png, test_abnormal/"):
        dm.setup()
