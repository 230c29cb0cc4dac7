"""Runs keep their own outputs whatever the logger; the whole config and the test artefacts reach
the loggers (W&B offline); the data split travels with the run; generator curves are honest."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from conftest import tiny_networks, tiny_trainer
from lightning.pytorch.loggers import CSVLogger, Logger

from sagan_ad import SAGAN, Evaluator, SyntheticCXRDataModule
from sagan_ad.cli import main
from sagan_ad.training.outputs import EvaluationWriter
from sagan_ad.training.runs import run_dir
from sagan_ad.training.tracking import SplitRecorder

MODEL = [
    "--model=sagan_ad.SAGAN",
    "--model.generator.image_size=32",
    "--model.generator.base_channels=4",
    "--model.generator.num_res_blocks=1",
    "--model.critic.base_channels=4",
    "--model.critic.num_downsamples=5",
    "--model.max_iterations=2",
    "--model.evaluator.bootstrap_resamples=20",
    "--trainer.val_check_interval=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
    "--val_samples=0",
]
DATA = [
    "--data=sagan_ad.SyntheticCXRDataModule",
    "--data.num_known_normal=16",
    "--data.num_test=8",
    "--data.image_size=32",
    "--data.batch_size=4",
]
OPTIMIZERS = """
model:
  init_args:
    optimizer_g:
      class_path: torch.optim.Adam
      init_args: {lr: 0.0003, betas: [0.5, 0.999]}
    scheduler_g:
      class_path: torch.optim.lr_scheduler.StepLR
      init_args: {step_size: 10, gamma: 0.5}
"""
TEST_FILES = {"metrics.json", "predictions.csv", "roc.png", "pr.png"}


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield wandb
    wandb.finish()


def wandb_fit(root: Path, wandb, *extra: str) -> SimpleNamespace:
    """A tiny ``sagan-ad fit`` with the documented W&B logger settings (a shared save_dir);
    returns the W&B run's config, its files folder and id (the run is finished, as the end of
    the command's process would)."""
    config = root / "optimizers.yaml"
    config.write_text(OPTIMIZERS)
    main(
        [
            "fit",
            f"--config={config}",
            *MODEL,
            *DATA,
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
            f"--trainer.logger.save_dir={root / 'runs'}",
            "--trainer.logger.project=sagan-ad",
            *extra,
        ]
    )
    run = wandb.run
    result = SimpleNamespace(config=dict(run.config), files=Path(run.dir), id=run.id)
    wandb.finish()
    return result


def test_two_wandb_runs_keep_their_own_outputs_and_send_them_to_wandb(tmp_path, offline_wandb):
    first = wandb_fit(tmp_path, offline_wandb)
    second = wandb_fit(tmp_path, offline_wandb)
    assert first.id != second.id
    for run in (first, second):
        folder = tmp_path / "runs" / "sagan-ad" / run.id
        # Beside the run's checkpoints, not in the save_dir that every W&B run shares.
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert {p.name for p in (folder / "test").iterdir()} == TEST_FILES
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer_g"]["init_args"]["lr"] == 0.0003
        report = json.loads((folder / "test" / "metrics.json").read_text())
        assert report["checkpoint"].startswith(str(folder / "checkpoints"))
        # The W&B run holds the test files, the resolved config and the logged media.
        for name in TEST_FILES:
            assert (run.files / "test" / name).read_bytes() == (folder / "test" / name).read_bytes()
        assert (run.files / "sagan_ad_config.yaml").read_text() == (
            folder / "config.yaml"
        ).read_text()
        assert len(list(run.files.glob("media/images/test/roc_*.png"))) == 1
        assert len(list(run.files.glob("media/images/test/pr_*.png"))) == 1
        [table] = run.files.glob("media/table/test/predictions_*.table.json")
        rows = json.loads(table.read_text())
        assert rows["columns"][:5] == ["name", "score", "label", "prediction", "threshold"]
        assert len(rows["data"]) == 8
    assert not (tmp_path / "runs" / "test").exists() and not (tmp_path / "test").exists()
    config = first.config
    assert config["optimizer_g"]["class_path"] == "torch.optim.Adam"
    assert config["optimizer_g"]["init_args"]["lr"] == 0.0003
    assert config["scheduler_g"]["init_args"]["gamma"] == 0.5
    assert config["data"]["class_path"] == "sagan_ad.SyntheticCXRDataModule"
    assert config["data"]["init_args"]["batch_size"] == 4
    assert config["model_class"] == "sagan_ad.SAGAN"
    assert config["generator"]["init_args"]["image_size"] == 32
    assert config["seed_everything"] == 0


