"""Bad or unusual data inputs beyond tests/test_bad_inputs.py (issue 13, classes 1, 5 and the
data side of 6): each either works correctly or stops with a message that names the file or
setting and says what to do; nothing is silently dropped, clipped or overwritten."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    DICOM_ROOT,
    TINY_DATA_ARGS,
    TINY_MODEL_ARGS,
    chest_phantom,
    film,
    requires_dicom_samples,
    write_dicom,
    write_medad_tree,
)
from PIL import Image

from sagan_ad import DecodeSettings, FolderDataModule, ImageReadError, MedADDataModule, SplitError
from sagan_ad.cli import main
from sagan_ad.data import (
    IMAGE_EXTENSIONS,
    IMAGE_SUFFIXES,
    FolderPredictDataModule,
    decode_image,
    list_images,
    load_image,
    original_size,
    read_medad_split,
)

# ---------------------------------------------------------------- data.json: names are files


def medad(tmp: Path, edit=None, text: str | None = None) -> Path:
    root = write_medad_tree(tmp / "medad")
    if edit is not None:
        split = json.loads((root / "data.json").read_text())
        edit(split)
        (root / "data.json").write_text(json.dumps(split))
    if text is not None:
        (root / "data.json").write_text(text)
    return root


def setup(root: Path, **kwargs) -> MedADDataModule:
    dm = MedADDataModule(root, image_size=16, split={"val_fraction": 0.0}, **kwargs)
    dm.setup()
    return dm


@pytest.mark.parametrize(
    "spelling",
    ["./known_000.png", "sub/../known_000.png", "../images/known_000.png", "ABSOLUTE"],
)
def test_one_file_under_two_spellings_is_refused_as_leakage(tmp_path, spelling):
    root = medad(tmp_path)
    name = str(root / "images" / "known_000.png") if spelling == "ABSOLUTE" else spelling
    split = json.loads((root / "data.json").read_text())
    split["test"]["0"].append(name)
    (root / "data.json").write_text(json.dumps(split))
    with pytest.raises(SplitError) as info:
        setup(root)
    message = str(info.value)
    assert f'{name!r} (test."0") and \'known_000.png\' (train."0") are the same file' in message
    assert str((root / "images" / "known_000.png").resolve()) in message
    assert "every file may appear once" in message


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_links_to_a_listed_file_are_the_same_file(tmp_path, link):
    root = medad(tmp_path)
    target = root / "images" / "known_000.png"
    alias = root / "images" / "alias.png"
    (os.symlink if link == "symlink" else os.link)(target, alias)
    split = json.loads((root / "data.json").read_text())
    split["test"]["1"].append("alias.png")
    (root / "data.json").write_text(json.dumps(split))
    with pytest.raises(SplitError, match=r"'alias\.png' \(test\.\"1\"\) and 'known_000\.png'"):
        setup(root)


def test_names_outside_the_image_folder_need_allow_outside_root(tmp_path):
    root = medad(tmp_path)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(film(250, (20, 20))).save(outside)
    for name in ("../../elsewhere.png", str(outside)):
        split = json.loads((root / "data.json").read_text())
        split["test"]["1"] = [name]
        (root / "data.json").write_text(json.dumps(split))
        with pytest.raises(SplitError) as info:
            setup(root)
        assert f'1 name(s) point outside {root / "images"}: {name!r} (test."1")' in str(info.value)
        assert "set allow_outside_root=True" in str(info.value)
        dm = setup(root, allow_outside_root=True)
        assert dm.test.names[-1] == name and int(dm.test.images[-1].max()) == 250


def test_a_link_inside_the_image_folder_that_points_elsewhere_is_inside(tmp_path):
    root = medad(tmp_path)
    outside = tmp_path / "store" / "film.png"
    outside.parent.mkdir()
    Image.fromarray(film(7, (20, 20))).save(outside)
    os.symlink(outside, root / "images" / "film.png")
    split = json.loads((root / "data.json").read_text())
    split["test"]["0"].append("film.png")
    (root / "data.json").write_text(json.dumps(split))
    dm = setup(root)
    index = dm.test.names.index("film.png")
    assert int(dm.test.images[index].max()) == 7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.update(valid=s.pop("test")),
            r"unknown key 'valid'; did you mean 'val'\? \(the keys allowed at the top are "
            r"'train', 'test', 'val'\)",
        ),
        (lambda s: s.update(tets=s.pop("test")), r"unknown key 'tets'; did you mean 'test'\?"),
        (
            lambda s: s["train"].update(unlabelled=s["train"].pop("unlabeled")),
            r"unknown key train\.'unlabelled'; did you mean 'unlabeled'\? \(the keys allowed in "
            r"train are '0', 'unlabeled'\)",
        ),
        (
            lambda s: s["test"].update({"2": []}),
            r"unknown key test\.'2' \(the keys allowed in test are '0', '1'\)",
        ),
        (
            lambda s: s["train"].update({"0": {"images": s["train"]["0"]}}),
            r'train\."0" must be a list of file names',
        ),
        (lambda s: s["test"]["0"].append(7), r"test\.'0' must be a list of file names"),
        (
            lambda s: s["test"]["0"].append(""),
            r"data\.json: '' \(test\.\"0\"\): not a file name \(empty, blank or with a NUL",
        ),
    ],
)
def test_data_json_keys_and_names_are_checked(tmp_path, edit, message):
    with pytest.raises(SplitError, match=message):
        setup(medad(tmp_path, edit))


def test_a_wrapped_data_json_names_the_unknown_key(tmp_path):
    root = medad(tmp_path)
    split = json.loads((root / "data.json").read_text())
    (root / "data.json").write_text(json.dumps({"data": split}))
    with pytest.raises(SplitError, match=r"data\.json: unknown key 'data' \(the keys allowed at"):
        setup(root)


def test_duplicate_keys_are_refused_not_silently_merged(tmp_path):
    root = medad(tmp_path)
    text = (root / "data.json").read_text()
    extra = ', "test": {"0": [], "1": []}}'
    (root / "data.json").write_text(text[:-1] + extra)
    with pytest.raises(SplitError) as info:
        setup(root)
    assert str(info.value) == (
        f"{root / 'data.json'}: key 'test' appears twice in one object, and JSON keeps only "
        "the last: merge the two lists under one key"
    )


def test_a_byte_order_mark_is_harmless_but_other_encodings_are_named(tmp_path):
    root = medad(tmp_path)
    plain = read_medad_split(root / "data.json")
    text = (root / "data.json").read_text()
    (root / "data.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_medad_split(root / "data.json") == plain
    (root / "data.json").write_bytes(text.encode("utf-16"))
    with pytest.raises(SplitError) as info:
        read_medad_split(root / "data.json")
    assert str(info.value) == (
        f"{root / 'data.json'} is not UTF-8 text (it looks like UTF-16): byte 0xff at "
        "position 0 cannot be decoded; save the file as UTF-8"
    )
    (root / "data.json").write_bytes(text.replace("known_000", "kn\u00e9wn").encode("latin-1"))
    with pytest.raises(SplitError, match=r"is not UTF-8 text: byte 0xe9 at position \d+"):
        read_medad_split(root / "data.json")


def run_cli(*args: str) -> str:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == 2, stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    return stderr.getvalue()


def test_cli_names_a_data_json_that_is_not_utf8(tmp_path):
    root = medad(tmp_path)
    (root / "data.json").write_bytes((root / "data.json").read_text().encode("utf-16"))
    printed = run_cli(
        "fit",
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        "--data=sagan_ad.MedADDataModule",
        f"--data.root={root}",
        "--data.image_size=32",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    )
    assert printed.startswith(f"error: {root / 'data.json'} is not UTF-8 text")


def test_a_csv_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "n.png").write_bytes(b"")
    (tmp_path / "list.csv").write_bytes("path,site\nn.png,K\u00f6ln\n".encode("latin-1"))
    with pytest.raises(ValueError) as info:
        FolderDataModule(tmp_path / "list.csv", cache={"dir": tmp_path / "c"}).setup()
    assert str(info.value) == (
        f"{tmp_path / 'list.csv'} is not UTF-8 text (byte 0xf6 at position 17): save it as UTF-8"
    )


def test_a_folder_datamodule_split_with_unknown_labels_loads_in_medad(tmp_path):
    root = medad(tmp_path)
    split = json.loads((root / "data.json").read_text())
    pool = split["train"]["unlabeled"]["0"] + split["train"]["unlabeled"]["1"]
    split["train"]["unlabeled"] = {"0": [], "1": [], "unknown": pool}
    (root / "data.json").write_text(json.dumps(split))
    dm = setup(root)
    assert dm.unlabeled.names == pool and set(dm.unlabeled.labels) == {-1}
    split["train"]["unlabeled"]["0"] = pool[:1]
    split["train"]["unlabeled"]["unknown"] = pool[1:]
    (root / "data.json").write_text(json.dumps(split))
    with pytest.raises(SplitError, match=r"lists images of unknown label beside the labelled"):
        setup(root)


# ---------------------------------------------------------------- readers that used to guess


def test_float_tiff_in_unit_range_reads_as_its_intensities(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "ramp.tiff")
    image = load_image(tmp_path / "ramp.tiff", 32)[0]
    np.testing.assert_allclose(image[0], np.round(ramp[0] * 255), atol=1)
    assert image.min() == 0 and image.max() == 255


@pytest.mark.parametrize(("low", "high"), [(-1000.0, 3000.0), (0.0, 255.0), (-0.5, 0.5)])
def test_float_tiff_outside_unit_range_is_refused(tmp_path, low, high):
    pixels = np.linspace(low, high, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(pixels, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError) as info:
        load_image(tmp_path / "f.tif", 8)
    assert str(info.value) == (
        f"{tmp_path / 'f.tif'}: float pixel values range from {low:g} to {high:g}; "
        "float images are read as intensities in [0, 1] (0 black, 1 white): rescale to [0, 1] "
        "or export as 8 or 16-bit integers"
    )


def test_twelve_bit_data_in_sixteen_bit_files_keep_their_contrast(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "x.png")
    cv2.imwrite(str(tmp_path / "x.tif"), ramp)
    for name in ("x.png", "x.tif"):
        image = load_image(tmp_path / name, 64)[0]
        assert image.min() == 0 and image.max() == 255, name
        assert len(np.unique(image)) == 64, name  # one grey per column of the ramp
    dtype = load_image(tmp_path / "x.png", 64, bit_depth="dtype")[0]
    assert dtype.max() == 16 and len(np.unique(dtype)) == 17  # what version 0.1 gave


def test_explicit_bit_depth_refuses_values_it_cannot_hold(tmp_path):
    Image.fromarray(film(5000, dtype=np.uint16)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", 8, bit_depth=14).max() == round(5000 / 16383 * 255)
    with pytest.raises(ImageReadError) as info:
        load_image(tmp_path / "x.png", 8, bit_depth=12)
    assert str(info.value) == (
        f"{tmp_path / 'x.png'}: pixel value 5000 exceeds bit_depth=12 (largest 4095): set "
        "bit_depth to the depth the files were exported with, or 'auto'"
    )
    with pytest.raises(ValueError, match=r"bit_depth=20: must be 'auto', 'dtype' or a number"):
        FolderDataModule(tmp_path, decode=DecodeSettings(bit_depth=20))


def test_palette_one_bit_and_opaque_alpha_images_read_as_their_colours(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png")[..., 0], grey)
    Image.fromarray(grey > 127).save(tmp_path / "b.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "b.png"), (grey > 127) * 255)
    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "la.png"), grey)
    Image.fromarray(grey).convert("RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "rgba.png")[..., 1], grey)


def cmyk_jpeg(path: Path) -> np.ndarray:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = (200, 40, 40)
    rgb[8:] = (30, 30, 220)
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
    return rgb


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    rgb = cmyk_jpeg(tmp_path / "c.jpg")
    decoded = decode_image(tmp_path / "c.jpg").astype(int)
    assert np.abs(decoded[2:6, 2:14] - rgb[2:6, 2:14]).max() <= 8
    assert np.abs(decoded[10:14, 2:14] - rgb[10:14, 2:14]).max() <= 8


@pytest.mark.parametrize(
    "image",
    [
        lambda a: Image.fromarray(a, "RGBA"),
        lambda a: Image.fromarray(a[..., [0, 3]], "LA"),
        "palette",
    ],
)
def test_transparent_pixels_are_refused_not_dropped(tmp_path, image):
    rgba = np.full((8, 8, 4), 120, np.uint8)
    rgba[..., 3] = 255
    rgba[2:4, 2:4, 3] = 0
    if image == "palette":
        img = Image.fromarray(rgba[..., 0]).convert("P")
        img.info["transparency"] = 120
        img.save(tmp_path / "t.png", transparency=120)
        expected = 64
    else:
        image(rgba).save(tmp_path / "t.png")
        expected = 4
    with pytest.raises(ImageReadError) as info:
        load_image(tmp_path / "t.png", 8)
    assert str(info.value) == (
        f"{tmp_path / 't.png'}: {expected} pixel(s) are transparent (alpha channel): "
        "what lies under them is not part of the picture; flatten the image onto a background "
        "and save it without alpha"
    )


def test_sixteen_bit_rgba_with_transparency_is_refused(tmp_path):
    bgra = np.full((8, 8, 4), 3000, np.uint16)
    bgra[..., 3] = 65535
    cv2.imwrite(str(tmp_path / "ok.png"), bgra)
    assert decode_image(tmp_path / "ok.png").shape == (8, 8, 3)
    bgra[0, 0, 3] = 0
    cv2.imwrite(str(tmp_path / "t.png"), bgra)
    with pytest.raises(ImageReadError, match=r"1 pixel\(s\) are transparent"):
        decode_image(tmp_path / "t.png")


TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""What a viewer does for each EXIF / TIFF orientation (EXIF 2.32, TIFF 6.0 tag 274)."""


