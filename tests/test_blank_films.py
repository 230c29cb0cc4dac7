"""A film that would come out blank or flat stops setup, whatever its reader and depth (issue 22,
class 3); and the films of a PACS export are read as they come: DICOMDIR and non-image DICOM
classes skipped and counted, failed transfers named, predict given on_error (class 4)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import chest_phantom, film, mark, tiny_sagan, tiny_trainer, write_dicom
from PIL import Image

from sagan_ad import EvaluationWriter
from sagan_ad.data import (
    FolderDataModule,
    FolderPredictDataModule,
    ImageReadError,
    discover_images,
    load_images,
    read_image,
)
from sagan_ad.data.reading.file_kinds import dicom_without_image, media_storage_class

QUIET = {"image_size": 16}
REMEDY = "a blank film is no normal and no finding: remove it from the data"


def quiet_cache(folder: Path) -> dict:
    """Cache settings: decoded into `folder` by one process, without a progress bar."""
    return {"dir": folder, "workers": 1, "progress": False}


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.full((20, 20), 7, np.uint8), "every pixel has the value 7: the image is blank"),
        (np.full((20, 20), 700, np.uint16), "every pixel has the value 700: the image is blank"),
        (
            np.tile(np.array([30000, 30050], np.uint16), (20, 10)),
            "its values span 30000 to 30050 (uint16), less than one grey level of the 8-bit "
            "image the model reads: it would come out as a uniform grey 117",
        ),
    ],
    ids=["constant-8-bit", "constant-16-bit", "16-bit-under-one-grey"],
)
def test_a_png_that_would_come_out_blank_is_refused(tmp_path, pixels, reason):
    path = tmp_path / "film.png"
    Image.fromarray(pixels).save(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path, 16)
    assert str(info.value).startswith(f"{path}: {reason}; {REMEDY}")


def test_a_dicom_whose_bits_stored_contradicts_its_data_is_refused(tmp_path):
    path = write_dicom(tmp_path / "bs8.dcm", chest_phantom(40, 40), bits_stored=8)
    with pytest.raises(ImageReadError) as info:
        read_image(path, 16)
    assert str(info.value) == (
        f"{path}: Bits Stored is 8, but 100% of the pixels hold values above 255 (up to 3686): "
        "the header contradicts the data, and the film would be read from its low 8 bits only; "
        "set Bits Stored to 12 (and High Bit to 11), or remove the file"
    )


def test_a_few_overlay_bits_above_bits_stored_are_tolerated(tmp_path):
    pixels = chest_phantom(40, 40)
    pixels[0, :4] |= 1 << 13  # an old overlay plane in the high bits
    path = write_dicom(tmp_path / "overlay.dcm", pixels, bits_stored=12)
    assert read_image(path, 16).image.std() > 0


def test_blank_films_stop_the_setup_of_every_reader(tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(3):
        Image.fromarray(film(80 + 40 * i, (20, 20))).save(normal / f"n{i}.png")
    Image.fromarray(np.full((20, 20), 0, np.uint8)).save(normal / "black.png")
    with pytest.raises(ImageReadError, match=r"black.png: every pixel has the value 0"):
        FolderDataModule(
            normal, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
        ).setup()
    with pytest.raises(ImageReadError, match=r"black.png: every pixel has the value 0"):
        load_images(sorted(normal.iterdir()), 16)
    predict = FolderPredictDataModule(normal, image_size=16)
    predict.setup()
    with pytest.raises(ImageReadError, match=r"black.png: every pixel has the value 0.*on_error"):
        [predict.dataset[i] for i in range(len(predict.dataset))]


def test_a_data_set_depth_that_flattens_a_film_is_refused(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    deep = np.tile(np.array([0, 65535], np.uint16), (20, 10))
    Image.fromarray(deep).save(folder / "deep.png")
    shallow = np.tile(np.array([250, 255], np.uint16), (20, 10))  # 8 bits used, 5 levels apart
    Image.fromarray(shallow).save(folder / "shallow.png")
    with pytest.raises(ValueError, match=r"(?s)one uniform grey: .*shallow.png \(uses 8 bits\)"):
        load_images([folder / "deep.png", folder / "shallow.png"], 16)


# ------------------------------------------------------------------------- PACS exports


def pacs_export(root: Path) -> Path:
    """A PACS export: images without suffix, its DICOMDIR, a report, a presentation state, a
    key object, a README, and two failed transfers (empty, NUL bytes)."""
    for i in range(3):
        write_dicom(root / f"IM{i:04d}", mark(chest_phantom(20, 20), i), bits_stored=12)
    write_dicom(root / "DICOMDIR", None)
    for name, sop in (
        ("SR0001", "1.2.840.10008.5.1.4.1.1.88.11"),  # Basic Text SR
        ("PS0001", "1.2.840.10008.5.1.4.1.1.11.1"),  # Grayscale Softcopy Presentation State
        ("KO0001.dcm", "1.2.840.10008.5.1.4.1.1.88.59"),  # Key Object Selection
    ):
        write_dicom(root / name, None, SOPClassUID=sop)
    (root / "README").write_text("exported by the PACS\n")
    return root


def test_a_pacs_export_skips_and_counts_what_holds_no_image(tmp_path, caplog):
    root = pacs_export(tmp_path / "export")
    found = discover_images(root)
    assert [p.name for p in found.images] == ["IM0000", "IM0001", "IM0002"]
    assert sorted(p.name for p, _ in found.not_images) == [
        "DICOMDIR",
        "KO0001.dcm",
        "PS0001",
        "SR0001",
    ]
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(
            root, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
        )
        dm.setup()
    assert len(dm.known_normal) == 3
    assert "skipped 4 DICOM file(s) that hold no image (" in caplog.text
    assert "1 DICOMDIR" in caplog.text and "1 DICOM Basic Text SR" in caplog.text


UID_NAME = "1.2.840.113619.2.55.3.1268071029.320"


def test_dicom_named_by_its_uid_or_ima_is_found_by_its_magic(tmp_path):
    root = tmp_path / "export"
    write_dicom(root / UID_NAME, mark(chest_phantom(20, 20), 0), bits_stored=12)
    write_dicom(root / "IM0001.IMA", mark(chest_phantom(20, 20), 1), bits_stored=12)
    # Non-image classes under such names are skipped and counted, as under any name.
    write_dicom(root / f"{UID_NAME}1", None, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")
    write_dicom(root / "PS0001.IMA", None, SOPClassUID="1.2.840.10008.5.1.4.1.1.11.1")
    (root / "notes.txt").write_text("exported by the PACS\n")
    (root / "series.1.2.3").write_bytes(b"\0" * 200)
    found = discover_images(root)
    assert [p.name for p in found.images] == [UID_NAME, "IM0001.IMA"]
    assert [p.name for p, _ in found.not_images] == [f"{UID_NAME}1", "PS0001.IMA"]
    assert [p.name for p in found.other] == ["notes.txt", "series.1.2.3"]
    dm = FolderDataModule(
        root, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
    )
    dm.setup()
    assert sorted(dm.known_normal.names) == [f"normal/{UID_NAME}", "normal/IM0001.IMA"]
    for name in (UID_NAME, "IM0001.IMA"):
        assert read_image(root / name, 16).original_size == (20, 20)


def test_a_file_that_cannot_be_opened_is_no_reason_to_stop_listing(tmp_path, monkeypatch):
    from sagan_ad.data.reading import discovery

    def denied(path: str) -> bool:
        raise PermissionError(13, "Permission denied", path)

    (tmp_path / "locked.xyz").write_bytes(b"\0" * 200)
    monkeypatch.setattr(discovery, "is_dicom_file", denied)
    assert [p.name for p in discover_images(tmp_path).other] == ["locked.xyz"]


@pytest.mark.parametrize("content", [b"", b"\0" * 300], ids=["empty", "nul-bytes"])
def test_a_failed_transfer_is_an_error_or_skipped_never_dropped_unseen(tmp_path, content, caplog):
    root = pacs_export(tmp_path / "export")
    (root / "IM0009").write_bytes(content)
    with pytest.raises(
        ImageReadError, match=r"(?s)1 image file\(s\) are missing or could not.*IM0009"
    ):
        FolderDataModule(
            root, **QUIET, split={"val_fraction": 0.0}, cache=quiet_cache(tmp_path / "c")
        ).setup()
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(
            root,
            on_error="skip",
            **QUIET,
            split={"val_fraction": 0.0},
            cache=quiet_cache(tmp_path / "c"),
        )
        dm.setup()
    assert len(dm.known_normal) == 3
    assert "IM0009" in caplog.text


def test_predict_skips_unreadable_files_and_records_them_beside_the_predictions(tmp_path):
    root = pacs_export(tmp_path / "export")
    (root / "IM0009").write_bytes(b"")
    Image.fromarray(np.full((20, 20), 9, np.uint8)).save(root / "blank.png")
    model = tiny_sagan(max_iterations=1)
    model.allow_untrained = True
    data = FolderPredictDataModule(root, image_size=32, batch_size=2, on_error="skip")
    writer = EvaluationWriter(dirpath=tmp_path / "out", overlays=False)
    with pytest.warns(UserWarning, match=r"predict skipped 2 unreadable file\(s\)"):
        tiny_trainer(tmp_path, callbacks=[writer]).predict(model, datamodule=data)
    with open(tmp_path / "out" / "predict" / "predictions.csv") as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["IM0000", "IM0001", "IM0002"]
    with open(tmp_path / "out" / "predict" / "skipped.csv") as handle:
        skipped = {row["name"]: row["reason"] for row in csv.DictReader(handle)}
    assert sorted(skipped) == ["IM0009", "blank.png"]
    assert "the file is empty" in skipped["IM0009"]
    assert "every pixel has the value 9" in skipped["blank.png"]


def test_a_film_of_one_colour_is_blank_in_grey(tmp_path):
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 200
    Image.fromarray(red).save(tmp_path / "red.png")
    for channels in (1, 3):
        with pytest.raises(ImageReadError, match=r"every pixel has the colour \(200, 0, 0\)"):
            read_image(tmp_path / "red.png", 16, in_channels=channels)


def test_the_sop_class_read_from_the_first_bytes_is_pydicoms(tmp_path):
    """`media_storage_class` reads the meta group itself; where it cannot (a meta group longer
    than its read, no preamble) it must give pydicom's answer or pydicom's error."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import dcmread, read_file_meta_info

    root = pacs_export(tmp_path / "export")
    long_meta = write_dicom(
        tmp_path / "long_meta.dcm", None, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11"
    )
    ds = dcmread(long_meta)
    # A meta element larger than the first read puts the class after its end.
    ds.file_meta.FileMetaInformationVersion = b"\x00\x01" * 3000
    ds.save_as(long_meta, enforce_file_format=True)
    assert long_meta.read_bytes().find(b"1.2.840.10008.5.1.4.1.1.88.11") > 4096
    old_style = write_dicom(tmp_path / "old.dcm", mark(chest_phantom(20, 20), 1), file_meta=False)
    paths = [*sorted(p for p in root.iterdir() if p.name != "README"), long_meta]
    for path in paths:
        expected = read_file_meta_info(path).get("MediaStorageSOPClassUID")
        assert media_storage_class(path) == (None if expected is None else str(expected)), path
    assert dicom_without_image(long_meta).startswith("a DICOM Basic Text SR")
    with pytest.raises(InvalidDicomError):
        media_storage_class(old_style)
    assert dicom_without_image(old_style) is None
