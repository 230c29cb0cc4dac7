"""One patient under any spelling, one film under any encoding, and advice that fits the split
(issue 22, classes 2 and 6)."""

from __future__ import annotations

import csv
import logging
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import chest_phantom, mark, write_dicom
from PIL import Image, PngImagePlugin

from sagan_ad.data import FolderDataModule, SplitError, check_leakage
from sagan_ad.data.splits import twins
from sagan_ad.data.splits.leakage import SAME_BYTES
from sagan_ad.data.splits.spellings import canonical_id, near_identical_ids
from sagan_ad.data.splits.split import holdout_groups
from sagan_ad.data.splits.twins import MAX_TOLERANCE, MEAN_TOLERANCE, SAME_PIXELS

QUIET = {"image_size": 32}


def quiet_cache(folder: Path) -> dict:
    """The cache settings of these tests: ``folder``, one worker, no progress bar."""
    return {"dir": folder, "workers": 1, "progress": False}


@pytest.mark.parametrize(
    ("train", "test"),
    [("P8", " P8"), ("P8", "P8 "), ("P8", "P8\x00"), ("1.2.3", "1.2.3\x00 ")],
)
def test_identities_are_compared_in_the_groupings_canonical_form(train, test):
    ids = {"a": {"PatientID": train}, "b": {"PatientID": test}}
    with pytest.raises(
        SplitError,
        match=r"PatientID 'P8' in training \(1\) and test \(1\)|"
        r"PatientID '1\.2\.3' in training \(1\) and test \(1\)",
    ):
        check_leakage({"training": ["a"], "test": ["b"]}, ids)


def test_words_for_a_missing_value_never_match():
    ids = {"a": {"PatientID": "N/A"}, "b": {"PatientID": " nan "}}
    assert check_leakage({"training": ["a"], "test": ["b"]}, ids) == []
    assert canonical_id("  NULL ") == ""


def test_a_patient_spelt_two_ways_with_one_name_and_birth_date_is_warned(caplog):
    person = {"PatientName": "DOE^JANE", "PatientBirthDate": "19700101"}
    ids = {
        "a": {"PatientID": "P-0008", **person},
        "b": {"PatientID": "p_8", **person},
        "c": {"PatientID": "P9", **person, "PatientBirthDate": "19800101"},
        "d": {"PatientID": "p9"},  # no name or birth date: cannot tell
    }
    with caplog.at_level(logging.WARNING):
        assert check_leakage({"training": ["a", "c"], "test": ["b", "d"]}, ids, source="ward") == []
    assert (
        "ward: 1 PatientID(s) look like one patient spelt twice (same PatientName and "
        "PatientBirthDate; the IDs differ only in case, zero padding or separators): 'P-0008' "
        "and 'p_8' (training and test)"
    ) in caplog.text
    assert near_identical_ids(ids) == [("P-0008", "p_8")]


def test_names_and_birth_dates_are_never_compared_as_identities():
    person = {"PatientName": "DOE^J", "PatientBirthDate": "19700101"}
    ids = {"a": {"PatientID": "P1", **person}, "b": {"PatientID": "P2", **person}}
    assert check_leakage({"training": ["a"], "test": ["b"]}, ids) == []


NFD, NFC = (unicodedata.normalize(form, "José") for form in ("NFD", "NFC"))


@pytest.mark.parametrize("kind", ["PatientID", "group (pid)"])
@pytest.mark.parametrize(
    ("train", "test", "shown"),
    [
        ("P1\u200b", "P1", "P1"),  # zero-width space
        ("\ufeffP1", "P1", "P1"),  # byte-order mark
        ("P\u20601", "P1", "P1"),  # word joiner, inside
        ("\uff11\uff12", "12", "12"),  # full-width digits
        ("P1\u00a0", "P1", "P1"),  # no-break space
        (NFD, NFC, NFC),
        ("DOE^JOHN^^^", "DOE^JOHN", "DOE^JOHN"),  # empty DICOM components
        ("P1^ ", "P1", "P1"),
    ],
)
def test_ids_no_reader_can_tell_apart_are_one_patient(kind, train, test, shown):
    ids = {"a": {kind: train}, "b": {kind: test}}
    with pytest.raises(SplitError) as info:
        check_leakage({"training": ["a"], "test": ["b"]}, ids)
    assert f"{kind} {shown!r} in training (1) and test (1)" in str(info.value)