@pytest.mark.parametrize(
    ("suffix", "orientation"),
    [(s, o) for s in (".jpg", ".png") for o in range(1, 9)]
    + [(s, o) for s in (".tif", ".16.tif") for o in range(1, 5)],
)
def test_exif_and_tiff_orientation_are_applied_as_a_viewer_does(tmp_path, suffix, orientation):
    pixels = np.zeros((10, 30), np.uint16 if suffix == ".16.tif" else np.uint8)
    pixels[:3, :5] = 200  # a bright corner shows where the top-left went
    pixels[0, 0] = 100
    img = Image.fromarray(pixels)
    plain, turned = tmp_path / f"plain{suffix}", tmp_path / f"turned{suffix}"
    if suffix in (".jpg", ".png"):
        exif = img.getexif()
        img.save(plain, quality=100)
        exif[0x0112] = orientation
        img.save(turned, exif=exif, quality=100)
    else:
        img.save(plain)
        img.save(turned, tiffinfo={274: orientation})
    stored = decode_image(plain)
    expected = (
        stored
        if orientation == 1
        else np.asarray(Image.fromarray(stored).transpose(TRANSPOSE[orientation]))
    )
    np.testing.assert_array_equal(decode_image(turned), expected)
    assert original_size(turned) == expected.shape


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_tiff_turned_by_a_quarter_is_refused(tmp_path, orientation):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(
        tmp_path / "t.tif", tiffinfo={274: orientation}
    )
    with pytest.raises(ImageReadError) as info:
        decode_image(tmp_path / "t.tif")
    assert str(info.value) == (
        f"{tmp_path / 't.tif'}: TIFF orientation {orientation} (a quarter turn) is "
        "not supported: save the image upright"
    )