def test_hparams_yaml_has_the_optimizers_and_the_data(tmp_path):
    config = tmp_path / "optimizers.yaml"
    config.write_text(OPTIMIZERS)
    main(
        [
            "fit",
            f"--config={config}",
            *MODEL,
            *DATA,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--test_after_fit=false",
        ]
    )
    hparams = yaml.safe_load(next(tmp_path.rglob("hparams.yaml")).read_text())
    assert hparams["optimizer_g"]["init_args"]["lr"] == 0.0003
    assert hparams["scheduler_g"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert hparams["data"]["init_args"]["num_known_normal"] == 16
    assert hparams["model_class"] == "sagan_ad.SAGAN"
    assert hparams["generator"]["init_args"]["base_channels"] == 4  # the model's own, as before


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    main(["fit", *MODEL, *DATA, f"--trainer.default_root_dir={root}", "--test_after_fit=false"])
    return next(root.rglob("last.ckpt"))


@pytest.mark.parametrize(
    ("kind", "folders"),
    [("csv", ["t/version_0", "t/version_1"]), ("none", ["version_0", "version_1"])],
)
def test_repeated_tests_never_share_a_folder(kind, folders, checkpoint, tmp_path):
    logger = {
        "csv": [
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.logger.name=t",
        ],
        "none": ["--trainer.logger=false"],
    }[kind]
    for _ in range(2):
        main(
            [
                "test",
                *MODEL,
                *DATA,
                f"--ckpt_path={checkpoint}",
                f"--trainer.default_root_dir={tmp_path}",
                *logger,
            ]
        )
    written = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("test"))
    assert written == folders
    for folder in folders:
        assert {p.name for p in (tmp_path / folder / "test").iterdir()} == TEST_FILES
        assert (tmp_path / folder / "config.yaml").is_file()


