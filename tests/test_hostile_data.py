"""Hostile data inputs beyond issues 13 and 14, one test per class of problem: each either
works correctly or stops with a message that names the file and says what to do; nothing is
silently dropped, clipped, inverted or leaked."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import (
    DICOM_ROOT,
    NIH_ROOT,
    chest_phantom,
    film,
    mark,
    requires_dicom_samples,
    requires_nih,
    write_dicom,
    write_medad_tree,
)
from PIL import Image
from test_raw_datamodules import (
    LAG_COUNTS,
    RSNA_COUNTS,
    lag_tree,
    rsna_tree,
    vindr_tree,
    write_csv,
)

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
    VinDrCXRDataModule,
)
from sagan_ad.data import decode_image, read_dicom, read_medad_split
from sagan_ad.data.splits.leakage import SAME_BYTES, check_leakage

QUIET = dict(image_size=8)


def quiet_cache(folder: Path) -> dict:
    """Cache settings: decoded into `folder` by one process, without a progress bar."""
    return {"dir": folder, "workers": 1, "progress": False}


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
    cache = {"cache": {"dir": tmp_path / "cache"}} if cached else {}
    dm = MedADDataModule(
        root, image_size=8, **cache, split={"val_fraction": 0.0, "unlabeled_size": 5}
    )
    with pytest.raises(SplitError) as err:
        dm.setup()
    assert f"identical bytes ({copy_name}, test1_000.png) in training (1) and test (1)" in str(
        err.value
    )
    dm = MedADDataModule(
        root,
        image_size=8,
        **cache,
        split={"val_fraction": 0.0, "unlabeled_size": 5, "leakage": "warn"},
    )
    dm.setup()
    assert copy_name in dm.known_normal.names


def test_a_copy_given_two_roles_in_folders_is_leakage(tmp_path):
    for folder, value in (("normal", 80), ("sick", 200)):
        (tmp_path / folder).mkdir()
        for i in range(4):
            Image.fromarray(film(value + i)).save(tmp_path / folder / f"{folder}{i}.png")
    shutil.copy(tmp_path / "normal" / "normal0.png", tmp_path / "sick" / "copy.png")
    dm = FolderDataModule(
        tmp_path / "normal",
        test_abnormal=tmp_path / "sick",
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError, match=r"identical bytes \(normal/normal0.png, test_abnormal/"):
        dm.setup()


# ---------------------------------------------------------------- what a folder holds


def test_links_fifos_and_nas_thumbnails_are_reported_or_skipped_never_taken(tmp_path, caplog):
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(4):
        Image.fromarray(film(60 + i)).save(normal / f"n{i}.png")
    # Synology keeps a real JPEG thumbnail of each image in @eaDir/<name>/.
    thumbs = normal / "@eaDir" / "n0.png"
    thumbs.mkdir(parents=True)
    Image.new("L", (4, 4), 60).save(thumbs / "SYNOFILE_THUMB_M.jpg")
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(
            normal, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
        )
        dm.setup()
    assert len(dm.known_normal) == 4
    assert "skipped 1 hidden or system file(s) or folder(s) (@eaDir" in caplog.text
    (normal / "dangling.png").symlink_to(tmp_path / "gone.png")
    (normal / "loop.png").symlink_to("loop.png")
    os.mkfifo(normal / "pipe.dcm")
    dm = FolderDataModule(
        normal, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
    )
    with pytest.raises(ImageReadError) as err:
        dm.setup()
    message = str(err.value)
    assert f"dangling.png is a symbolic link to {tmp_path / 'gone.png'}, which does not exist" in (
        message
    )
    assert "loop.png is a symbolic link loop" in message
    assert "pipe.dcm is not a regular file (a FIFO, socket or device)" in message
    dm = FolderDataModule(
        normal,
        on_error="skip",
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    dm.setup()
    assert len(dm.known_normal) == 4
    # predict lists them too, and reading one says what it is instead of blocking on the FIFO.
    with pytest.raises(ImageReadError, match="pipe.dcm is not a regular file"):
        decode_image(normal / "pipe.dcm")


@pytest.mark.parametrize(
    ("written", "on_disk", "difference"),
    [
        ("TEST1_000.png", "test1_000.png", "letter case"),
        ("caf\u00e9.png", "cafe\u0301.png", "Unicode normalization (NFC / NFD)"),
        ("test1_000.png ", "test1_000.png", "spaces"),
        ("sub\\test1_000.png", "sub/test1_000.png", "Windows backslashes"),
    ],
)
def test_a_name_that_misses_its_file_by_a_detail_names_the_file_and_the_detail(
    tmp_path, written, on_disk, difference
):
    root = medad(tmp_path, lambda split: split["test"]["1"].__setitem__(0, written))
    (root / "images" / on_disk).parent.mkdir(exist_ok=True)
    shutil.move(root / "images" / "test1_000.png", root / "images" / on_disk)
    with pytest.raises(ImageReadError) as err:
        MedADDataModule(root, image_size=8, split={"val_fraction": 0.0}).setup()
    assert f"does not exist, but '{root / 'images' / on_disk}' does" in str(err.value)
    assert f"the names differ in {difference}" in str(err.value)


def test_a_folder_named_as_an_image_and_a_folder_named_data_json_say_so(tmp_path):
    root = medad(tmp_path, lambda split: split["train"]["0"].append("folder.png"))
    (root / "images" / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match=r"folder\.png is a folder, not an image file"):
        MedADDataModule(
            root, image_size=8, split={"val_fraction": 0.0, "unlabeled_size": 5}
        ).setup()
    (root / "data.json").unlink()
    (root / "data.json").mkdir()
    with pytest.raises(SplitError, match="data.json is a folder"):
        read_medad_split(root / "data.json")
    (root / "data.json").rmdir()
    (root / "data.json").write_text("[]")
    with pytest.raises(SplitError, match="the top level must be an object"):
        read_medad_split(root / "data.json")


# ---------------------------------------------------------------- decoders that guess wrong


def raw_tiff(path: Path, pixels: np.ndarray, photometric: int = 1, sample_format: int = 1) -> Path:
    """A one-strip little-endian TIFF of one grey sample per pixel, written byte by byte (PIL
    writes neither MinIsWhite at 16 bits nor float64)."""
    data = np.ascontiguousarray(pixels, pixels.dtype.newbyteorder("<")).tobytes()
    height, width = pixels.shape
    offset = 8 + 2 + 12 * 10 + 4  # header, tag count, ten tags, next-IFD offset
    tags = [  # (tag, type: 3 SHORT or 4 LONG, value)
        (256, 3, width),
        (257, 3, height),
        (258, 3, pixels.dtype.itemsize * 8),
        (259, 3, 1),
        (262, 3, photometric),
        (273, 4, offset),
        (277, 3, 1),
        (278, 3, height),
        (279, 4, len(data)),
        (339, 3, sample_format),
    ]
    # A SHORT value is padded to the four bytes of the value field.
    entries = b"".join(
        struct.pack("<HHII" if kind == 4 else "<HHIHH", tag, kind, 1, value, *[0] * (kind == 3))
        for tag, kind, value in tags
    )
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(tags)) + entries + b"\0" * 4 + data)
    return path


def test_min_is_white_tiff_is_inverted_at_eight_bits_and_refused_deeper(tmp_path):
    ramp = np.tile(np.arange(0, 240, 40, dtype=np.uint8), (2, 1))
    assert (decode_image(raw_tiff(tmp_path / "w8.tif", ramp, photometric=0)) == 255 - ramp).all()
    deep = raw_tiff(tmp_path / "w16.tif", ramp.astype(np.uint16) * 16, photometric=0)
    with pytest.raises(ImageReadError, match="MinIsWhite .* save the image as MinIsBlack"):
        decode_image(deep)
    flt = raw_tiff(tmp_path / "wf.tif", ramp.astype(np.float32) / 255, 0, sample_format=3)
    with pytest.raises(ImageReadError, match="w?f.tif: .*MinIsWhite"):
        decode_image(flt)


def test_colour_spaces_pil_cannot_convert_are_refused(tmp_path):
    Image.new("LAB", (4, 4), (50, 0, 0)).save(tmp_path / "lab.tif")
    with pytest.raises(ImageReadError, match="pixel mode 'LAB' is not supported"):
        decode_image(tmp_path / "lab.tif")
    # YCbCr and CMYK convert correctly.
    Image.new("YCbCr", (4, 4), (128, 128, 128)).save(tmp_path / "ycc.jpg")
    assert abs(int(decode_image(tmp_path / "ycc.jpg")[0, 0, 0]) - 128) <= 2


@pytest.mark.parametrize(("mode", "value"), [("L", 10), ("RGB", (10, 20, 30)), ("I;16", 3000)])
def test_a_png_colour_key_is_transparency_too(tmp_path, mode, value):
    # tRNS: every pixel of the key value is transparent, exactly like alpha 0.
    image = Image.new(mode, (4, 4), value)
    image.save(tmp_path / "key.png", transparency=value)
    with pytest.raises(ImageReadError, match="16 pixel\\(s\\) are transparent"):
        decode_image(tmp_path / "key.png")
    other = value + 1 if isinstance(value, int) else (11, 20, 30)
    image.save(tmp_path / "unused_key.png", transparency=other)
    assert decode_image(tmp_path / "unused_key.png").size in (16, 48)


def test_files_pil_cannot_identify_say_what_they_are(tmp_path):
    floats = raw_tiff(tmp_path / "f64.tif", np.zeros((2, 2)), sample_format=3)
    with pytest.raises(ImageReadError, match="f64.tif: .*a TIFF of a kind PIL cannot decode"):
        decode_image(floats)
    (tmp_path / "page.png").write_text("<html>404 Not Found</html>")
    with pytest.raises(ImageReadError, match="page.png: .*its bytes say it is text"):
        decode_image(tmp_path / "page.png")
    (tmp_path / "doc.jpg").write_bytes(b"%PDF-1.4 ...")
    with pytest.raises(ImageReadError, match="doc.jpg: .*its bytes say it is a PDF document"):
        decode_image(tmp_path / "doc.jpg")


def test_an_image_saved_with_a_dicom_suffix_is_read_as_what_it_is(tmp_path):
    # As a DICOM saved as .png is read as DICOM (by its magic), content wins over suffix.
    Image.new("L", (6, 4), 9).save(tmp_path / "scan.dcm", format="PNG")
    assert decode_image(tmp_path / "scan.dcm").tolist() == [[9] * 6] * 4
    with pytest.raises(ImageReadError, match="scan.dcm"):
        decode_image(tmp_path / "scan.dcm", force_dicom=True)


@requires_dicom_samples
def test_a_dicom_whose_preamble_is_a_tiff_header_is_read_as_dicom(tmp_path):
    # The NEMA WG04 files are dual DICOM / TIFF: the TIFF reader would show them as negatives.
    path = DICOM_ROOT / "nema_wg04_RG1_UNCR_explicitLE.dcm"
    assert path.read_bytes()[:4] == b"II*\0"
    copy = shutil.copy(path, tmp_path / "film.tif")
    assert np.array_equal(decode_image(copy), decode_image(path))


# ---------------------------------------------------------------- DICOM headers that lie


def raw_tag(path: Path, placeholder: bytes, value: bytes) -> Path:
    """Rewrite a placeholder value in the file's bytes (pydicom refuses to write bad values)."""
    data = path.read_bytes()
    assert data.count(placeholder) == 1 and len(placeholder) == len(value)
    path.write_bytes(data.replace(placeholder, value))
    return path