def test_several_pages_or_frames_are_refused(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "a.png", save_all=True, append_images=pages[1:])
    for name in ("m.tif", "a.png"):
        with pytest.raises(ImageReadError) as info:
            load_image(tmp_path / name, 8)
        assert str(info.value) == (
            f"{tmp_path / name}: the file holds 2 images (pages or frames): save the "
            "one to use as a single-image file"
        )


def test_signed_integer_tiff_is_refused(tmp_path):
    Image.fromarray(np.array([[-5, 100]], np.int32)).save(tmp_path / "s.tif")
    with pytest.raises(ImageReadError, match=r"32-bit integer pixels from -5 to 100, outside"):
        load_image(tmp_path / "s.tif", 8)


# ---------------------------------------------------------------- DICOM that used to go blank


def dicom(tmp: Path, name: str = "x.dcm", **tags) -> Path:
    return write_dicom(tmp / name, chest_phantom(), bits_stored=12, **tags)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (
            {"RescaleSlope": 0, "RescaleIntercept": 5},
            r"x\.dcm: the modality LUT \(RescaleSlope 0(\.0)?, RescaleIntercept 5(\.0)?\) maps "
            r"every pixel to 5, so the image would be blank: the header is wrong",
        ),
        (
            {"WindowCenter": 90000, "WindowWidth": 10},
            r"x\.dcm: the header's window \(Window Center 90000.*, Width 10.*\) maps every pixel "
            r"to one grey, so the image would be blank: set window='percentile' or "
            r"window='minmax'",
        ),
    ],
)
def test_degenerate_modality_lut_or_window_is_an_error_not_a_blank_image(tmp_path, tags, message):
    with pytest.raises(ImageReadError, match=message):
        load_image(dicom(tmp_path, **tags), 16)