class NumberedLogger(Logger):
    """A logger that numbers its runs like TensorBoard's (``version`` an int) or names them."""

    def __init__(self, save_dir: str | None, version: int | str) -> None:
        super().__init__()
        self._save_dir, self._version = save_dir, version

    name = "experiment"
    save_dir = property(lambda self: self._save_dir)
    version = property(lambda self: self._version)

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_run_dir_is_where_the_loggers_run_keeps_its_checkpoints(tmp_path):
    def folder(**options) -> Path:
        return run_dir(L.Trainer(default_root_dir=tmp_path, **options))

    assert folder(logger=NumberedLogger(str(tmp_path / "tb"), 3)) == (
        tmp_path / "tb" / "experiment" / "version_3"
    )
    assert folder(logger=NumberedLogger(None, "abc123")) == tmp_path / "experiment" / "abc123"
    csv_logger = CSVLogger(tmp_path / "csv", name="sagan")
    assert folder(logger=csv_logger) == Path(csv_logger.log_dir)
    # A resumed run that reuses its version writes into that same folder again.
    assert folder(logger=CSVLogger(tmp_path / "csv", name="sagan", version=0)) == Path(
        csv_logger.log_dir
    )
    assert [folder(logger=False).name for _ in range(3)] == ["version_0", "version_1", "version_2"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("every", [1, 3])
def test_generator_losses_are_logged_on_generator_iterations_only(every, tmp_path):
    logger = CSVLogger(tmp_path)
    trainer = tiny_trainer(
        tmp_path,
        logger=logger,
        log_every_n_steps=every,
        val_check_interval=100,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=8)
    trainer.fit(model, SyntheticCXRDataModule(num_known_normal=16, num_test=8, image_size=32))
    rows = read_rows(Path(logger.log_dir) / "metrics.csv")
    generator = sorted(int(r["step"]) for r in rows if r.get("train/generator/loss"))
    critic = sorted(int(r["step"]) for r in rows if r.get("train/critic/loss"))
    # n_critic = 2: iterations 1, 3, 5, 7 update the generator.
    assert all((step + 1) % model.n_critic == 0 for step in generator)
    if every == 1:
        assert generator == [1, 3, 5, 7] and critic == list(range(8))
    else:
        # Critic at the logging iterations 2 and 5 and at the last; generator at the first
        # generator iteration at or after each of them.
        assert critic == [2, 5, 7] and generator == [3, 5, 7]


class SplitPhantoms(SyntheticCXRDataModule):
    """Phantoms that report a split manifest, as file-based DataModules do."""

    def __init__(self, manifest: dict | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest

    def split_manifest(self) -> dict | None:
        return self.manifest


MANIFEST = {
    "source": "drawn with seed 0 from /data/rsna, cached as /cache/rsna/data.json",
    "split": {"train": {"0": ["a.png"], "unlabeled": {"0": ["b.png"], "1": ["c.png"]}}},
}


def test_the_split_is_written_into_the_run_folder_and_the_wandb_run(tmp_path, offline_wandb):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="sagan-ad-tests", save_dir=str(tmp_path), offline=True)
    trainer = tiny_trainer(
        tmp_path, logger=logger, callbacks=[SplitRecorder()], enable_checkpointing=False
    )
    data = SplitPhantoms(MANIFEST, num_known_normal=16, num_test=8, image_size=32, batch_size=4)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    model.allow_untrained = True  # the split's files are the subject, not the scores
    trainer.validate(model, data)
    folder = run_dir(trainer)
    assert folder == tmp_path / "sagan-ad-tests" / logger.experiment.id
    assert json.loads((folder / "data.json").read_text()) == MANIFEST["split"]
    assert (folder / "split_source.txt").read_text() == MANIFEST["source"] + "\n"
    files = Path(logger.experiment.dir)
    assert json.loads((files / "data.json").read_text()) == MANIFEST["split"]
    assert (files / "split_source.txt").read_text() == MANIFEST["source"] + "\n"


@pytest.mark.parametrize("data", [SplitPhantoms(None), SyntheticCXRDataModule()])
def test_no_split_no_file(data, tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[SplitRecorder()])
    trainer.strategy.connect(SAGAN(**tiny_networks()))
    trainer.datamodule = data
    SplitRecorder().setup(trainer, trainer.lightning_module, "fit")
    assert not list(tmp_path.rglob("data.json"))


def test_the_cli_records_the_split(tmp_path):
    main(
        [
            "validate",
            *MODEL,
            "--data=test_run_folders.SplitPhantoms",
            f"--data.manifest={json.dumps(MANIFEST)}",
            "--data.num_known_normal=16",
            "--data.num_test=8",
            "--data.image_size=32",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--allow_untrained=true",
        ]
    )
    assert json.loads((tmp_path / "version_0" / "data.json").read_text()) == MANIFEST["split"]


def test_evaluation_writer_writes_into_the_run_folder_of_a_plain_trainer(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[EvaluationWriter()])
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    model.allow_untrained = True  # where the files go is the subject, not the scores
    data = SyntheticCXRDataModule(num_known_normal=16, num_test=8, image_size=32, batch_size=4)
    trainer.validate(model, data)
    trainer.test(model, data)
    assert {p.name for p in (tmp_path / "version_0" / "test").iterdir()} == TEST_FILES
    assert torch.isfinite(model.threshold)
