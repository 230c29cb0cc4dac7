"""Writes never destroy a user's file: no output replaces an input of the same command (by any
path: ``./``, a link, a hard link), no atomic write renames over a device, FIFO or folder, and
no command reads its own earlier outputs back as data (issue 22, class 1)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import film, write_medad_tree
from PIL import Image

from sagan_ad.atomic import atomic_path
from sagan_ad.cli import main
from sagan_ad.data import FolderDataModule, MedADDataModule, discover_images
from sagan_ad.data.storage import atomic_write_text
from sagan_ad.protected import (
    OUTPUT_MARKER,
    OutputIsInputError,
    forget_inputs,
    mark_output_folder,
    protect,
    writable_target,
)
from sagan_ad.training.checkpointing import atomic_save

FIXTURE = Path(__file__).parent / "fixtures" / "main_2026_12_tiny.ckpt"


def cli_error(*args: str) -> str:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == 2 and "Traceback" not in stderr.getvalue(), stderr.getvalue()
    (line,) = [x for x in stderr.getvalue().splitlines() if x.startswith("error: ")]
    return line


@pytest.fixture(autouse=True)
def fresh_inputs():
    forget_inputs()
    yield
    forget_inputs()


@pytest.fixture
def victim(tmp_path) -> Path:
    folder = tmp_path / "ck"
    folder.mkdir()
    return Path(shutil.copy(FIXTURE, folder / "victim.ckpt"))


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
def test_export_onto_its_own_checkpoint_is_refused_and_the_checkpoint_kept(
    victim, spelling, monkeypatch
):
    monkeypatch.chdir(victim.parent.parent)
    before = victim.read_bytes()
    output = {"same": "ck/victim.ckpt", "dot": "ck/./victim.ckpt"}.get(spelling)
    if spelling == "symlink":
        (victim.parent / "link.onnx").symlink_to("victim.ckpt")
        output = "ck/link.onnx"
    if spelling == "hardlink":
        os.link(victim, victim.parent / "hard.pt")
        output = "ck/hard.pt"
    line = cli_error("export", "--ckpt_path", "ck/victim.ckpt", "--output", output)
    assert line == (
        f"error: {output} is the checkpoint given by --ckpt_path, an input of this command: "
        "writing there would replace it; choose another --output"
    )
    assert victim.read_bytes() == before


def test_export_onto_a_device_is_refused_not_renamed_over_it(victim):
    line = cli_error("export", "--ckpt_path", str(victim), "--output", "/dev/null")
    assert line == (
        "error: cannot write /dev/null: it is a character device, not a regular file, and a "
        "file written there would replace it; choose another --output"
    )
    assert Path("/dev/null").is_char_device()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_atomic_writes_refuse_what_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "metrics.json"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    expected = "a FIFO (named pipe)" if kind == "fifo" else "a folder"
    for write in (
        lambda: atomic_path(target).__enter__(),
        lambda: atomic_write_text(target, "{}"),
        lambda: atomic_save({"x": 1}, target),
    ):
        with pytest.raises(OutputIsInputError, match=re.escape(f"it is {expected}, not a regular")):
            write()
    assert target.is_fifo() if kind == "fifo" else target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_link_is_written_through_and_kept(tmp_path):
    real = tmp_path / "store" / "metrics.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "metrics.json"
    link.symlink_to(real)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"


def test_no_writer_replaces_a_protected_input(tmp_path):
    split = tmp_path / "data.json"
    split.write_text("{}")
    protect(split, "the split file read by this command")
    for write in (
        lambda: atomic_path(split).__enter__(),
        lambda: atomic_write_text(split, "[]"),
        lambda: atomic_save({}, split),
    ):
        with pytest.raises(OutputIsInputError, match=r"data.json is the split file read by"):
            write()
    assert split.read_text() == "{}"
    # Once the input changed (another command's file now), it is no input any more.
    split.write_text('{"train": {}}')
    assert writable_target(split) == split


def test_a_run_folder_on_a_med_ad_root_never_replaces_its_data_json(tmp_path):
    root = write_medad_tree(tmp_path / "medad")
    original = (root / "data.json").read_text()
    dm = MedADDataModule(root, image_size=16, split={"val_fraction": 0.0})
    dm.setup()
    # What SplitRecorder writes into a run folder that is the data set's own root.
    manifest = json.dumps(dm.split_manifest()["split"])
    with (
        pytest.raises(OutputIsInputError, match=r"data.json is the split file read by"),
        atomic_path(root / "data.json") as tmp,
    ):
        tmp.write_text(manifest)
    assert (root / "data.json").read_text() == original


def test_a_split_file_given_back_from_the_cache_folder_is_not_rewritten(tmp_path):
    from test_raw_datamodules import RSNA_COUNTS, rsna_tree

    from sagan_ad.data import RSNADataModule

    root = rsna_tree(tmp_path / "rsna")
    cache = {"dir": tmp_path / "c", "workers": 1, "progress": False}
    split = {"counts": RSNA_COUNTS, "anomaly_ratio": 0.5}
    first = RSNADataModule(root, split=split, cache=cache)
    first.setup()
    given = tmp_path / "c" / "data.json"
    before = given.read_bytes()
    again = RSNADataModule(root, split={**split, "file": given}, cache=cache)
    again.setup()
    assert given.read_bytes() == before
    assert again.test.names == first.test.names


def test_discovery_never_reads_sagan_ad_outputs_as_images(tmp_path, caplog):
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(film(90, (20, 20))).save(scans / "a.png")
    overlays = scans / "runs" / "version_0" / "predict" / "overlays"
    overlays.mkdir(parents=True)
    Image.fromarray(film(90, (20, 20))).save(overlays / "a.png.png")
    Image.fromarray(film(30, (20, 20))).save(scans / "runs" / "version_0" / "roc.png")
    mark_output_folder(scans / "runs" / "version_0")
    found = discover_images(scans)
    assert found.images == [scans / "a.png"]
    assert found.outputs == [scans / "runs" / "version_0"]
    with caplog.at_level("WARNING"):
        dm = FolderDataModule(
            scans, image_size=16, split={"val_fraction": 0.0}, cache={"dir": tmp_path / "c"}
        )
        dm.setup()
    assert dm.known_normal.names == ["normal/a.png"]
    assert "1 folder(s) of sagan-ad outputs" in caplog.text
    assert (scans / "runs" / "version_0" / OUTPUT_MARKER).is_file()
    assert np.asarray(Image.open(overlays / "a.png.png")).shape == (20, 20)


def test_a_root_inside_an_output_folder_is_never_read_as_data(tmp_path):
    run = tmp_path / "runs" / "version_0"
    overlays = run / "predict" / "overlays"
    overlays.mkdir(parents=True)
    Image.fromarray(film(90, (20, 20))).save(overlays / "a.png.png")
    mark_output_folder(run)
    found = discover_images(overlays)
    assert found.images == [] and found.outputs == [run.resolve()]


@pytest.mark.parametrize("other", ["best.ckpt", "config.yaml", "weights.pt"])
def test_export_onto_another_checkpoint_config_or_weights_is_refused(victim, other):
    """`--output best.ckpt` for `last` replaced the best checkpoint with a TorchScript archive."""
    target = victim.parent / other
    if other == "best.ckpt":
        shutil.copy(victim, target)
    elif other == "config.yaml":
        target.write_text("model:\n  class_path: sagan_ad.SAGAN\n")
    else:
        import torch

        torch.save({"w": torch.ones(2)}, target)
    before = target.read_bytes()
    line = cli_error("export", "--ckpt_path", str(victim), "--output", str(target))
    if other == "best.ckpt":
        assert line == (
            f"error: --output {str(target)!r}: an exported scorer named .ckpt would be taken for "
            "a checkpoint (and --ckpt_path last / best could pick it up): name it .onnx or .pt"
        )
    else:
        assert line.startswith(f"error: --output {str(target)!r} exists and is not an exported")
    assert target.read_bytes() == before


def test_an_earlier_export_is_replaced(victim):
    target = victim.parent / "scorer.pt"
    main(["export", "--ckpt_path", str(victim), "--output", str(target)])
    first = target.stat().st_mtime_ns
    forget_inputs()
    main(["export", "--ckpt_path", str(victim), "--output", str(target)])
    assert target.stat().st_mtime_ns >= first and target.stat().st_size > 0