def test_a_blank_dicom_is_an_error(tmp_path):
    path = write_dicom(tmp_path / "b.dcm", np.full((8, 8), 77, np.uint16))
    for mode in ("standard", "benchmark"):
        from sagan_ad import DicomOptions

        with pytest.raises(ImageReadError) as info:
            load_image(path, 8, dicom=DicomOptions(mode=mode))
        assert str(info.value) == (
            f"{path}: every pixel has the stored value 77: a blank image; remove it from the "
            "data set"
        )


@pytest.mark.parametrize("cut", [140, 200, 300, 400, 3000])
def test_dicom_cut_inside_its_header_is_called_truncated(tmp_path, cut):
    path = dicom(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ImageReadError) as info:
        load_image(path, 16)
    assert str(info.value).startswith(
        f"{path}: the DICOM file is truncated: it ends at byte {cut}, inside "
    )
    assert str(info.value).endswith("; copy or export it again")
    assert "no pixel data" not in str(info.value)


def test_dicom_cut_inside_its_preamble_is_not_dicom_and_says_how_short(tmp_path):
    path = dicom(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageReadError) as info:
        load_image(path, 16)
    assert str(info.value) == (
        f"{path}: not a DICOM file (the file has only 100 bytes: truncated?) (no data elements "
        "found)"
    )