@pytest.mark.parametrize(
    "tags",
    [
        {"WindowCenter": "nan", "WindowWidth": "1000"},  # was: NaN everywhere, a black image
        {"WindowCenter": "987654", "WindowWidth": "1000"},  # made 'abcdef': was a TypeError
        {"WindowCenter": "2000", "WindowWidth": "inf"},
        {"WindowCenter": "2000", "WindowWidth": "3000", "VOILUTFunction": "CUBIC"},
        {"VOILUTSequence": []},  # was: every pixel 0.5, a grey image
    ],
)
def test_unusable_windows_fall_back_to_the_configured_window(tmp_path, tags):
    pixels = chest_phantom(20, 20)
    path = write_dicom(tmp_path / "w.dcm", pixels, **tags)
    if "987654" in tags.values():
        raw_tag(path, b"987654", b"abcdef")
    fallback = read_dicom(write_dicom(tmp_path / "plain.dcm", pixels))
    assert np.array_equal(read_dicom(path), fallback)


def test_a_tiny_rescale_slope_keeps_the_image(tmp_path):
    # A floor on the span of the modality values turned these into a black image.
    pixels = chest_phantom(20, 20)
    tiny = read_dicom(write_dicom(tmp_path / "t.dcm", pixels, RescaleSlope="1e-30"))
    plain = read_dicom(write_dicom(tmp_path / "p.dcm", pixels))
    assert np.allclose(tiny, plain, atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"RescaleSlope": "987654"}, "RescaleSlope is 'abcdef', not a number"),
        ({"RescaleSlope": ""}, "RescaleSlope is empty, not a number"),
        ({"Rows": None}, "the image header is invalid: Rows is missing"),
        ({"BitsStored": 20}, "BitsStored 20 exceeds BitsAllocated 16"),
        ({"SamplesPerPixel": 3}, "SamplesPerPixel is 3 but MONOCHROME2 has 1"),
        ({"Columns": 10}, r"decode to shape \(2, 20, 10\), but the header .* describes \(20, 10\)"),
    ],
)
def test_dicom_headers_that_contradict_the_pixels_are_named(tmp_path, edit, message):
    path = write_dicom(tmp_path / "h.dcm", chest_phantom(20, 20), RescaleIntercept="0")
    ds = pydicom.dcmread(path)
    for keyword, value in edit.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    if edit.get("RescaleSlope") == "987654":
        raw_tag(path, b"987654", b"abcdef")
    with pytest.raises(ImageReadError, match=f"h.dcm: .*{message}"):
        decode_image(path)


