"""Validation sample grids in W&B (offline), TensorBoard and PNG files; the data summary."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from conftest import tiny_networks
from lightning.pytorch.loggers import TensorBoardLogger

from sagan_ad import SAGAN, Evaluator, SyntheticCXRDataModule, ValidationSampleLogger


def phantoms() -> SyntheticCXRDataModule:
    return SyntheticCXRDataModule(num_known_normal=16, num_test=8, image_size=32, batch_size=4)


class RecordingTensorBoard(TensorBoardLogger):
    """A TensorBoardLogger stand-in that records ``add_image`` calls instead of writing."""

    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, int, str]] = []

    @property
    def experiment(self) -> RecordingTensorBoard:
        return self

    def add_image(self, tag: str, image: np.ndarray, global_step: int, dataformats: str) -> None:
        self.images.append((tag, image, global_step, dataformats))


def test_tensorboard_gets_the_grid_with_the_iteration_as_step(tmp_path):
    model = SAGAN(**tiny_networks())
    model.iteration = 40
    logger = RecordingTensorBoard()
    trainer = SimpleNamespace(
        sanity_checking=False, loggers=[logger], log_dir=str(tmp_path), default_root_dir=tmp_path
    )
    callback = ValidationSampleLogger(num_samples=3)
    callback.samples = torch.zeros(3, 1, 32, 32, dtype=torch.uint8)
    callback.on_validation_epoch_end(trainer, model)
    [(tag, image, step, layout)] = logger.images
    assert (tag, step, layout) == ("val/samples", 40, "HWC")
    assert image.dtype == np.uint8 and image.shape[0] >= 3 * 32 and image.shape[2] == 3
    assert not (tmp_path / "val_samples").exists()


def test_samples_are_fixed_and_span_the_validation_set(tmp_path):
    data = phantoms()
    data.setup()
    callback = ValidationSampleLogger(num_samples=4)
    picked = callback._pick_samples(SimpleNamespace(datamodule=data))
    val = data.val.images
    # Evenly spaced: the first held-out normal and the last pseudo anomaly are both shown.
    assert len(picked) == 4
    assert torch.equal(picked[0], val[0]) and torch.equal(picked[-1], val[-1])


def test_wandb_offline_run_gets_images_and_the_data_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    L.seed_everything(0)
    logger = WandbLogger(project="sagan-ad-tests", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(
        max_epochs=-1,
        check_val_every_n_epoch=None,
        val_check_interval=2,
        logger=logger,
        callbacks=[ValidationSampleLogger(num_samples=2)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(
        SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=2),
        phantoms(),
    )
    config = dict(logger.experiment.config)
    assert config["data/train/known_normal"] == 14
    assert config["evaluator"]["init_args"]["threshold_policy"] == "balanced"
    logger.experiment.finish()
    images = list(tmp_path.rglob("media/images/val/samples_*.png"))
    assert len(images) == 1