# ---------------------------------------------------------------- predict reads what training does


def test_predict_and_training_list_the_same_suffixes():
    assert IMAGE_EXTENSIONS == IMAGE_SUFFIXES
    assert {".tif", ".tiff", ".bmp", ".png", ".jpg", ".jpeg", ".dcm", ".dicom"} == set(
        IMAGE_SUFFIXES
    )


def mixed_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Every format training reads, plus junk a copy from macOS or Windows leaves."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    grey = film(90, (20, 30))
    for name in ("a.png", "b.tif", "c.TIFF", "d.bmp", "e.jpeg"):
        Image.fromarray(grey).save(root / name)
        sizes[name] = (20, 30)
    write_dicom(root / "IM0001", chest_phantom(24, 16), bits_stored=12)  # PACS export
    write_dicom(root / "old.dcm", chest_phantom(24, 16), bits_stored=12, file_meta=False)
    sizes.update({"IM0001": (24, 16), "old.dcm": (24, 16)})
    (root / "._a.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "Thumbs.db").write_bytes(b"\0")
    (root / "__MACOSX").mkdir()
    Image.fromarray(grey).save(root / "__MACOSX" / "a.png")
    (root / "notes.txt").write_text("not an image")
    return sizes


def test_found_images_are_sorted_part_by_part_as_paths_are(tmp_path):
    from sagan_ad.data.reading.discovery import discover_images

    names = ["a-b.png", "a/b.png", "a/c/d.png", "a.b/x.png", "A.png", "b.png", "a b/y.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    found = discover_images(tmp_path)
    assert found.images == sorted(tmp_path / name for name in names)
    assert found.other == [tmp_path / "notes.txt"] and found.junk == [tmp_path / ".hidden.png"]


def test_predict_folder_lists_every_training_format_and_skips_junk_once(tmp_path, caplog):
    sizes = mixed_folder(tmp_path / "scans")
    with caplog.at_level(logging.WARNING):
        listed = list_images(tmp_path / "scans")
        list_images(tmp_path / "scans")
    assert [p.name for p in listed] == sorted(sizes)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"{tmp_path / 'scans'}: skipped 4 hidden or system file(s) or folder(s) (.DS_Store, "
        "._a.png, Thumbs.db, ...) and 1 file(s) that are not images (1 .txt); read 7 image(s)"
    ]
    dm = FolderPredictDataModule(tmp_path / "scans", image_size=16)
    dm.setup()
    items = [dm.dataset[i] for i in range(len(dm.dataset))]
    assert {item["name"]: item["original_size"] for item in items} == sizes
    old = next(item for item in items if item["name"] == "old.dcm")
    assert torch.equal(old["image"], torch.from_numpy(load_image(tmp_path / "scans/old.dcm", 16)))
    assert original_size(tmp_path / "scans" / "old.dcm") == (24, 16)


def test_predict_reads_sixteen_bit_files_of_a_folder_at_one_depth(tmp_path):
    (tmp_path / "f").mkdir()
    Image.fromarray(film(4095, dtype=np.uint16)).save(tmp_path / "f" / "bright.png")
    Image.fromarray(film(1000, dtype=np.uint16)).save(tmp_path / "f" / "dark.png")
    dm = FolderPredictDataModule(tmp_path / "f", image_size=8)
    dm.setup()
    assert dm.dataset.bit_depth == 12
    assert int(dm.dataset[1]["image"].max()) == round(1000 / 4095 * 255)  # not 1000 / 1023


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            "--model=sagan_ad.SAGAN",
            *TINY_MODEL_ARGS,
            "--model.max_iterations=2",
            *TINY_DATA_ARGS,
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.val_check_interval=2",
            f"--trainer.default_root_dir={root}",
            "--test_after_fit=false",
        ]
    )
    return next(root.rglob("last.ckpt"))


