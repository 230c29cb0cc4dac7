"""The setup record: a second setup of unchanged files and settings reads one file and ends in
the same state, warnings included; any change of a file, listing or setting sets up again."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chest_phantom, mark, write_dicom
from PIL import Image

from sagan_ad.data import DecodeSettings, FolderDataModule, ImageSet, SplitError
from sagan_ad.data.caching.ownership import NotACacheFolderError
from sagan_ad.data.caching.setup_record import (
    STATE,
    SetupRecord,
    UnrecordableError,
    decode,
    encode,
)
from sagan_ad.data.modules import raw as raw_module

QUIET = {"image_size": 32}


def quiet_cache(folder: Path, **settings) -> dict:
    """The cache settings of these tests: one worker, no progress bar."""
    return {"dir": folder, "workers": 1, "progress": False, **settings}


def _films(folder: Path, count: int, base: int = 0, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = mark(chest_phantom(40, 40, high=255), base + i).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"f{base + i}{suffix}")
    _settle(folder)


def _settle(folder: Path) -> None:
    """Date the files a minute back: a file modified within `RACY_NS` of a setup may still
    change unseen, and such a setup is not recorded (tested below)."""
    past = time.time_ns() - 60_000_000_000
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, ns=(past, past))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _films(tmp_path / "normal", 12)
    _films(tmp_path / "ward", 6, base=20)
    _films(tmp_path / "sick", 4, base=40)
    return tmp_path


def _module(
    tree: Path, split: dict | None = None, cache: dict | None = None, **kwargs
) -> FolderDataModule:
    settings = {
        "unlabeled": tree / "ward",
        "test_abnormal": tree / "sick",
        "cache": quiet_cache(tree / "cache", **(cache or {})),
        "split": {"val_fraction": 0.25, **(split or {})},
        **QUIET,
        **kwargs,
    }
    return FolderDataModule(tree / "normal", **settings)


def _loads(monkeypatch) -> list[int]:
    """Count the full setups (each reads the files through `RawDataModule.load`)."""
    calls: list[int] = []
    load = raw_module.RawDataModule.load
    monkeypatch.setattr(
        raw_module.RawDataModule, "load", lambda self: calls.append(1) or load(self)
    )
    return calls


def _state(dm: FolderDataModule) -> dict:
    return {k: v for k, v in vars(dm).items() if k in STATE or k.startswith("_")}


def _same(a, b) -> None:
    """Equal values, tensors and arrays compared element by element, types included."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, ImageSet):
        for field in ("images", "labels", "names", "metadata", "boxes", "original_sizes"):
            _same(getattr(a, field), getattr(b, field))
        _same(a.decoded_stats, b.decoded_stats)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    else:
        assert a == b


def test_a_second_setup_reads_the_record_and_ends_in_the_same_state(tree, monkeypatch):
    loads = _loads(monkeypatch)
    first = _module(tree)
    first.setup()
    assert loads == [1] and (tree / "cache" / "setup.npz").is_file()
    second = _module(tree)
    second.setup()
    assert loads == [1]  # read from the record: no file of the data was opened
    _same(_state(first), _state(second))
    batches = [next(iter(dm.train_dataloader())) for dm in (first, second)]
    _same(batches[0], batches[1])
    assert second.split_manifest() == first.split_manifest()


def test_prepare_data_then_setup_reads_the_record_once_filled(tree, monkeypatch):
    _module(tree).setup()
    loads = _loads(monkeypatch)
    dm = _module(tree)
    dm.prepare_data()  # the command line's order
    dm.setup("fit")
    assert loads == []


def test_a_setup_sets_only_state_the_record_keeps(tree):
    dm = _module(tree)
    before = dict(vars(dm))
    dm.setup()
    changed = {k for k, v in vars(dm).items() if k not in before or before[k] is not v}
    # A new attribute set by setup must be state (public in STATE, or private), or the
    # record would leave it out or count it as a setting.
    assert changed <= STATE | {k for k in changed if k.startswith("_")}
    assert {"known_normal", "unlabeled", "val", "test", "identities", "groups"} <= changed


@pytest.mark.parametrize(
    "change",
    [
        "added_film",
        "removed_film",
        "touched_film",
        "seed",
        "val_fraction",
        "image_size",
        "decode",
        "dicom_tags",
    ],
)
def test_any_change_of_files_or_settings_sets_up_again(tree, monkeypatch, change):
    _module(tree).setup()
    loads = _loads(monkeypatch)
    kwargs = {}
    if change == "added_film":
        _films(tree / "ward", 1, base=30)
    elif change == "removed_film":
        (tree / "ward" / "f20.png").unlink()
        _settle(tree / "ward")
    elif change == "touched_film":
        film = tree / "sick" / "f40.png"
        stat = film.stat()
        os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    else:
        kwargs = {
            "seed": {"seed": 1},
            "val_fraction": {"split": {"val_fraction": 0.5}},
            "image_size": {"image_size": 40},
            "decode": {"decode": DecodeSettings(bit_depth="dtype")},
            "dicom_tags": {"dicom_tags": ["ViewPosition"]},
        }[change]
    dm = _module(tree, **kwargs)
    dm.setup()
    assert loads == [1]
    dm2 = _module(tree, **kwargs)
    dm2.setup()  # and the new record is read the time after
    assert loads == [1]
    _same(_state(dm), _state(dm2))


