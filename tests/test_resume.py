"""Resuming as the same run, piece by piece: the logger's version, the CSV log, the checkpoints
the killed process wrote after the resumed one, and stale temporary files."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from sagan_ad.atomic import _HOST, atomic_path, remove_stale_temporaries
from sagan_ad.training.checkpointing import AtomicCheckpointIO
from sagan_ad.training.resume import continue_run, find_last_checkpoint, resolve_checkpoint


def fake_checkpoint(path: Path, iteration: int, best: str | None = None) -> Path:
    """A checkpoint of ``iteration``; ``best``: the file its ModelCheckpoint records as best."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": {},
        "pytorch-lightning_version": L.__version__,
        "sagan_iteration": iteration,
    }
    if best is not None:
        recorded = {"monitor": "val/AUROC", "best_model_path": str(path.parent / best)}
        checkpoint["callbacks"] = {"ModelCheckpoint": recorded}
    torch.save(checkpoint, path)
    # Distinct modification times, in the order the files are written.
    stamp = time.time_ns() + iteration * 10**9
    os.utime(path, ns=(stamp, stamp))
    return path


def write_rows(path: Path, rows: list[dict[str, str]], cut_last: bool = False) -> None:
    keys = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    if cut_last:
        path.write_text(path.read_text()[:-3])


def test_resume_continues_the_csv_version_folder_and_its_log(tmp_path):
    run = tmp_path / "lightning_logs" / "version_3"
    checkpoint = fake_checkpoint(run / "checkpoints" / "last.ckpt", iteration=4)
    fake_checkpoint(tmp_path / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt", 2)
    rows = [{"step": str(i), "train/critic/loss": f"0.{i}"} for i in range(6)]
    rows.insert(4, {"step": "4", "val/AUROC": "0.7"})  # the validation after 4 iterations
    write_rows(run / "metrics.csv", rows, cut_last=True)
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(logger=logger, default_root_dir=tmp_path)
    assert find_last_checkpoint(trainer) == checkpoint

    continue_run(trainer, checkpoint)
    assert logger.version == 3 and Path(logger.log_dir) == run
    with (run / "metrics.csv").open() as f:
        kept = list(csv.DictReader(f))
    # Training rows of iterations 1-4 (steps 0-3) and the validation after iteration 4: the
    # resumed run logs step 4 (the 5th iteration) and later again.
    assert [(r["step"], r["val/AUROC"]) for r in kept] == [
        ("0", ""),
        ("1", ""),
        ("2", ""),
        ("3", ""),
        ("4", "0.7"),
    ]
    logger.log_metrics({"train/critic/loss": 0.44}, step=4)
    logger.save()
    with (run / "metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1", "2", "3", "4", "4"]


def test_resume_removes_what_the_killed_run_wrote_after_the_checkpoint(tmp_path, caplog):
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    earlier = fake_checkpoint(folder / "best-iteration=4.ckpt", 4)
    checkpoint = fake_checkpoint(folder / "last.ckpt", 6)
    # Killed between the best and the last save of the validation after iteration 8.
    orphan = fake_checkpoint(folder / "best-iteration=8.ckpt", 8)
    # Killed mid-save on another host of a cluster: the next write here would leave it alone.
    (folder / ".last.partial-999999999-0badc0de.ckpt").write_bytes(b"half")
    unrelated = folder / "notes.txt"
    unrelated.write_text("kept")
    # A live command writing its output into a shared checkpoint folder keeps its temporary.
    output = folder / f".metrics.partial-{os.getppid()}-{_HOST}.json"
    output.write_text("{")
    trainer = L.Trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path)
    with caplog.at_level("INFO"):
        continue_run(trainer, checkpoint)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [earlier.name, checkpoint.name, unrelated.name, output.name]
    )
    assert not orphan.exists()
    assert "removed .last.partial-999999999-0badc0de.ckpt, best-iteration=8.ckpt" in caplog.text


def test_a_logger_version_chosen_by_the_user_is_kept(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", 2)
    logger = CSVLogger(tmp_path, version="mine")
    continue_run(L.Trainer(logger=logger, default_root_dir=tmp_path), checkpoint)
    assert logger.version == "mine"


def test_a_wandb_run_is_resumed_under_its_id(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "sagan-ad" / "abc123" / "checkpoints" / "last.ckpt", 2)
    logger = WandbLogger(save_dir=str(tmp_path), project="sagan-ad", offline=True)
    continue_run(L.Trainer(logger=logger, default_root_dir=tmp_path), checkpoint)
    assert logger.version == "abc123"
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"


def test_fit_last_without_a_checkpoint_starts_fresh_but_evaluation_stops(tmp_path):
    trainer = L.Trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path)
    assert resolve_checkpoint(trainer, "last", "fit") is None
    with pytest.raises(ValueError, match=r"^--ckpt_path best: .*\(best needs a validation\)"):
        resolve_checkpoint(trainer, "best", "fit")
    assert resolve_checkpoint(trainer, "some.ckpt", "test") == "some.ckpt"


def test_the_next_checkpoint_save_removes_a_killed_saves_temporary(tmp_path):
    stale = tmp_path / f".best-iteration=2.partial-999999999-{_HOST}.ckpt"
    stale.write_bytes(b"half")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_checkpoint_temporary_is_never_taken_for_last_or_best(tmp_path):
    folder = tmp_path / "checkpoints"
    best = fake_checkpoint(folder / "best-iteration=4.ckpt", 4, best="best-iteration=4.ckpt")
    # Killed after writing the whole checkpoint, before its rename: newer than every checkpoint,
    # and it records a best checkpoint that was never written.
    temporary = folder / f".last.partial-999999999-{_HOST}.ckpt"
    fake_checkpoint(temporary, 8, best="best-iteration=8.ckpt")
    trainer = L.Trainer(
        logger=False, default_root_dir=tmp_path, callbacks=[ModelCheckpoint(dirpath=folder)]
    )
    assert resolve_checkpoint(trainer, "best", "test") == str(best)
    last = fake_checkpoint(folder / "last.ckpt", 6)
    assert resolve_checkpoint(trainer, "last", "test") == str(last)
    # Lightning's own search, for Trainer.fit(ckpt_path="last") without sagan_ad's.
    assert trainer.checkpoint_callback._find_last_checkpoints(trainer) == {str(last)}
    assert temporary.exists()


def test_stale_output_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".metrics.partial-999999999-{_HOST}.json"
    alive = tmp_path / f".roc.partial-{os.getppid()}-{_HOST}.png"
    other_host = tmp_path / ".pr.partial-999999999-0badc0de.png"
    for path in (dead, alive, other_host):
        path.write_text("half")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and other_host.exists()


def test_the_first_atomic_write_into_a_folder_cleans_it(tmp_path):
    dead = tmp_path / f".predictions.partial-999999999-{_HOST}.csv"
    dead.write_text("half")
    with atomic_path(tmp_path / "metrics.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
