"""Output files are replaced atomically: an interrupted write leaves no half-written file."""

from __future__ import annotations

import pytest

from sagan_ad.atomic import atomic_path
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
