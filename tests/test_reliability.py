"""Reliability: exact resume after SIGKILL, atomic checkpoints, divergence guard, safe loading,
determinism."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY_DATA_ARGS, tiny_networks, tiny_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from sagan_ad import (
    SAGAN,
    AtomicCheckpointIO,
    DivergenceError,
    Evaluator,
    LastCheckpoint,
    MedADDataModule,
    Performance,
    best_and_last_checkpoints,
    load_checkpoint,
)
from sagan_ad.atomic import is_temporary
from sagan_ad.errors import FileError
from sagan_ad.training.checkpointing import atomic_save
from sagan_ad.training.resume import find_last_checkpoint

REPO = Path(__file__).resolve().parents[1]

RUN = [
    "--model=sagan_ad.SAGAN",
    "--model.generator.image_size=32",
    "--model.generator.base_channels=4",
    "--model.generator.num_res_blocks=1",
    "--model.critic.base_channels=4",
    "--model.critic.num_downsamples=5",
    "--model.max_iterations=12",
    "--model.evaluator.bootstrap_resamples=0",
    *TINY_DATA_ARGS,
    "--trainer.val_check_interval=4",
    "--trainer.accelerator=cpu",
    "--trainer.deterministic=true",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--val_samples=0",
]


def start_fit(root: Path, *extra: str) -> subprocess.Popen:
    """``sagan-ad fit`` of this checkout in a fresh process (so that it can be SIGKILLed)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-c", "from sagan_ad.cli import main; main()", "fit", *RUN]
    command += [f"--trainer.default_root_dir={root}", f"--trainer.logger.save_dir={root}"]
    return subprocess.Popen(
        [*command, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def cli_fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return finish(start_fit(root, *extra))


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(newest_last(root), weights_only=True)
    assert checkpoint["sagan_iteration"] == 12
    return checkpoint["state_dict"]


def final_report(root: Path) -> dict[str, object]:
    """What the run's final test reported, with the run's own folder taken out of the paths."""
    (run,) = (root / "lightning_logs").iterdir()
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    metrics["checkpoint"] = str(Path(metrics["checkpoint"]).relative_to(root))
    return {
        "folder": run.name,
        "metrics.json": metrics,
        "predictions.csv": (run / "test" / "predictions.csv").read_text(),
        "metrics.csv": (run / "metrics.csv").read_text(),
        "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
    }


def kill_config(folder: Path, iteration: int) -> str:
    path = folder / f"kill-{iteration}.yaml"
    path.write_text(
        "trainer:\n  callbacks:\n    - class_path: reliability_helpers.KillAt\n"
        f"      init_args: {{iteration: {iteration}}}\n"
    )
    return f"--config={path}"


def newest_last(root: Path) -> Path:
    return max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime_ns)


def test_twice_sigkilled_run_resumes_as_the_same_run(tmp_path):
    every = "--last_every_n_iterations=5"
    # The uninterrupted run to compare with, meanwhile in a process of its own.
    reference = tmp_path / "uninterrupted"
    uninterrupted = start_fit(reference, every)
    try:
        killed_twice_and_resumed(tmp_path / "killed", every)
        result = finish(uninterrupted)
    finally:
        uninterrupted.kill()
    assert result.returncode == 0, result.stderr[-3000:]
    killed = tmp_path / "killed"
    expected_weights = final_weights(reference)
    weights = final_weights(killed)
    assert weights.keys() == expected_weights.keys()
    for name, value in expected_weights.items():
        assert torch.equal(weights[name], value), name
    # The same run: one version folder, the same best checkpoint tested, the same test report
    # and the same metrics log (rows of the re-run iterations logged once).
    assert final_report(killed) == final_report(reference)


def killed_twice_and_resumed(root: Path, every: str) -> None:
    root.mkdir()
    # Killed at iteration 7: the newest last.ckpt is the periodic one of iteration 5.
    killed = cli_fit(root, kill_config(root, 7), every)
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = newest_last(root)
    assert torch.load(first, weights_only=True)["sagan_iteration"] == 5
    # A write killed half-way leaves a temporary; the resumed run removes it, even when another
    # host of a cluster wrote it (which the next write into the folder would leave alone).
    (first.parent / ".best-iteration=8.partial-999999999-0badc0de.ckpt").write_bytes(b"half")
    # Resumed in the same version folder and killed again at 9: last.ckpt is now the one
    # written by the validation of iteration 8.
    killed = cli_fit(root, kill_config(root, 9), every, "--ckpt_path=last")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {first}" in killed.stdout + killed.stderr
    assert newest_last(root) == first
    assert torch.load(first, weights_only=True)["sagan_iteration"] == 8
    assert not [path for path in root.rglob("*") if is_temporary(path)]

    resumed = cli_fit(root, every, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    restored = f"Restoring states from the checkpoint path at {first}"
    assert restored in resumed.stdout + resumed.stderr


AUGMENT = ("--data.augment.brightness=0.3", "--data.augment.gamma=[0.7, 1.4]")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = cli_fit(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return final_weights(root)


@pytest.fixture(scope="module")
def uninterrupted_augmented(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("uninterrupted_augmented")
    result = cli_fit(root, *AUGMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    return final_weights(root)


def test_sigkilled_augmented_run_resumes_bit_identically_on_workers(
    tmp_path, uninterrupted_augmented, uninterrupted
):
    # The uninterrupted run loads in the main process, the killed and resumed one in two
    # persistent workers: each image's augmentation depends on its stream position only, and
    # the loaders draw nothing from the global RNG, which the checkpoint restores.
    options = ("--last_every_n_iterations=5", "--data.num_workers=2", *AUGMENT)
    killed = cli_fit(tmp_path, kill_config(tmp_path, 7), *options)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert torch.load(newest_last(tmp_path), weights_only=True)["sagan_iteration"] == 5
    resumed = cli_fit(tmp_path, *options, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = final_weights(tmp_path)
    for name, value in uninterrupted_augmented.items():
        assert torch.equal(weights[name], value), name
    # The augmentation did change training.
    assert not all(torch.equal(weights[k], v) for k, v in uninterrupted.items())


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        # What torch's zip writer raises when the disk fills up under it.
        (
            RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed"),
            "the write stopped part-way",
        ),
    ],
)
def test_a_full_disk_keeps_the_old_checkpoint_and_names_the_file(
    tmp_path, monkeypatch, failure, reason
):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dies_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", dies_mid_write)
    expected = (
        f"cannot write checkpoint '{path}' ({reason}): is the disk full or the folder not "
        "writable? The previous checkpoint, if any, is left as it was"
    )
    with pytest.raises(FileError, match=f"^{re.escape(expected)}$"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


KILLED_MID_SAVE = """
import os, signal, sys, torch
from sagan_ad.training.checkpointing import atomic_save

atomic_save({"state_dict": {"w": torch.ones(3)}}, sys.argv[1])

def killed_mid_write(obj, f, *args, **kwargs):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed_mid_write
atomic_save({"state_dict": {"w": torch.zeros(3)}}, sys.argv[1])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_checkpoint_write_killed_midway_keeps_the_old_one_and_the_next_write_cleans(tmp_path):
    # Both saves in another process: this one has not written into the folder yet, so its first
    # write there is the next write after the kill.
    path = tmp_path / "last.ckpt"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_SAVE, str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    (leftover,) = (p for p in tmp_path.iterdir() if p != path)
    assert leftover.name.startswith(".last.partial-") and leftover.suffix == ".ckpt"
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    # Never taken for a checkpoint, by Lightning's search for last*.ckpt or by ours.
    trainer = L.Trainer(
        logger=False, default_root_dir=tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path)]
    )
    assert trainer.checkpoint_callback._find_last_checkpoints(trainer) == {str(path)}
    assert find_last_checkpoint(trainer) == path
    # The next checkpoint written into the folder (by a live process of this host) removes it.
    atomic_save({"state_dict": {"w": torch.full((3,), 2.0)}}, tmp_path / "best.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_last_checkpoint_interval_must_be_positive():
    with pytest.raises(ValueError, match="every_n_iterations"):
        LastCheckpoint(every_n_iterations=0)


def atomic_trainer(root: Path, **kwargs) -> L.Trainer:
    return tiny_trainer(
        root, **{"deterministic": True, "plugins": [AtomicCheckpointIO()], **kwargs}
    )


class NaNCriticLoss(SAGAN):
    """The critic's Wasserstein term turns NaN at iteration 3."""

    def critic_loss(self, normal, fake):
        terms = super().critic_loss(normal, fake)
        if self.iteration == 3:
            terms["wasserstein"] = terms["wasserstein"] * float("nan")
            terms["loss"] = terms["wasserstein"] + self.loss.lambda_gp * terms["gradient_penalty"]
        return terms


class NaNGeneratorGradient(SAGAN):
    """A finite restoration loss whose gradient is NaN (``d sqrt(x^2) / dx`` at 0) at
    iteration 3."""

    def restoration_loss(self, normal, restored_corrupted, masks):
        loss = super().restoration_loss(normal, restored_corrupted, masks)
        if self.iteration == 3:
            zero = restored_corrupted - restored_corrupted.detach()
            loss = loss + torch.sqrt(zero.pow(2)).sum()
        return loss


@pytest.mark.parametrize(
    ("model_class", "message"),
    [
        (NaNCriticLoss, "critic loss 'wasserstein' is nan at iteration 3"),
        (NaNGeneratorGradient, "non-finite generator gradients at iteration 3"),
    ],
)
def test_divergence_stops_with_the_loss_and_iteration_and_keeps_the_good_checkpoint(
    medad_root, tmp_path, model_class, message
):
    L.seed_everything(0)
    model = model_class(**tiny_networks(), max_iterations=6)
    data = MedADDataModule(medad_root, image_size=32, batch_size=4, split={"val_fraction": 0.25})
    trainer = atomic_trainer(tmp_path, callbacks=best_and_last_checkpoints(tmp_path, 1))
    with pytest.raises(DivergenceError, match=re.escape(message)):
        trainer.fit(model, data)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["sagan_iteration"] == 3
    assert all(torch.isfinite(v).all() for k, v in checkpoint["state_dict"].items() if "." in k)


def test_deferred_divergence_check_names_the_first_bad_iteration(medad_root, tmp_path):
    # With the check read every 4 iterations, the NaN at iteration 3 is reported at the read
    # after it, and no checkpoint is written from the poisoned weights in between.
    L.seed_everything(0)
    model = NaNCriticLoss(
        **tiny_networks(), performance=Performance(divergence_check_interval=4), max_iterations=12
    )
    data = MedADDataModule(medad_root, image_size=32, batch_size=4, split={"val_fraction": 0.25})
    trainer = atomic_trainer(tmp_path, callbacks=best_and_last_checkpoints(tmp_path, 1))
    with pytest.raises(
        DivergenceError,
        match=r"non-finite critic loss or gradients first at "
        r"iteration 3 \(found at the check after iteration 3, "
        r"divergence_check_interval=4\)",
    ):
        trainer.fit(model, data)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["sagan_iteration"] <= 3
    assert all(torch.isfinite(v).all() for k, v in checkpoint["state_dict"].items() if "." in k)


def test_deferred_divergence_check_reads_nothing_between_checks(medad_root):
    model = SAGAN(**tiny_networks(), performance=Performance(divergence_check_interval=3))
    terms = {"loss": torch.tensor(float("nan"))}
    model.divergence.check("critic", terms, model.critic, iteration=0)
    model.divergence.check("critic", {"loss": torch.tensor(1.0)}, model.critic, iteration=1)
    # Recorded on the device, not raised: the first failure (iteration 0) is kept.
    assert int(model.divergence._first_bad["critic"]) == 0
    with pytest.raises(DivergenceError, match="first at iteration 0"):
        model.divergence.raise_if_diverged(2)


@pytest.mark.parametrize("interval", [0, -2, True])
def test_divergence_check_interval_must_be_positive(interval):
    with pytest.raises(ValueError, match=r"^divergence_check_interval=.*must be an integer >= 1"):
        SAGAN(**tiny_networks(), performance=Performance(divergence_check_interval=interval))


def test_non_finite_weights_are_never_checkpointed():
    model = SAGAN(**tiny_networks())
    with torch.no_grad():
        model.critic.head.weight.fill_(float("inf"))
    with pytest.raises(DivergenceError, match=r"non-finite weights at iteration 0 \(critic"):
        model.on_save_checkpoint({})


class RunsCode:
    """Unpickling this object creates ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_on_unpickling_is_refused(tmp_path):
    model = SAGAN(**tiny_networks())
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {"max_iterations": 4, "payload": RunsCode(marker)},
            "pytorch-lightning_version": L.__version__,
        },
        crafted,
    )
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(crafted)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(crafted)
    assert not marker.exists()
    # The same file unpickled the unsafe way does run the code: the test's payload is real.
    torch.load(crafted, weights_only=False)
    assert marker.exists()


def test_trained_checkpoints_load_safely(medad_root, tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=2)
    data = MedADDataModule(medad_root, image_size=32, batch_size=4, split={"val_fraction": 0.25})
    atomic_trainer(tmp_path, callbacks=best_and_last_checkpoints(tmp_path)).fit(model, data)
    restored = load_checkpoint(tmp_path / "last.ckpt")
    assert restored.iteration == 2 and not restored.training
    assert all(
        torch.equal(a, b) for a, b in zip(restored.parameters(), model.parameters(), strict=True)
    )


def test_same_seed_same_metrics(medad_root, tmp_path):
    def run() -> tuple[dict, dict]:
        L.seed_everything(0)
        model = SAGAN(
            **tiny_networks(), evaluator=Evaluator(bootstrap_resamples=20), max_iterations=4
        )
        data = MedADDataModule(
            medad_root, image_size=32, batch_size=4, split={"val_fraction": 0.25}
        )
        trainer = atomic_trainer(tmp_path, enable_checkpointing=False)
        trainer.fit(model, data)
        val = dict(model.reports["val"].metrics)
        trainer.test(model, data, verbose=False)
        return val, dict(model.reports["test"].metrics)

    first, second = run(), run()
    # Compared as text: the matched subset of 12 test films is too small, and its NaN AUROCs
    # equal each other only there.
    assert json.dumps(first) == json.dumps(second)
    assert first[1]["matched/too_small"] == 1.0
    assert set(first[0]) >= {"AUROC", "AP"}
