"""The cache writes only into its own folders, an outputs marker never hides the command's data,
and the image cache notices a file swapped for another of the same size and time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import chest_phantom, film, write_dicom, write_medad_tree
from PIL import Image

from sagan_ad.data import FolderDataModule, ImageCache, MedADDataModule, PreprocessSettings
from sagan_ad.data.caching.ownership import (
    CACHE_MARKER,
    NotACacheFolderError,
    claim_cache_folder,
)
from sagan_ad.data.modules.predict import ImageFolder
from sagan_ad.data.reading.discovery import discover_images
from sagan_ad.protected import (
    OUTPUT_MARKER,
    OutputIsInputError,
    forget_inputs,
    mark_output_folder,
)
from sagan_ad.training.outputs import EvaluationWriter

QUIET = {"progress": False, "workers": 1}


@pytest.fixture(autouse=True)
def fresh_inputs():
    forget_inputs()
    yield
    forget_inputs()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def folder_of_films(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(film(60 + 10 * i, (20, 20))).save(folder / f"f{i}.png")
    return folder


def test_a_cache_dir_at_a_release_root_is_refused_and_its_split_file_kept(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    split = (root / "data.json").read_bytes()
    before = listing(root)
    dm = FolderDataModule(root / "images", image_size=16, cache={"dir": root, **QUIET})
    with pytest.raises(NotACacheFolderError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert f"cannot use {root} as a cache folder (cache.dir)" in message
    assert "the cache would replace its data.json" in message
    assert "choose another cache.dir" in message
    assert (root / "data.json").read_bytes() == split
    assert listing(root) == before  # nothing decoded into the release's image folder either
    MedADDataModule(root, image_size=16, split={"val_fraction": 0.0}).setup("fit")


def test_an_image_cache_root_holding_other_files_is_refused(tmp_path):
    films = folder_of_films(tmp_path / "films", 2)
    cache = ImageCache(films, PreprocessSettings(16), num_workers=1, progress=False)
    with pytest.raises(NotACacheFolderError, match=r"it holds f0.png, f1.png, which the cache"):
        cache.load(sorted(films.iterdir()))
    assert listing(films) == ["f0.png", "f1.png"]


def test_new_empty_and_earlier_cache_folders_are_taken(tmp_path):
    films = folder_of_films(tmp_path / "films", 4)
    settings = {"image_size": 16, "split": {"val_fraction": 0.25}}
    (tmp_path / "empty").mkdir()
    for cache in (tmp_path / "new" / "cache", tmp_path / "empty"):
        first = FolderDataModule(films, **settings, cache={"dir": cache, **QUIET})
        first.setup("fit")
        assert (cache / CACHE_MARKER).is_file() and (cache / "data.json").is_file()
        assert (cache / "images" / CACHE_MARKER).is_file()
    # A cache folder written before the marker existed: known by the image cache's settings
    # folders, or by its setup record.
    old = tmp_path / "new" / "cache"
    for marker in old.rglob(CACHE_MARKER):
        marker.unlink()
    again = FolderDataModule(films, **settings, cache={"dir": old, **QUIET})
    again.setup("fit")
    assert (old / CACHE_MARKER).is_file()
    assert again.known_normal.names == first.known_normal.names
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "setup.npz").write_bytes(b"a record")
    (recorded / "data.json").write_text("{}")
    claim_cache_folder(recorded)
    assert (recorded / CACHE_MARKER).is_file()


def test_an_outputs_folder_above_the_data_is_refused_before_anything_is_written(tmp_path):
    project = tmp_path / "project"
    data = folder_of_films(project / "data" / "normal", 4)
    FolderDataModule(
        data, image_size=16, split={"val_fraction": 0.25}, cache={"dir": tmp_path / "c", **QUIET}
    ).setup("fit")
    with pytest.raises(OutputIsInputError) as info:
        mark_output_folder(project, "trainer.default_root_dir")
    message = str(info.value)
    assert f"cannot mark {project} as sagan-ad's outputs: it holds {data.resolve()}" in message
    assert "choose another trainer.default_root_dir" in message
    assert not (project / OUTPUT_MARKER).exists()
    assert len(discover_images(data).images) == 4
    mark_output_folder(project / "runs")  # beside the data: allowed
    assert (project / "runs" / OUTPUT_MARKER).is_file()


def test_an_evaluation_writer_above_the_images_it_predicts_writes_nothing(tmp_path):
    project = tmp_path / "project"
    folder_of_films(project / "data" / "test_a", 2)
    ImageFolder(project / "data" / "test_a", image_size=16)
    writer = EvaluationWriter(dirpath=project)
    with pytest.raises(OutputIsInputError, match=r"choose another dirpath of the EvaluationWriter"):
        writer.output_dir(None, "predict")
    assert sorted(os.listdir(project)) == ["data"]
    forget_inputs()  # the next command reads other data: the folder may hold its outputs
    assert writer.output_dir(None, "predict") == project / "predict"
    assert (project / OUTPUT_MARKER).is_file()


def test_a_file_swapped_for_one_of_the_same_size_and_time_is_decoded_again(tmp_path):
    path = tmp_path / "raw" / "a.dcm"
    path.parent.mkdir()
    write_dicom(path, chest_phantom(), bits_stored=12)
    cache = ImageCache(tmp_path / "cache", PreprocessSettings(16), num_workers=1, progress=False)
    first = cache.load([path]).images[0]
    # Other pixels in a file of the very same size: the pixel data end the file, so only they
    # are rewritten (a second write_dicom may differ in size by its generated UIDs).
    pixels = chest_phantom()
    data = path.read_bytes()
    other = (pixels[:, ::-1] // 2).astype(np.uint16).tobytes()
    assert data.endswith(pixels.astype(np.uint16).tobytes())
    swapped = tmp_path / "raw" / "b.dcm"
    swapped.write_bytes(data[: len(data) - len(other)] + other)
    old = os.stat(path)
    assert os.path.getsize(swapped) == old.st_size
    os.replace(swapped, path)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    again = ImageCache(tmp_path / "cache", PreprocessSettings(16), num_workers=1, progress=False)
    now = again.load([path]).images[0]
    fresh = ImageCache(tmp_path / "fresh", PreprocessSettings(16), num_workers=1, progress=False)
    assert not np.array_equal(now, first)
    np.testing.assert_array_equal(now, fresh.load([path]).images[0])


def test_an_index_entry_without_an_inode_is_decoded_again_without_a_warning(tmp_path, caplog):
    path = tmp_path / "a.dcm"
    write_dicom(path, chest_phantom(), bits_stored=12)
    cache = ImageCache(tmp_path / "cache", PreprocessSettings(16), num_workers=1, progress=False)
    first = cache.load([path]).images[0]
    index_path = cache.index_path
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({key: entry[:8] for key, entry in index.items()}))
    with caplog.at_level("WARNING"):
        again = ImageCache(tmp_path / "cache", PreprocessSettings(16), progress=False)
        np.testing.assert_array_equal(again.load([path]).images[0], first)
    assert "cannot be read back" not in caplog.text
    assert all(len(entry) == 9 for entry in json.loads(index_path.read_text()).values())


def test_an_earlier_cache_on_a_read_only_mount_is_still_taken(tmp_path, monkeypatch):
    """A cache folder written before the marker, shared read-only on a cluster: the marker
    cannot be written, and the cache is read as before; an empty folder still fails."""
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "setup.npz").write_bytes(b"a record")
    (tmp_path / "empty").mkdir()
    real = Path.write_text

    def read_only(path, *args, **kwargs):
        if path.name == CACHE_MARKER:
            raise OSError(30, "Read-only file system", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    claim_cache_folder(recorded)
    assert not (recorded / CACHE_MARKER).exists()
    with pytest.raises(OSError, match="Read-only"):
        claim_cache_folder(tmp_path / "empty")


def test_a_test_whose_outputs_folder_holds_its_data_is_refused_before_it_scores(tmp_path):
    """The refusal came when the test's files were first written, after every image was
    scored: now it comes as the stage is set up."""
    import lightning as L
    from conftest import tiny_sagan

    from sagan_ad.data import FolderDataModule

    project = tmp_path / "project"
    for part, value in (("normal", 60), ("test_normal", 70), ("test_abnormal", 200)):
        folder = project / "data" / part
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(film(value + i, (32, 32))).save(folder / f"{part}{i}.png")
    data = FolderDataModule(
        project / "data" / "normal",
        test_normal=project / "data" / "test_normal",
        test_abnormal=project / "data" / "test_abnormal",
        image_size=32,
        batch_size=2,
        split={"val_fraction": 0.5},
        cache={"dir": tmp_path / "cache", **QUIET},
    )
    scored = []

    class Counting(L.Callback):
        def on_test_batch_end(self, *args, **kwargs):
            scored.append(1)

    model = tiny_sagan()
    model.allow_untrained = True
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[EvaluationWriter(dirpath=project), Counting()],
    )
    with pytest.raises(OutputIsInputError, match=r"choose another dirpath of the EvaluationWriter"):
        trainer.test(model, datamodule=data)
    assert not scored
    assert not (project / OUTPUT_MARKER).exists()