def write_groups(path: Path, groups: dict[str, str]) -> Path:
    """A CSV of image names and their ``pid``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pid"])
        writer.writerows(groups.items())
    return path


def csv_folders(root: Path, patient: str, again: str) -> FolderDataModule:
    """Normal and sick films, with CSV groups in which ``f0.png`` (normal) belongs to
    ``patient`` and ``f10.png`` (sick) to ``again``, the rest to patients of their own."""
    normal, sick = _normal_and_sick(root)
    normals = {"f0.png": patient, **{f"f{i}.png": f"N{i}" for i in (1, 2, 3)}}
    sicks = {"f10.png": again, **{f"f{i}.png": f"S{i}" for i in (11, 12, 13)}}
    return FolderDataModule(
        write_groups(normal / "normal.csv", normals),
        test_abnormal=write_groups(sick / "sick.csv", sicks),
        **QUIET,
        split={"group_by": "pid", "val_fraction": 0.0},
        cache=quiet_cache(root / "c"),
    )


def test_an_invisible_character_in_a_csv_group_hides_no_leak(tmp_path):
    dm = csv_folders(tmp_path, "P1\u200b", "\ufeffP1")
    with pytest.raises(SplitError, match=r"group \(pid\) 'P1' in training \(1\) and test \(1\)"):
        dm.setup()


def test_a_patient_id_with_empty_dicom_components_is_one_patient(tmp_path):
    for folder, i, patient in (("normal", 0, "DOE^JOHN^^^"), ("sick", 1, "DOE^JOHN")):
        pixels = mark(chest_phantom(20, 20), i)
        write_dicom(tmp_path / folder / "a.dcm", pixels, bits_stored=12, PatientID=patient)
    write_dicom(tmp_path / "normal" / "b.dcm", chest_phantom(20, 20), bits_stored=12)
    dm = FolderDataModule(
        tmp_path / "normal",
        test_abnormal=tmp_path / "sick",
        **QUIET,
        split={"group_by": "PatientID", "val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError, match=r"PatientID 'DOE\^JOHN' in training \(1\) and test"):
        dm.setup()


@pytest.mark.parametrize(
    ("train", "test", "named"),
    [
        ("P1", "p1", "'P1' and 'p1' (training and test)"),
        ("007", "7", "'007' and '7' (training and test)"),
        ("12.0", "12", "'12' and '12.0' (test and training)"),
    ],
)
def test_group_values_that_may_be_one_patient_are_warned_not_merged(train, test, named, caplog):
    ids = {"a": {"group (pid)": train}, "b": {"group (pid)": test}}
    with caplog.at_level(logging.WARNING):
        assert check_leakage({"training": ["a"], "test": ["b"]}, ids, source="ward") == []
    assert (
        "ward: 1 group (pid) value(s) may be one patient spelt twice on two sides of the split "
        f"(they differ only in case, zero padding, a trailing '.0' or separators): {named}. They "
        "are kept apart as different patients"
    ) in caplog.text
    assert canonical_id(train) != canonical_id(test)


def test_group_spellings_on_one_side_only_are_not_named(caplog):
    ids = {"a": {"group (pid)": "P1"}, "b": {"group (pid)": "p1"}, "c": {"group (pid)": "P2"}}
    with caplog.at_level(logging.WARNING):
        assert check_leakage({"training": ["a", "b"], "test": ["c"]}, ids) == []
    assert "spelt twice" not in caplog.text


def test_a_float_export_of_a_csv_group_is_warned_and_kept_apart(tmp_path, caplog):
    dm = csv_folders(tmp_path, "12.0", "12")
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "'12' and '12.0' (test and training)" in caplog.text
    assert "if they are one patient, give them one spelling in the data" in caplog.text
    assert (dm.groups["normal/f0.png"], dm.groups["test_abnormal/f10.png"]) == ("12.0", "12")


def reencoded(source: Path, target: Path, how: str) -> None:
    image = Image.open(source)
    if how == "png_chunk":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "a PACS viewer")
        image.save(target.with_suffix(".png"), pnginfo=info)
    elif how == "tiff":
        image.save(target.with_suffix(".tif"), compression="tiff_lzw")
    else:
        image.save(target.with_suffix(".jpg"), quality=100)


def _normal_and_sick(root: Path) -> tuple[Path, Path]:
    """Two folders of four distinct 40 px films each: ``normal/f0-3.png``, ``sick/f10-13.png``."""
    normal, sick = root / "normal", root / "sick"
    for folder, base in ((normal, 0), (sick, 10)):
        folder.mkdir()
        for i in range(4):
            pixels = mark(chest_phantom(40, 40, high=255), base + i).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"f{base + i}.png")
    return normal, sick


@pytest.mark.parametrize("how", ["png_chunk", "tiff", "jpeg100"])
def test_a_test_film_re_encoded_into_training_is_a_leak(tmp_path, how):
    normal, sick = _normal_and_sick(tmp_path)
    reencoded(sick / "f10.png", normal / "again", how)
    dm = FolderDataModule(normal, test_abnormal=sick, **QUIET, cache=quiet_cache(tmp_path / "c"))
    with pytest.raises(SplitError) as info:
        dm.setup()
    message = str(info.value)
    assert f"{SAME_PIXELS} (normal/again" in message and "test_abnormal/f10.png" in message
    assert "remove the copies (one image under two names or encodings)" in message
    assert "group_by" not in message  # no patients to group in a folder of PNGs


def test_a_byte_copy_is_named_once_as_a_copy(tmp_path):
    ids = {
        "a": {SAME_BYTES: "d1", SAME_PIXELS: "a"},
        "b": {SAME_BYTES: "d1", SAME_PIXELS: "a"},
    }
    with pytest.raises(SplitError) as info:
        check_leakage({"training": ["a"], "test": ["b"]}, ids)
    assert str(info.value).count(" in training (1) and test (1)") == 1
    assert SAME_BYTES in str(info.value) and SAME_PIXELS not in str(info.value)


def test_advice_fits_how_the_split_was_made():
    ids = {"a": {"PatientID": "P1"}, "b": {"PatientID": "P1"}}
    sides = {"training": ["a"], "test": ["b"]}

    def message(**kwargs) -> str:
        with pytest.raises(SplitError) as info:
            check_leakage(sides, ids, **kwargs)
        return str(info.value)

    drawn = message()
    assert "set split.group_by to the column or DICOM keyword that identifies patients" in drawn
    grouped = message(group_by="site")
    assert (
        "split.group_by='site' keeps its groups whole, but these images share another identity"
        in grouped
    )
    assert "set split.group_by" not in grouped
    given = message(roles_given=True, group_by="PatientID")
    assert "the split you gave puts a patient (PatientID) in training and test: move" in given
    assert "set split.group_by" not in given


def write_anonymized(folder: Path, count: int, start: int) -> None:
    for i in range(count):
        write_dicom(
            folder / f"im{start + i}.dcm",
            mark(chest_phantom(20, 20), start + i),
            bits_stored=12,
            PatientID="ANON",
        )


def test_a_placeholder_patient_id_is_named_not_val_fraction(tmp_path):
    write_anonymized(tmp_path / "normal", 6, 0)
    dm = FolderDataModule(
        tmp_path / "normal",
        **QUIET,
        split={"group_by": "PatientID", "val_fraction": 0.3},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError) as info:
        dm.setup()
    message = str(info.value)
    assert message.startswith("group 'ANON' holds 6 of the 6 known normals")
    assert "anonymizer's placeholder" in message and "val_fraction" not in message


def test_a_placeholder_on_two_sides_is_named_as_such(tmp_path):
    write_anonymized(tmp_path / "normal", 4, 0)
    write_anonymized(tmp_path / "sick", 2, 10)
    dm = FolderDataModule(
        tmp_path / "normal",
        test_abnormal=tmp_path / "sick",
        **QUIET,
        split={"group_by": "PatientID", "val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError) as info:
        dm.setup()
    message = str(info.value)
    assert "shared by most images: PatientID 'ANON' (6 of 6 images)" in message
    assert "split.group_by='PatientID'" not in message and "move each patient" not in message


def test_holdout_of_a_few_groups_still_names_val_fraction():
    with pytest.raises(SplitError, match=r"split\.val_fraction=0.9 of 6 known normals in 3 groups"):
        holdout_groups(["p1", "p1", "p2", "p2", "p3", "p3"], 0.9, seed=0)


def test_copies_stay_reported_by_bytes(tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(4):
        pixels = mark(chest_phantom(40, 40, high=255), i).astype(np.uint8)
        Image.fromarray(pixels).save(normal / f"f{i}.png")
    sick = tmp_path / "sick"
    sick.mkdir()
    shutil.copy(normal / "f0.png", sick / "copy.png")
    Image.fromarray(mark(chest_phantom(40, 40, high=255), 9).astype(np.uint8)).save(sick / "x.png")
    dm = FolderDataModule(normal, test_abnormal=sick, **QUIET, cache=quiet_cache(tmp_path / "c"))
    with pytest.raises(SplitError, match=r"identical bytes \(normal/f0.png, test_abnormal/copy"):
        dm.setup()


def _twins_by_every_pair(images: np.ndarray, names: list[str]) -> dict[str, str]:
    """`pixel_twins` by brute force: every pair compared pixel by pixel."""
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    flat = images.reshape(len(names), -1).astype(np.int16)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            difference = np.abs(flat[i] - flat[j])
            if difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(names)):
        groups.setdefault(root(i), []).append(i)
    return {names[i]: names[g[0]] for g in groups.values() if len(g) > 1 for i in g}


@pytest.mark.parametrize("seed", range(4))
def test_pixel_twins_finds_every_pair_that_a_full_comparison_finds(monkeypatch, seed):
    # Small chunks, so that candidates are looked for across chunks of the sorted order.
    monkeypatch.setattr(twins, "_CHUNK", 7)
    rng = np.random.default_rng(seed)
    films = rng.integers(0, 256, (12, 2, 24, 27), dtype=np.uint8)
    films[:4] //= 8  # dark films, close in mean: many candidates, few twins
    images = films[rng.integers(0, len(films), 60)].astype(np.int16)
    # Half re-encoded (one level off here and there), half changed too much to be one film.
    step = np.where(np.arange(60) < 30, 1, 4)[:, None, None, None]
    touched = rng.random(images.shape) < rng.uniform(0.05, 0.3)
    images += rng.integers(-1, 2, images.shape) * step * touched
    images = np.clip(images, 0, 255).astype(np.uint8)
    names = [f"film{i}.png" for i in range(len(images))]
    found = twins.pixel_twins(images, names)
    assert found == _twins_by_every_pair(images, names)
    assert found  # the draw repeats films: some twins must be there


def test_remembered_twins_search_once_per_content(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    films = rng.integers(0, 256, (6, 1, 16, 16), dtype=np.uint8)
    films[3] = films[0]
    names = [f"f{i}.png" for i in range(6)]
    record = tmp_path / "cache" / "twins.json"
    searches = []
    search = twins.pixel_twins
    monkeypatch.setattr(twins, "pixel_twins", lambda *a: searches.append(1) or search(*a))
    expected = {"f0.png": "f0.png", "f3.png": "f0.png"}
    assert twins.remembered_pixel_twins(films, names, record) == expected
    assert twins.remembered_pixel_twins(films.copy(), list(names), record) == expected
    assert len(searches) == 1  # the same pixels and names: read back
    changed = films.copy()
    changed[3, 0, 0, 0] ^= 255  # no longer one film with f0
    assert twins.remembered_pixel_twins(changed, names, record) == {}
    assert twins.remembered_pixel_twins(films, names[::-1], record) == {
        "f5.png": "f5.png",
        "f2.png": "f5.png",
    }  # the names go with the order: another answer, searched again
    assert len(searches) == 3
    record.write_text('{"key": ')  # a record cut short is searched again and replaced
    assert twins.remembered_pixel_twins(films, names, record) == expected
    assert len(searches) == 4
    assert twins.remembered_pixel_twins(films, names, record) == expected
    assert len(searches) == 4


def test_a_re_encoded_test_film_is_still_caught_on_the_second_setup(tmp_path):
    normal, sick = _normal_and_sick(tmp_path)
    FolderDataModule(normal, test_abnormal=sick, **QUIET, cache=quiet_cache(tmp_path / "c")).setup()
    assert (tmp_path / "c" / "twins.json").is_file()
    # A copy added after the first setup: the record is of other images, so it is searched.
    reencoded(sick / "f10.png", normal / "again", "tiff")
    for _ in range(2):  # and the answer, once recorded, is the same
        dm = FolderDataModule(
            normal, test_abnormal=sick, **QUIET, cache=quiet_cache(tmp_path / "c")
        )
        with pytest.raises(SplitError, match=f"{SAME_PIXELS} \\(normal/again"):
            dm.setup()
