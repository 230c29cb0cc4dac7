"""Files are replaced atomically, checkpoints also durably: an interrupted write leaves no
half-written file, and a power loss no checkpoint whose data never reached the disk."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from sagan_ad.atomic import atomic_path
from sagan_ad.training.checkpointing import atomic_save
from sagan_ad.training.outputs import write_csv


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # invisible until the block succeeds
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failure_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "roc.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_a_csv_that_fails_midway_is_never_left_looking_complete(tmp_path):
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("cannot format this value")

    target = tmp_path / "predictions.csv"
    rows = [{"name": f"img{i}", "score": 0.1 * i} for i in range(100)]
    with pytest.raises(ValueError, match="cannot format"):
        write_csv(target, [*rows, {"name": "bad", "score": Unprintable()}])
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_csv(target, rows)
    assert len(target.read_text().splitlines()) == 101


def recorded_fsyncs(monkeypatch, target) -> list[tuple[str, int, bytes]]:
    """Each ``os.fsync``: what it synced (file or folder), its inode, and ``target`` then."""
    calls = []
    real = os.fsync

    def fsync(descriptor):
        status = os.fstat(descriptor)
        kind = "folder" if stat.S_ISDIR(status.st_mode) else "file"
        calls.append((kind, status.st_ino, target.read_bytes()))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="folders are synced on POSIX only")
def test_a_durable_write_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path, monkeypatch
):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")
    calls = recorded_fsyncs(monkeypatch, target)
    with atomic_path(target, durable=True) as tmp:
        tmp.write_bytes(b"new")
    # The file synced is the temporary that became the target; the old one is still in place.
    assert calls == [
        ("file", target.stat().st_ino, b"old"),
        ("folder", tmp_path.stat().st_ino, b"new"),
    ]
    calls.clear()
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"newer")
    assert calls == [] and target.read_bytes() == b"newer"


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="folders are synced on POSIX only")
def test_checkpoints_are_written_durably(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")
    calls = recorded_fsyncs(monkeypatch, target)
    atomic_save({"w": torch.ones(2)}, target)
    assert [(kind, inode) for kind, inode, _ in calls] == [
        ("file", target.stat().st_ino),
        ("folder", tmp_path.stat().st_ino),
    ]
    assert calls[0][2] == b"old"