def test_a_file_listed_by_a_csv_is_checked_where_it_lies(tree, monkeypatch):
    elsewhere = tree / "elsewhere"
    _films(elsewhere, 3, base=60)
    listing = tree / "lists" / "ward.csv"
    listing.parent.mkdir()
    listing.write_text("path\n" + "".join(f"../elsewhere/f{60 + i}.png\n" for i in range(3)))
    _settle(listing.parent)
    _module(tree, unlabeled=listing).setup()
    loads = _loads(monkeypatch)
    _module(tree, unlabeled=listing).setup()
    assert loads == []
    # The CSV is unchanged; a film it lists, outside every listed folder, is rewritten.
    _films(elsewhere, 1, base=70)
    os.replace(elsewhere / "f70.png", elsewhere / "f61.png")
    _settle(elsewhere)
    _module(tree, unlabeled=listing).setup()
    assert loads == [1]


def test_the_warnings_of_the_setup_are_given_again(tree, caplog):
    (tree / "normal" / "Thumbs.db").write_bytes(b"x")
    _settle(tree / "normal")
    _module(tree).setup()
    message = "skipped 1 hidden or system file(s)"
    from sagan_ad.data import messages

    messages._logged.clear()  # as in a new process
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sagan_ad"):
        _module(tree).setup()
    assert message in caplog.text


def test_a_damaged_record_is_set_up_again_and_replaced(tree, monkeypatch, caplog):
    _module(tree).setup()
    record = tree / "cache" / "setup.npz"
    record.write_bytes(record.read_bytes()[:1000])
    loads = _loads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sagan_ad"):
        _module(tree).setup()
    assert loads == [1] and "cannot be read" in caplog.text
    _module(tree).setup()
    assert loads == [1]


def test_a_setup_that_fails_leaves_no_record(tree):
    # A test film copied into training: the leakage check refuses, every time.
    (tree / "normal" / "copy.png").write_bytes((tree / "sick" / "f40.png").read_bytes())
    _settle(tree / "normal")
    for _ in range(2):
        with pytest.raises(SplitError):
            _module(tree).setup()
        assert not (tree / "cache" / "setup.npz").exists()


def test_no_record_for_a_subclass_or_content_identity(tree, monkeypatch):
    class Mine(FolderDataModule):
        pass

    Mine(tree / "normal", **QUIET, cache=quiet_cache(tree / "mine")).setup()
    assert not (tree / "mine" / "setup.npz").exists()
    _module(tree, cache={"identity": "content"}).setup()
    assert not (tree / "cache" / "setup.npz").exists()


def test_a_dicom_tree_grouped_by_patient_keeps_its_groups(tmp_path, monkeypatch):
    folder = tmp_path / "export"
    for i in range(12):
        pixels = mark(chest_phantom(40, 40), i).astype(np.uint16)
        write_dicom(folder / f"p{i % 4}" / f"im{i}.dcm", pixels, PatientID=f"P{i % 4}")
    _settle(folder)
    settings = {
        "cache": quiet_cache(tmp_path / "cache"),
        "split": {"group_by": "PatientID"},
        **QUIET,
    }
    first = FolderDataModule(folder, **settings)
    first.setup()
    loads = _loads(monkeypatch)
    second = FolderDataModule(folder, **settings)
    second.setup()
    assert loads == []
    assert second.groups == first.groups and set(second.groups.values()) == {"P0", "P1", "P2", "P3"}
    _same(_state(first), _state(second))


def test_encode_keeps_every_type_of_state():
    images = ImageSet(
        torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4),
        [0, 1],
        ["a", "b"],
        metadata=[{"view": "PA"}, {"view": "AP"}],
        boxes=[np.zeros((0, 4), np.float32), np.array([[1, 2, 3, 4]], np.float32)],
        original_sizes=[(40, 50), (60, 70)],
        decoded_stats=torch.rand(2, 6),
    )
    state = {
        "images": images,
        "nested": {"k": [1, 2.5, None, True, "x", (3, Path("/a/b")), {"deep": torch.ones(2)}]},
        "plain": {"names": ["a", "b"], "ids": {"a": {"bytes": "d1"}}},
        "none": None,
    }
    arrays: list[np.ndarray] = []
    encoded = json.loads(json.dumps(encode(state, arrays)))  # as the record holds it
    # Plain JSON stays as it is, so that reading it back costs no walk over its items.
    assert encoded["\0dict"]["plain"] == state["plain"]
    assert encode(state["plain"], []) == state["plain"]
    _same(decode(encoded, arrays), state)
    with pytest.raises(UnrecordableError):
        encode({"x": object()}, [])
    with pytest.raises(UnrecordableError):
        SetupRecord(Path("/nonexistent/setup.npz"), None, [], []).key  # noqa: B018