def cli_predict(folder: Path, checkpoint: Path, out: Path) -> list[dict[str, str]]:
    main(
        [
            "predict",
            "--model=sagan_ad.SAGAN",
            *TINY_MODEL_ARGS,
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--data=sagan_ad.FolderPredictDataModule",
            f"--data.root={folder}",
            "--data.image_size=32",
            f"--ckpt_path={checkpoint}",
            f"--trainer.default_root_dir={out}",
        ]
    )
    with next(out.rglob("predictions.csv")).open() as handle:
        return list(csv.DictReader(handle))


def test_cli_predict_scores_every_training_format(tmp_path, checkpoint):
    sizes = mixed_folder(tmp_path / "scans")
    rows = cli_predict(tmp_path / "scans", checkpoint, tmp_path / "out")
    assert sorted(row["name"] for row in rows) == sorted(sizes)
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)


@requires_dicom_samples
def test_cli_predict_over_the_real_dicom_folder(tmp_path, checkpoint):
    pytest.importorskip("openjpeg", reason="JPEG 2000 needs pip install 'sagan-ad[dicom]'")
    rows = cli_predict(DICOM_ROOT, checkpoint, tmp_path / "out")
    assert sorted(row["name"] for row in rows) == sorted(p.name for p in DICOM_ROOT.glob("*.dcm"))