# ---------------------------------------------------------------- release CSVs that disagree


def rewrite_csv(path: Path, edit) -> None:
    """Apply ``edit`` to each data row (a dict) of a CSV file; ``None`` drops the row."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in (edit(dict(row)) for row in rows) if row is not None]
    write_csv(path, list(rows[0]), [list(row.values()) for row in kept])


def rsna_module(root: Path, tmp: Path) -> RSNADataModule:
    return RSNADataModule(
        root,
        **QUIET,
        split={"val_fraction": 0.0, "counts": RSNA_COUNTS, "anomaly_ratio": 0.5},
        cache=quiet_cache(tmp / "cache"),
    )


def test_rsna_targets_as_pandas_writes_them_keep_their_boxes(tmp_path):
    root = rsna_tree(tmp_path / "rsna")
    reference = rsna_module(root, tmp_path / "a")
    reference.setup()
    # "1.0" was not "1": every box was dropped without a word.
    rewrite_csv(
        root / "stage_2_train_labels.csv", lambda row: {**row, "Target": f"{row['Target']}.0"}
    )
    dm = rsna_module(root, tmp_path / "b")
    dm.setup()
    assert sum(len(b) for b in dm.test.boxes) == sum(len(b) for b in reference.test.boxes) > 0


@pytest.mark.parametrize(
    ("csv_name", "edit", "message"),
    [
        (
            "stage_2_detailed_class_info.csv",
            lambda row: {**row, "class": row["class"].lower()},
            r"unknown class value\(s\) 'lung opacity' \(12 rows\), 'normal' \(8 rows\)",
        ),
        (
            "stage_2_train_labels.csv",
            lambda row: {**row, "Target": "yes" if row["Target"] == "1" else row["Target"]},
            r"line 10: Target 'yes' \(must be 0 or 1\)",
        ),
        (
            "stage_2_train_labels.csv",
            lambda row: None if row["patientId"] == "p008" else row,
            r"patient p008: class 'Lung Opacity' but no box",
        ),
        (
            "stage_2_train_labels.csv",
            lambda row: (
                {**row, "x": "1", "y": "1", "width": "4", "height": "4", "Target": "1"}
                if row["patientId"] == "p000"
                else row
            ),
            r"patient p000: 1 opacity box\(es\) \(Target 1\) but class 'Normal'",
        ),
    ],
)
def test_rsna_csvs_that_disagree_or_hold_unknown_values_are_named(
    tmp_path, csv_name, edit, message
):
    root = rsna_tree(tmp_path / "rsna")
    rewrite_csv(root / csv_name, edit)
    with pytest.raises(ValueError, match=message):
        rsna_module(root, tmp_path).setup()


def test_vindr_no_finding_is_read_in_any_case_and_checked_against_class_id(tmp_path):
    counts = dict(known_normal=3, pool_normal=2, pool_abnormal=2, test_normal=2, test_abnormal=2)
    options = dict(**QUIET, split={"val_fraction": 0.0, "counts": counts, "anomaly_ratio": 0.5})
    root = vindr_tree(tmp_path / "vindr")
    reference = VinDrCXRDataModule(root, **options, cache=quiet_cache(tmp_path / "a"))
    reference.setup()
    table = root / "train.csv"
    rewrite_csv(table, lambda row: {**row, "class_name": row["class_name"].replace("f", "F")})
    dm = VinDrCXRDataModule(root, **options, cache=quiet_cache(tmp_path / "b"))
    dm.setup()
    assert dm.summary() == reference.summary()
    assert dm.test.labels == reference.test.labels
    # A finding labelled with the "No finding" id (or the reverse) is a relabelled CSV.
    rewrite_csv(table, lambda row: {**row, "class_id": "14"} if row["image_id"] == "v09" else row)
    with pytest.raises(ValueError, match="class_name 'Nodule/Mass' with class_id 14"):
        VinDrCXRDataModule(root, **options, cache=quiet_cache(tmp_path / "c")).setup()


# ---------------------------------------------------------------- a damaged cache


def damage_index(cache: ImageCache) -> None:
    text = cache.index_path.read_text()
    cache.index_path.write_text(text[: len(text) // 2])


def damage_shard(cache: ImageCache) -> None:
    shard = next(cache.folder.glob("shard-*.npy"))
    shard.write_bytes(shard.read_bytes()[:200])


def other_settings_shard(cache: ImageCache) -> None:
    shard = next(cache.folder.glob("shard-*.npy"))
    np.save(shard, np.zeros((6, 3, 8, 8), np.uint8))


def short_entry(cache: ImageCache) -> None:
    index = json.loads(cache.index_path.read_text())
    index[next(iter(index))] = ["shard-x.npy", 0]
    cache.index_path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        (damage_index, "is damaged (JSONDecodeError"),
        (lambda c: c.index_path.write_bytes(b"\xff\xfe"), "is damaged (UnicodeDecodeError"),
        (lambda c: c.index_path.write_text("[]"), "it holds a list, not an object"),
        (damage_shard, "is damaged (ValueError"),
        (lambda c: next(c.folder.glob("shard-*.npy")).unlink(), "is damaged (FileNotFoundError"),
        (other_settings_shard, "it holds uint8 images of shape (3, 8, 8)"),
        (short_entry, "has 1 entries that cannot be read back"),
    ],
)
def test_a_damaged_cache_is_rebuilt_with_a_warning_not_a_traceback(
    tmp_path, caplog, damage, warning
):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"i{i}.png")
        Image.fromarray(film(40 * i)).save(paths[-1])
    settings = PreprocessSettings(8)
    reference = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    cache = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False)
    damage(cache)
    with caplog.at_level(logging.WARNING):
        again = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    assert warning in caplog.text
    assert np.array_equal(again.images, reference.images)
    # Repaired: the next run reads the rebuilt entries without a word.
    caplog.clear()
    ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    assert "damaged" not in caplog.text and "cannot be read back" not in caplog.text


def test_a_cache_folder_that_cannot_be_written_is_named(tmp_path):
    Image.fromarray(film(0)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match=r"cannot create the cache folder .*file.*choose another"):
        ImageCache(tmp_path / "file", PreprocessSettings(8), progress=False).load(
            [tmp_path / "a.png"]
        )
    cache = ImageCache(tmp_path / "c", PreprocessSettings(8), progress=False)
    cache.folder.mkdir(parents=True)
    cache.index_path.mkdir()  # something made a folder where the index goes
    with pytest.raises(OSError, match=r"cannot write .*index.json: it is a folder, not a regular"):
        cache.load([tmp_path / "a.png"])


# ---------------------------------------------------------------- metadata and groups


def test_metadata_rows_are_matched_as_files_and_one_image_has_one_row(tmp_path, caplog):
    root = medad(tmp_path)
    (root / "meta.csv").write_text("file,sex\n./known_000.png,M\ngone.png,F\n")
    with caplog.at_level(logging.WARNING):
        dm = MedADDataModule(
            root, image_size=8, metadata_csv="meta.csv", split={"val_fraction": 0.0}
        )
        dm.setup()
    # "./known_000.png" is known_000.png, as in data.json; it used to be dropped unseen.
    assert dm.known_normal.metadata[dm.known_normal.names.index("known_000.png")] == {"sex": "M"}
    assert "1 row(s) name no image of data.json (for example 'gone.png')" in caplog.text
    (root / "meta.csv").write_text("file,sex\nknown_000.png,M\nknown_001.png,M\nknown_000.png,F\n")
    with pytest.raises(ValueError, match=r"describes one image twice: lines 2 and 4"):
        MedADDataModule(
            root, image_size=8, metadata_csv="meta.csv", split={"val_fraction": 0.0}
        ).setup()


def test_missing_group_values_are_no_group_and_are_counted(tmp_path, caplog):
    (tmp_path / "n").mkdir()
    lines = ["path,patient"]
    for i in range(8):
        Image.fromarray(film(20 * i)).save(tmp_path / "n" / f"i{i}.png")
        # pandas writes a missing ID as "nan" after astype(str): not one patient of 4 films.
        lines.append(f"n/i{i}.png,{['nan', 'N/A', '', 'None'][i] if i < 4 else f'P{i // 2}'}")
    (tmp_path / "normal.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(
            tmp_path / "normal.csv",
            **QUIET,
            split={"val_fraction": 0.25, "group_by": "patient"},
            cache=quiet_cache(tmp_path / "c"),
        )
        dm.setup()
    assert "4 of 8 images have no patient (the column is empty or says" in caplog.text
    assert {dm.groups[f"normal/n/i{i}.png"] for i in range(4)} == {""}
    held = set(dm.val.names) - {n for n in dm.val.names if n.endswith("#pseudo_anomaly")}
    assert held
    for name in held:  # patients stay whole: both films of a held-out patient are held out
        patient = dm.groups[name]
        assert not patient or all(n in held for n, p in dm.groups.items() if p == patient)


def test_an_empty_path_in_a_folder_csv_names_the_line(tmp_path):
    (tmp_path / "n").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "n" / "a.png")
    (tmp_path / "normal.csv").write_text("path,site\nn/a.png,A\n,B\n")
    with pytest.raises(ValueError, match=r"normal.csv, line 3: the path is empty"):
        FolderDataModule(
            tmp_path / "normal.csv",
            **QUIET,
            split={"val_fraction": 0.0},
            cache=quiet_cache(tmp_path / "c"),
        ).setup()


def test_copies_inside_the_training_data_held_apart_by_validation_are_a_warning(caplog):
    ids = {name: {SAME_BYTES: "d1"} for name in ("a.png", "b.png", "c.png")}
    with caplog.at_level(logging.WARNING):
        found = check_leakage({"training": ["a.png"], "validation": ["b.png"]}, ids)
    assert found == ["identical bytes (a.png, b.png) in training (1) and validation (1)"]
    assert "copy(ies) of one image sit in training and validation" in caplog.text
    with pytest.raises(SplitError, match=r"identical bytes \(a.png, b.png, c.png\)"):
        check_leakage({"training": ["a.png"], "validation": ["b.png"], "test": ["c.png"]}, ids)


@requires_nih
def test_the_real_nih_duplicate_pair_is_reported_when_validation_splits_it(caplog):
    # 00002658_001.png and _002.png are byte-identical films of one patient, one among the
    # known normals and one in the normal pool; seed 0 of examples/nih_cpu.yaml holds out one.
    with caplog.at_level(logging.WARNING):
        dm = MedADDataModule(
            NIH_ROOT, image_size=16, seed=0, split={"val_fraction": 0.2, "val_abnormal": 34}
        )
        dm.setup()
    assert "identical bytes (00002658_001.png, 00002658_002.png) in training (1) and " in (
        caplog.text
    )


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("bad", [3.7, "3", True])
def test_split_counts_must_be_whole_numbers(tmp_path, bad):
    # 3.7 was floored to 3, True counted as 1, "3" a TypeError.
    counts = {**RSNA_COUNTS, "known_normal": bad}
    root = rsna_tree(tmp_path / "rsna")
    dm = RSNADataModule(
        root,
        **QUIET,
        split={"val_fraction": 0.0, "counts": counts},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError, match=rf"\{{'known_normal': {bad!r}\}} are not whole numbers"):
        dm.setup()


def test_a_missing_image_dir_is_named_once_not_as_every_missing_file(tmp_path):
    root = medad(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"image_dir='imgs': .*imgs is not a folder"):
        MedADDataModule(root, image_dir="imgs", image_size=8, split={"val_fraction": 0.0}).setup()


def test_a_voi_lut_shorter_than_its_descriptor_names_the_fix(tmp_path):
    path = write_dicom(tmp_path / "lut.dcm", chest_phantom(20, 20))
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]  # 4096 entries declared, 3 given
    item.add_new(0x00283006, "OW", np.array([0, 100, 200], np.uint16).tobytes())
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.save_as(path)
    with pytest.raises(
        ImageReadError, match=r"lut.dcm: .*VOI LUT cannot be applied .*'percentile'"
    ):
        decode_image(path)
    assert read_dicom(path, DicomOptions(window="percentile")).shape == (20, 20)


def test_a_split_file_that_relabels_images_is_refused(tmp_path):
    root = rsna_tree(tmp_path / "rsna")
    drawn = {"val_fraction": 0.0, "counts": RSNA_COUNTS, "anomaly_ratio": 0.5}
    RSNADataModule(root, **QUIET, split=drawn, cache=quiet_cache(tmp_path / "a")).setup()
    split = json.loads((tmp_path / "a" / "data.json").read_text())
    split["test"]["0"], split["test"]["1"] = split["test"]["1"], split["test"]["0"]
    (tmp_path / "swapped.json").write_text(json.dumps(split))
    dm = RSNADataModule(
        root,
        **QUIET,
        split={**drawn, "file": tmp_path / "swapped.json"},
        cache=quiet_cache(tmp_path / "b"),
    )
    # The labels used to follow the split file: abnormal films scored as normal ones.
    with pytest.raises(SplitError, match=r"puts 4 image\(s\) in a part of the other class"):
        dm.setup()


def test_names_written_relative_to_root_instead_of_image_dir_say_so(tmp_path):
    root = medad(tmp_path, lambda split: split["test"].__setitem__("0", ["images/test0_000.png"]))
    with pytest.raises(SplitError, match=r"relative to image_dir='images'; drop the images/ pre"):
        MedADDataModule(root, image_size=8, split={"val_fraction": 0.0}).setup()


@pytest.mark.parametrize("marker", [True, False])
def test_a_burned_in_marker_that_sets_the_depth_of_16_bit_images_is_warned(
    tmp_path, caplog, marker
):
    root = medad(tmp_path)
    for i, path in enumerate(sorted((root / "images").iterdir())):
        pixels = mark(chest_phantom(40, 40, high=4095 - 50 * i), i)  # 12-bit data
        if marker:
            pixels[:2, :2] = 65535  # an "R" marker burned in at full scale
        Image.fromarray(pixels).save(path)
    with caplog.at_level(logging.WARNING):
        dm = MedADDataModule(
            root, image_size=16, split={"val_fraction": 0.0}, cache={"dir": tmp_path / "c"}
        )
        dm.setup()
    warned = "16 of the 16-bit images keep 99% of their pixels in the darkest quarter"
    assert (warned in caplog.text) == marker
    # Nothing is clipped to hide it: with the marker the anatomy keeps 1/16 of its range.
    assert (int(np.percentile(dm.known_normal.images.numpy(), 50)) < 16) == marker


def test_an_anonymizer_placeholder_shared_by_most_images_is_named_as_such(tmp_path):
    for role, count in (("normal", 5), ("sick", 3)):
        for i in range(count):
            write_dicom(
                tmp_path / role / f"{role}{i}.dcm",
                mark(chest_phantom(16, 16), i + 5 * (role == "sick")),
                PatientID="ANONYMOUS",
            )
    dm = FolderDataModule(
        tmp_path / "normal",
        test_abnormal=tmp_path / "sick",
        **QUIET,
        split={"val_fraction": 0.0},
        cache=quiet_cache(tmp_path / "c"),
    )
    with pytest.raises(SplitError) as err:
        dm.setup()
    assert "PatientID 'ANONYMOUS' in training (5) and test (3)" in str(err.value)
    assert "shared by most images: PatientID 'ANONYMOUS' (8 of 8 images); if that is an " in (
        str(err.value)
    )
    assert "group_by='PatientID'" not in str(err.value)  # the grouping would not help


def test_copies_on_one_side_are_counted_in_a_warning(tmp_path, caplog):
    root = medad(tmp_path, lambda split: split["train"]["0"].append("again.png"))
    shutil.copy(root / "images" / "known_000.png", root / "images" / "again.png")
    with caplog.at_level(logging.WARNING):
        dm = MedADDataModule(root, image_size=8, split={"val_fraction": 0.0, "unlabeled_size": 5})
        dm.setup()
    assert "1 image(s) are there more than once under other names, on one side" in caplog.text
    assert "(known_000.png, again.png)" in caplog.text or "(again.png, known_000.png)" in (
        caplog.text
    )
    assert len(dm.known_normal) == 7  # reported, not dropped


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_separated_by_another_character_says_so(tmp_path, separator):
    (tmp_path / "n").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "n" / "a.png")
    (tmp_path / "normal.csv").write_text(f"path{separator}site\nn/a.png{separator}A\n")
    expected = re.escape(f"seem separated by {separator!r}: save it comma-separated")
    with pytest.raises(ValueError, match=expected):
        FolderDataModule(
            tmp_path / "normal.csv",
            **QUIET,
            split={"val_fraction": 0.0},
            cache=quiet_cache(tmp_path / "c"),
        ).setup()
    root = medad(tmp_path)
    (root / "meta.csv").write_text(f"file{separator}sex\nknown_000.png{separator}M\n")
    with pytest.raises(ValueError, match=expected):
        MedADDataModule(
            root, image_size=8, metadata_csv="meta.csv", split={"val_fraction": 0.0}
        ).setup()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"image_size": "64"}, "image_size='64': must be a whole number"),
        ({"split": {"val_fraction": "0.1"}}, r"split\.val_fraction='0\.1': must be a number"),
        ({"split": {"unlabeled_size": 2.5}}, r"split\.unlabeled_size=2\.5: must be a whole number"),
        ({"seed": -1}, "seed=-1: must be >= 0"),
        (
            {"decode": {"percentiles": (1,)}},
            r"percentiles=\(1,\): give a low and a high percentile",
        ),
    ],
)
def test_options_of_the_wrong_type_are_named_not_a_type_error(tmp_path, option, message):
    # From Python these failed later with a TypeError naming nothing, or were truncated.
    with pytest.raises(ValueError, match=message):
        MedADDataModule(medad(tmp_path), **{"image_size": 8, **option})


def test_lag_attention_maps_shared_by_several_images_are_not_guessed(tmp_path, caplog):
    root = lag_tree(tmp_path / "lag")
    # A second image with the stem of non1 (in another subfolder): whose map is non1.jpg?
    shutil.copy(root / "non_glaucoma" / "image" / "non3.jpg", root / "non_glaucoma" / "non1.jpg")
    with caplog.at_level(logging.WARNING):
        dm = LAGDataModule(
            root,
            **QUIET,
            split={"val_fraction": 0.0, "counts": LAG_COUNTS, "anomaly_ratio": 0.5},
            cache=quiet_cache(tmp_path / "c"),
        )
        records = {r.name: r for r in dm.records()}
    assert "1 file stem(s) name several images or attention maps (non1, ...)" in caplog.text
    assert "attention_map" not in records["non_glaucoma/non1.jpg"].metadata
    assert "attention_map" not in records["non_glaucoma/image/non1.jpg"].metadata
    assert (
        records["non_glaucoma/image/non3.jpg"]
        .metadata["attention_map"]
        .endswith("attention_map/non3.jpg")
    )