def test_a_file_modified_just_before_the_setup_is_not_recorded(tree, monkeypatch):
    film = tree / "ward" / "f20.png"
    film.write_bytes(film.read_bytes())  # now: its time may not yet tell a later change
    loads = _loads(monkeypatch)
    _module(tree).setup()
    assert not (tree / "cache" / "setup.npz").exists()
    _settle(tree / "ward")
    _module(tree).setup()
    _module(tree).setup()
    assert loads == [1, 1]  # recorded by the second setup, read by the third


def test_a_setup_whose_warnings_are_silenced_is_not_recorded(tree):
    logging.getLogger("sagan_ad").setLevel(logging.ERROR)
    try:
        _module(tree).setup()
    finally:
        logging.getLogger("sagan_ad").setLevel(logging.NOTSET)
    assert not (tree / "cache" / "setup.npz").exists()
    _module(tree).setup()
    assert (tree / "cache" / "setup.npz").exists()


def test_a_restored_setup_protects_its_inputs_and_rewrites_its_split(tree):
    from sagan_ad.protected import OutputIsInputError, forget_inputs, writable_target

    listing = tree / "lists" / "sick.csv"
    listing.parent.mkdir()
    listing.write_text("path\n../sick/f40.png\n../sick/f41.png\n")
    _settle(listing.parent)
    _module(tree, test_abnormal=listing).setup()
    split = (tree / "cache" / "data.json").read_text()
    (tree / "cache" / "data.json").unlink()
    forget_inputs()  # a new command
    _module(tree, test_abnormal=listing).setup()
    for path in (listing, tree / "sick" / "f40.png"):  # the table and an image it lists
        with pytest.raises(OutputIsInputError):
            writable_target(path)
    assert (tree / "cache" / "data.json").read_text() == split


def test_a_cache_folder_inside_the_data_folder_still_sees_new_films(tmp_path):
    _films(tmp_path / "normal", 8)
    settings = {"split": {"val_fraction": 0.25}, **QUIET}

    def films_read(dm: FolderDataModule) -> int:
        return len(dm.known_normal) + len(dm.val) // 2  # each held-out film once, as a normal

    cache = tmp_path / "normal" / "cache"
    first = FolderDataModule(tmp_path / "normal", **settings, cache=quiet_cache(cache))
    first.setup()
    _films(tmp_path / "normal", 1, base=30)
    again = FolderDataModule(tmp_path / "normal", **settings, cache=quiet_cache(cache))
    again.setup()
    assert films_read(again) == films_read(first) + 1
    # The data folder itself holds the user's files: the cache never writes among them.
    before = sorted(os.listdir(tmp_path / "normal"))
    itself = FolderDataModule(
        tmp_path / "normal", **settings, cache=quiet_cache(tmp_path / "normal")
    )
    with pytest.raises(NotACacheFolderError, match=r"normal as a cache folder \(cache.dir\)"):
        itself.setup()
    assert sorted(os.listdir(tmp_path / "normal")) == before


class _OwnBlend:
    """A validation synthesizer of the user's own: its code is not in the digest."""

    def __call__(self, images, generator=None):
        return images.clone(), torch.zeros_like(images[:, :1], dtype=torch.bool)


def test_a_setting_of_the_users_own_type_is_never_recorded(tree):
    _module(tree, val_synthesizer=_OwnBlend()).setup()
    assert not (tree / "cache" / "setup.npz").exists()


def test_an_image_two_sets_hold_is_kept_once():
    images = torch.arange(3 * 16, dtype=torch.uint8).view(3, 1, 4, 4)
    known = ImageSet(images, [0, 0, 0], ["a", "b", "c"])
    changed = images[[2, 0]].clone()
    changed[0, 0, 0, 0] += 1  # "c" again, but not pixel for pixel: kept apart
    unlabeled = ImageSet(changed, [-1, -1], ["c", "a"])
    arrays: list[np.ndarray] = []
    encoded = json.loads(json.dumps(encode({"k": known, "u": unlabeled}, arrays)))
    assert sum(a.size for a in arrays if a.dtype == np.uint8) == 4 * 16  # a, b, c, changed c
    restored = decode(encoded, arrays)
    _same(restored["k"], known)
    _same(restored["u"], unlabeled)


def test_the_record_is_read_without_huge_pages_and_numpy_is_set_back():
    from sagan_ad.data.caching.setup_record import small_pages

    switch = np._core.multiarray._set_madvise_hugepage
    original = switch(True)
    try:
        for before in (True, False):
            switch(before)
            with small_pages():
                inside = switch(False)  # returns the setting it replaces
            assert inside is False
            assert switch(True) is before  # set back on leaving the block
    finally:
        switch(original)
