"""The run side of bad inputs: which weights get evaluated, checkpoints that cannot be used,
output folders that cannot be written, optimizer settings torch refuses, and ``sagan-ad export``.

Each case must end in one ``error: <message>`` line (exit status 2, no traceback) that names the
file or setting and says what to pass, or in the correct result."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_networks, tiny_trainer
from lightning.pytorch.loggers import CSVLogger

from sagan_ad import (
    SAGAN,
    CheckpointError,
    Evaluator,
    Scorer,
    SyntheticCXRDataModule,
    UnsafeCheckpointError,
    load_checkpoint,
)
from sagan_ad.cli import app as cli_module
from sagan_ad.cli import main
from sagan_ad.training.resume import find_best_checkpoint

REPO = Path(__file__).resolve().parents[1]

MODEL = ["--model=sagan_ad.SAGAN", *TINY_MODEL_ARGS]
DATA = TINY_DATA_ARGS
QUIET = [
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
    "--val_samples=0",
]


class CLIError(Exception):
    """What ``sagan-ad`` printed on stderr when it exited with status 2."""


def cli_error(*args: str) -> str:
    """Run ``sagan-ad`` expecting ``error: ...`` with exit status 2; return the message."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        main(list(args))
    printed = stderr.getvalue()
    assert info.value.code == 2, printed
    assert "Traceback" not in printed
    lines = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, printed
    return lines[0]


def logger(root: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--trainer.default_root_dir={root}",
    ]


def run(subcommand: str, root: Path, *extra: str) -> None:
    main([subcommand, *MODEL, *DATA, *QUIET, *logger(root), *extra])


class DoublingScorer(Scorer):
    """Twice the paper's score."""

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        return 2 * super().score(maps)


class DoubledScore(SAGAN):
    """A subclass that scores differently (its scorer doubles): loading its weights as a plain
    SAGAN changes scores."""

    def __init__(self, scorer: Scorer | None = None, **kwargs) -> None:
        super().__init__(scorer=scorer if scorer is not None else DoublingScorer(), **kwargs)


class Renamed(SAGAN):
    """A subclass that scores like SAGAN (exportable), to check the class a load picks."""


class WithGain(SAGAN):
    """A subclass with a setting of its own, saved in its checkpoints' hyper-parameters."""

    def __init__(self, gain: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.gain = gain


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A tiny ``sagan-ad fit`` with a CSV logger: 4 iterations, validation every 2."""
    root = tmp_path_factory.mktemp("fitted")
    run("fit", root, "--model.max_iterations=4", "--trainer.val_check_interval=2")
    return root


def trained(path: Path, model_class: type[SAGAN] = SAGAN, iterations: int = 2, **extra) -> Path:
    L.seed_everything(0)
    evaluator = Evaluator(bootstrap_resamples=0)
    model = model_class(**tiny_networks(), max_iterations=iterations, evaluator=evaluator, **extra)
    data = SyntheticCXRDataModule(
        num_known_normal=16, num_test=8, image_size=32, batch_size=4, split={"val_fraction": 0.25}
    )
    trainer = tiny_trainer(path.parent, enable_checkpointing=False)
    trainer.fit(model, data)
    trainer.save_checkpoint(path)
    return path


# --------------------------------------------------------------- which weights are evaluated
@pytest.mark.parametrize("which", ["last", "best"])
def test_test_resolves_last_and_best_to_the_trained_run(fitted, tmp_path, which):
    run("test", fitted, f"--ckpt_path={which}")
    newest = max(fitted.rglob("test/metrics.json"), key=lambda p: p.stat().st_mtime_ns)
    report = json.loads(newest.read_text())
    (checkpoints,) = {p.parent for p in fitted.rglob("*.ckpt")}
    recorded = torch.load(checkpoints / "last.ckpt", weights_only=True)
    state = next(s for k, s in recorded["callbacks"].items() if "val/AUROC" in k)
    expected = checkpoints / "last.ckpt" if which == "last" else Path(state["best_model_path"])
    assert report["checkpoint"] == str(expected)
    assert report["iteration"] == torch.load(expected, weights_only=True)["sagan_iteration"] > 0


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
@pytest.mark.parametrize("which", ["last", "best"])
def test_validate_and_predict_resolve_last_and_best_the_same_way(fitted, subcommand, which, caplog):
    run(subcommand, fitted, f"--ckpt_path={which}")
    (checkpoints,) = {p.parent for p in fitted.rglob("*.ckpt")}
    names = {"last": "last.ckpt", "best": "best-iteration="}
    restored = [r.getMessage() for r in caplog.records if "Restoring states" in r.getMessage()]
    assert restored and str(checkpoints / names[which]) in restored[-1]


def test_best_is_found_by_name_when_the_run_folder_moved(fitted, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(fitted / "lightning_logs" / "version_0", moved / "lightning_logs" / "version_0")
    trainer = L.Trainer(logger=CSVLogger(moved), default_root_dir=moved)
    best = find_best_checkpoint(trainer)
    assert best is not None and best.parent == moved / "lightning_logs/version_0/checkpoints"
    assert best.name.startswith("best-iteration=")


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
@pytest.mark.parametrize("which", ["last", "best"])
def test_last_and_best_without_a_trained_run_are_errors(tmp_path, subcommand, which):
    message = cli_error(
        subcommand, *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={which}"
    )
    assert message.startswith(f"error: --ckpt_path {which}: no checkpoint of this experiment")
    assert str(tmp_path / "lightning_logs") in message and "sagan-ad fit" in message


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_an_untrained_model_is_refused_unless_asked(tmp_path, subcommand):
    message = cli_error(subcommand, *MODEL, *DATA, *QUIET, *logger(tmp_path))
    assert message.startswith(f"error: {subcommand} refused: the model is untrained")
    assert "--ckpt_path" in message and "--allow_untrained true" in message
    run(subcommand, tmp_path, "--allow_untrained=true")


def test_a_checkpoint_of_iteration_zero_is_not_exported_unless_asked(tmp_path):
    checkpoint = tmp_path / "untrained.ckpt"
    trainer = tiny_trainer(tmp_path)
    trainer.strategy.connect(SAGAN(**tiny_networks()))
    trainer.save_checkpoint(checkpoint)
    output = tmp_path / "scorer.pt"
    message = cli_error("export", f"--ckpt_path={checkpoint}", f"--output={output}")
    assert "untrained.ckpt' holds an untrained model" in message
    assert "--allow_untrained true" in message and not output.exists()
    main(["export", f"--ckpt_path={checkpoint}", f"--output={output}", "--allow_untrained"])
    assert output.is_file()


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_a_checkpoint_of_iteration_zero_is_not_evaluated_unless_asked(tmp_path, subcommand):
    """Loading it counted as loading trained weights: evaluation scored the random network that
    export refuses."""
    checkpoint = tmp_path / "untrained.ckpt"
    trainer = tiny_trainer(tmp_path)
    trainer.strategy.connect(SAGAN(**tiny_networks()))
    trainer.save_checkpoint(checkpoint)
    options = [*MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={checkpoint}"]
    message = cli_error(subcommand, *options)
    assert message.startswith(f"error: {subcommand} refused: the model is untrained (iteration 0")
    run(subcommand, tmp_path, f"--ckpt_path={checkpoint}", "--allow_untrained=true")
    model = load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"^test refused: the model is untrained"):
        tiny_trainer(tmp_path).test(model, SyntheticCXRDataModule(image_size=32), verbose=False)


def test_python_evaluation_of_an_untrained_model_is_refused(tmp_path):
    model = SAGAN(**tiny_networks())
    data = SyntheticCXRDataModule(num_known_normal=16, num_test=8, image_size=32, batch_size=4)
    with pytest.raises(ValueError, match=r"^test refused: the model is untrained"):
        tiny_trainer(tmp_path).test(model, data, verbose=False)
    # Weights from a state dict count as trained.
    model.load_state_dict(SAGAN(**tiny_networks()).state_dict())
    tiny_trainer(tmp_path).test(model, data, verbose=False)


def test_resuming_with_another_architecture_names_the_setting(fitted):
    before = sorted(p.name for p in fitted.rglob("*") if p.is_file())
    message = cli_error(
        "fit",
        *MODEL,
        *DATA,
        *QUIET,
        *logger(fitted),
        "--ckpt_path=last",
        "--model.generator.base_channels=8",
    )
    assert "last.ckpt' (--ckpt_path) does not fit the model: generator." in message
    assert "It was trained with " in message and "generator.base_channels=4 (model: 8)" in message
    assert sorted(p.name for p in fitted.rglob("*") if p.is_file()) == before


def test_evaluating_with_the_training_configuration_warns_of_no_difference(fitted, recwarn):
    """normalization=None in the configuration means "what the data uses", which fit records in
    the checkpoint ('none'): that is not a difference worth a warning on every evaluation."""
    run("test", fitted, "--model.max_iterations=4", "--ckpt_path=last")
    differ = [str(w.message) for w in recwarn if "differ from the configuration" in str(w.message)]
    assert differ == []


@pytest.mark.parametrize("ckpt_path", ["last", "its path"])
def test_a_moved_run_resumes_in_its_new_folder_as_the_same_run(fitted, tmp_path, ckpt_path):
    """A run folder copied elsewhere (the original left in place) and resumed there, by
    ``last`` or by the path of its newest last.ckpt: the same version folder, the configured
    max_iterations (not the checkpoint's), and the best checkpoint and its score restored from
    the new folder, so the final test scores the new folder's best file, not the original's or
    whichever came last."""
    moved = tmp_path / "moved"
    shutil.copytree(fitted, moved)
    versions = sorted(p.name for p in (moved / "lightning_logs").iterdir())
    folder = moved / "lightning_logs" / "version_0" / "checkpoints"
    path = "last" if ckpt_path == "last" else str(folder / "last.ckpt")
    run(
        "fit",
        moved,
        "--model.max_iterations=5",
        "--trainer.val_check_interval=2",
        f"--ckpt_path={path}",
    )

    assert sorted(p.name for p in (moved / "lightning_logs").iterdir()) == versions
    assert torch.load(folder / "last.ckpt", weights_only=True)["sagan_iteration"] == 5
    # The best so far (iteration 4) was known: the validation at 5 replaced it or kept it, never
    # both (a forgotten score makes any new one the best, and leaves the old file behind).
    (best,) = folder.glob("best-*.ckpt")
    report = json.loads((folder.parent / "test" / "metrics.json").read_text())
    assert report["checkpoint"] == str(best)


# --------------------------------------------------------------- the model class of a checkpoint
def test_a_subclass_checkpoint_loads_as_its_class_and_refuses_another(tmp_path):
    checkpoint = trained(tmp_path / "doubled.ckpt", DoubledScore)
    assert torch.load(checkpoint, weights_only=True)["sagan_model_class"] == (
        "test_bad_inputs_run.DoubledScore"
    )
    model = load_checkpoint(checkpoint)
    assert type(model) is DoubledScore
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    plain = SAGAN(**tiny_networks())
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.score(images), 2 * plain.eval().score(images))
    with pytest.raises(CheckpointError, match=r"model class 'test_bad_inputs_run\.DoubledScore'"):
        load_checkpoint(checkpoint, SAGAN)
    with pytest.raises(CheckpointError, match=r"not 'sagan_ad\.SAGAN'"):
        SAGAN.load_from_checkpoint(checkpoint, weights_only=True)
    message = cli_error(
        "test", *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={checkpoint}"
    )
    assert "doubled.ckpt' (--ckpt_path) was written by model class" in message
    assert "--model test_bad_inputs_run.DoubledScore" in message


def test_the_command_line_builds_the_checkpoints_class_only_when_configured(tmp_path):
    checkpoint = trained(tmp_path / "gain.ckpt", WithGain, gain=3.0)
    message = cli_error(
        "test", *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={checkpoint}"
    )
    assert "gain.ckpt' (--ckpt_path) was written by model class 'test_bad_inputs_run.WithGain'" in (
        message
    )
    assert "--model test_bad_inputs_run.WithGain" in message
    run("test", tmp_path, "--model=test_bad_inputs_run.WithGain", f"--ckpt_path={checkpoint}")
    (config,) = tmp_path.rglob("config.yaml")
    assert "class_path: test_bad_inputs_run.WithGain" in config.read_text()
    assert "gain: 3.0" in config.read_text()


def test_sagan_checkpoints_record_the_public_class_name(source_checkpoint):
    recorded = torch.load(source_checkpoint, weights_only=True)["sagan_model_class"]
    assert recorded == "sagan_ad.SAGAN"


def test_export_loads_the_recorded_class(tmp_path, monkeypatch):
    checkpoint = trained(tmp_path / "renamed.ckpt", Renamed)
    loaded = []
    import sagan_ad.export

    original = sagan_ad.export.AnomalyScorer.from_model
    monkeypatch.setattr(
        sagan_ad.export.AnomalyScorer,
        "from_model",
        classmethod(lambda cls, model, *args: loaded.append(type(model)) or original(model, *args)),
    )
    main(["export", f"--ckpt_path={checkpoint}", f"--output={tmp_path / 'scorer.pt'}"])
    assert loaded == [Renamed]
    message = cli_error(
        "export",
        f"--ckpt_path={checkpoint}",
        f"--output={tmp_path / 'x.pt'}",
        "--model=sagan_ad.SAGAN",
    )
    assert "was written by model class 'test_bad_inputs_run.Renamed'" in message


def test_a_recorded_class_that_cannot_be_imported_is_named(tmp_path):
    checkpoint = torch.load(trained(tmp_path / "gone.ckpt"), weights_only=True)
    checkpoint["sagan_model_class"] = "my_lab_models.MySAGAN"
    torch.save(checkpoint, tmp_path / "gone.ckpt")
    expected = r"'my_lab_models\.MySAGAN', which cannot be imported here \(ModuleNotFoundError"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "gone.ckpt")
    message = cli_error("export", f"--ckpt_path={tmp_path / 'gone.ckpt'}", "--output=x.onnx")
    assert "gone.ckpt' was written by model class 'my_lab_models.MySAGAN'" in message
    assert "PYTHONPATH" in message and "--model my_lab_models.MySAGAN" in message
    message = cli_error(
        "export", f"--ckpt_path={tmp_path / 'gone.ckpt'}", "--output=x.onnx", "--model=nope.Nope"
    )
    assert message.startswith("error: --model 'nope.Nope' cannot be imported")


def test_a_checkpoint_saved_on_a_gpu_is_used_on_a_machine_without_one(tmp_path, monkeypatch):
    # Tensors tagged with a device this machine lacks, as a GPU run's checkpoint is on a CPU-only
    # machine: read without map_location, they fail as CUDA tensors do there.
    saving = {"on": False}

    def tag(storage):
        return "absent_gpu" if saving["on"] else None

    def restore(storage, location):
        if location == "absent_gpu":
            raise RuntimeError("Attempting to deserialize object on a CUDA device")
        return None

    registry = torch.serialization._package_registry
    monkeypatch.setattr(torch.serialization, "_package_registry", [(-1, tag, restore), *registry])
    checkpoint = torch.load(trained(tmp_path / "plain.ckpt"), weights_only=True)
    saving["on"] = True
    torch.save(checkpoint, tmp_path / "gpu.ckpt")
    saving["on"] = False
    with pytest.raises(RuntimeError, match="CUDA device"):
        torch.load(tmp_path / "gpu.ckpt", weights_only=True)

    assert load_checkpoint(tmp_path / "gpu.ckpt").iteration == 2
    run("test", tmp_path / "run", f"--ckpt_path={tmp_path / 'gpu.ckpt'}")
    (report,) = (tmp_path / "run").rglob("test/metrics.json")
    assert json.loads(report.read_text())["iteration"] == 2
    main(["export", f"--ckpt_path={tmp_path / 'gpu.ckpt'}", f"--output={tmp_path / 's.pt'}"])


# --------------------------------------------------------------- unusable checkpoint files
def truncated(folder: Path, source: Path) -> Path:
    path = folder / "cut.ckpt"
    path.write_bytes(source.read_bytes()[:3000])
    return path


def not_a_torch_file(folder: Path, source: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("hello, not a checkpoint")
    return path


def bare_state_dict(folder: Path, source: Path) -> Path:
    path = folder / "weights.pt"
    torch.save(torch.load(source, weights_only=True)["state_dict"], path)
    return path


class RunsCode:
    """Unpickling this object creates ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled_code(folder: Path, source: Path) -> Path:
    path = folder / "crafted.ckpt"
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = RunsCode(folder / "code-ran")
    torch.save(checkpoint, path)
    return path


def yaml_file(folder: Path, source: Path) -> Path:
    path = folder / "hparams.yaml"
    path.write_text("_class_path: sagan_ad.SAGAN\nimage_size: 32\n")
    return path


def random_bytes(folder: Path, source: Path) -> Path:
    path = folder / "noise.ckpt"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def plain_pickle(folder: Path, source: Path) -> Path:
    path = folder / "settings.pkl"
    path.write_bytes(pickle.dumps({"image_size": 32}, protocol=4))
    return path


def damaged_inside(folder: Path, source: Path) -> Path:
    """Intact zip directory, but the header of a record in the middle overwritten."""
    data = bytearray(source.read_bytes())
    headers = [m.start() for m in re.finditer(b"PK\x03\x04", bytes(data))]
    middle = headers[len(headers) // 2]
    data[middle : middle + 30] = bytes(30)
    path = folder / "damaged.ckpt"
    path.write_bytes(bytes(data))
    return path


def edited(key: str, value: Any, name: str) -> Callable[[Path, Path], Path]:
    """A checkpoint with one entry replaced, as a hand edit or another program would."""

    def make(folder: Path, source: Path) -> Path:
        checkpoint = torch.load(source, weights_only=True)
        checkpoint[key] = value
        torch.save(checkpoint, folder / name)
        return folder / name

    return make


def non_finite(folder: Path, source: Path) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    weights = checkpoint["state_dict"]
    name = next(key for key in weights if key.endswith("weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    torch.save(checkpoint, folder / "diverged.ckpt")
    return folder / "diverged.ckpt"


CHECKPOINTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "missing": (lambda folder, source: folder / "nope.ckpt", r"nope\.ckpt' does not exist"),
    "folder": (lambda folder, source: folder, r"is a folder, not a file"),
    "empty": (
        lambda folder, source: (folder / "empty.ckpt").touch() or folder / "empty.ckpt",
        r"empty\.ckpt' is empty \(0 bytes\)",
    ),
    "truncated": (truncated, r"cut\.ckpt' is truncated or corrupt \(an incomplete zip archive"),
    "not a PyTorch file": (not_a_torch_file, r"notes\.ckpt' cannot be read as a PyTorch"),
    "bare state dict": (bare_state_dict, r"weights\.pt' is not a Lightning checkpoint"),
    "pickled code": (
        pickled_code,
        r"crafted\.ckpt' was refused by safe loading .*pickled Python code "
        r"\(getattr\)",
    ),
    # Not code: safe loading refuses these too, but they are simply not checkpoints.
    "a YAML file": (yaml_file, r"hparams\.yaml' is not a PyTorch checkpoint \(its bytes are not"),
    "random bytes": (random_bytes, r"noise\.ckpt' is not a PyTorch checkpoint \(its bytes are"),
    "a plain pickle": (plain_pickle, r"settings\.pkl' is not a PyTorch checkpoint \(its bytes"),
    "damaged inside": (damaged_inside, r"damaged\.ckpt' cannot be read as a PyTorch checkpoint"),
    "weights not a dict": (
        edited("state_dict", [1, 2], "list.ckpt"),
        r"list\.ckpt' is damaged: its 'state_dict' is a list, not names and tensors",
    ),
    "class not a name": (
        edited("sagan_model_class", 42, "class.ckpt"),
        r"class\.ckpt' is damaged: its 'sagan_model_class' is 42, not a dotted class name",
    ),
    "iteration not a count": (
        edited("sagan_iteration", "seven", "iteration.ckpt"),
        r"iteration\.ckpt' is damaged: its 'sagan_iteration' is 'seven', not an iteration",
    ),
    "non-finite weights": (non_finite, r"diverged\.ckpt'.* holds non-finite weights \(NaN"),
}


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> Path:
    return trained(tmp_path_factory.mktemp("source") / "good.ckpt")


@pytest.mark.parametrize("case", list(CHECKPOINTS))
@pytest.mark.parametrize("subcommand", ["test", "fit", "export"])
def test_unusable_checkpoints_are_one_clear_error(tmp_path, source_checkpoint, case, subcommand):
    make, expected = CHECKPOINTS[case]
    folder = tmp_path / "files"
    folder.mkdir()
    path = make(folder, source_checkpoint)
    if subcommand == "export":
        message = cli_error("export", f"--ckpt_path={path}", f"--output={tmp_path / 'x.onnx'}")
    else:
        message = cli_error(
            subcommand, *MODEL, *DATA, *QUIET, *logger(tmp_path / "run"), f"--ckpt_path={path}"
        )
    assert message.startswith("error: checkpoint ")
    assert re.search(expected, message), message
    assert "weights_only=False" not in message
    assert "pickled Python code" not in message or case == "pickled code"
    assert not (folder / "code-ran").exists()


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_unusable_checkpoints_raise_checkpoint_errors_in_python(tmp_path, source_checkpoint, case):
    make, expected = CHECKPOINTS[case]
    folder = tmp_path / "files"
    folder.mkdir()
    path = make(folder, source_checkpoint)
    error = FileNotFoundError if case == "missing" else CheckpointError
    if case == "pickled code":
        error = UnsafeCheckpointError
    with pytest.raises(error, match=expected) as info:
        load_checkpoint(path)
    assert case == "pickled code" or not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"future_option": 3},
            r"settings\.ckpt'.* records settings that sagan_ad\.SAGAN does not take: "
            r"future_option=3 \(no such setting\)\. It was written by another version",
        ),
        (
            {
                "generator": {
                    "class_path": "sagan_ad.Generator",
                    "init_args": {"image_size": "big"},
                },
                "scorer": {"class_path": "sagan_ad.Scorer", "init_args": {"inference": "bogus"}},
            },
            r"settings\.ckpt'.* does not take: generator\.image_size='big' \(expects int\), "
            r"scorer\.inference='bogus' \(expects Literal\['deterministic'",
        ),
        (
            {"image_size": 32},
            r"settings\.ckpt'.* does not take: image_size=32 \(no such setting\)",
        ),
    ],
)
def test_recorded_settings_the_model_does_not_take_are_named(
    tmp_path, source_checkpoint, settings, expected
):
    """A checkpoint of a newer version (an unknown setting) or a hand-edited one (a wrong type):
    evaluating or exporting it names the setting, never a parse tree or a silent drop."""
    checkpoint = torch.load(source_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"].update(settings)
    path = tmp_path / "settings.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    export = cli_error("export", f"--ckpt_path={path}", f"--output={tmp_path / 'x.pt'}")
    assert re.search(expected, export), export
    message = cli_error("test", *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={path}")
    assert re.search(expected, message), message


def test_a_checkpoint_without_settings_that_the_default_model_cannot_take_is_named(
    tmp_path, source_checkpoint
):
    """load_checkpoint builds the model from the recorded settings; without them the default
    SAGAN cannot take the tiny model's weights: a RuntimeError listing every key before. The
    refusal is found from the weights' names and shapes, not from torch's message."""
    checkpoint = torch.load(source_checkpoint, weights_only=True)
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "bare.ckpt")
    message = str(refused.value)
    assert re.match(r"checkpoint '.*bare\.ckpt' does not fit the model: \S+: \(", message), message
    assert "in the checkpoint," in message and " here" in message
    assert "It records no settings: build the model with the ones it was trained with" in message


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_an_empty_checkpoint_path_is_named_as_empty(tmp_path, subcommand):
    message = cli_error(subcommand, *MODEL, *DATA, *QUIET, *logger(tmp_path), "--ckpt_path=")
    assert message.startswith("error: the checkpoint path is empty: pass a .ckpt file"), message
    with pytest.raises(CheckpointError, match="the checkpoint path is empty"):
        load_checkpoint("")


@pytest.mark.parametrize("which", ["last", "best"])
def test_export_says_it_takes_a_file_for_last_and_best(tmp_path, which):
    message = cli_error("export", f"--ckpt_path={which}", f"--output={tmp_path / 'x.pt'}")
    assert message.startswith(f"error: sagan-ad export --ckpt_path {which}: export takes a ")
    assert "pass the file, for example lightning_logs/version_0/checkpoints/" in message


def test_hpc_checkpoints_are_resolved_or_their_absence_named(tmp_path, source_checkpoint):
    """Lightning's ``hpc`` word (SLURM pre-emption checkpoints) ended in its own traceback."""
    message = cli_error("test", *MODEL, *DATA, *QUIET, *logger(tmp_path), "--ckpt_path=hpc")
    assert "--ckpt_path hpc: no HPC checkpoint (hpc_ckpt_N.ckpt, written by" in message
    assert f"in '{tmp_path}': pass --ckpt_path last, best or a checkpoint file" in message
    shutil.copy(source_checkpoint, tmp_path / "hpc_ckpt_1.ckpt")
    shutil.copy(source_checkpoint, tmp_path / "hpc_ckpt_12.ckpt")
    run("test", tmp_path, "--ckpt_path=hpc")
    (report,) = tmp_path.rglob("test/metrics.json")
    assert json.loads(report.read_text())["checkpoint"] == str(tmp_path / "hpc_ckpt_12.ckpt")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "memory://runs/missing.ckpt",
            r"\(FileNotFoundError: Checkpoint file not found: memory://",
        ),
        ("nosuchstorage://bucket/x.ckpt", r"\(ValueError: Protocol not known: nosuchstorage\)"),
    ],
)
def test_remote_checkpoints_that_cannot_be_read_are_named(tmp_path, url, expected):
    """A missing object or a storage fsspec cannot open (its package missing, say) ended in a
    traceback from inside fsspec."""
    message = cli_error("test", *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={url}")
    assert message.startswith(f"error: checkpoint '{url}' cannot be read ("), message
    assert re.search(expected, message), message
    assert "or download the file and pass its local path" in message


# --------------------------------------------------------------- output folders
def in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker


def test_a_logger_folder_that_is_a_file_is_named(tmp_path):
    blocker = in_the_way(tmp_path)
    message = cli_error(
        "fit",
        *MODEL,
        *DATA,
        *QUIET,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={blocker / 'logs'}",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    )
    assert message.startswith("error: --trainer.logger.init_args.save_dir: the output folder")
    assert "a_file' is a file, not a folder" in message


def test_a_test_output_folder_that_is_a_file_is_named(tmp_path, source_checkpoint):
    # The run's own folder is <save_dir>/<name>/<version>; its test/ is a file.
    run = tmp_path / "logs" / "run" / "version_0"
    run.mkdir(parents=True)
    (run / "test").write_text("not a folder")
    message = cli_error(
        "test",
        *MODEL,
        *DATA,
        *QUIET,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path / 'logs'}",
        "--trainer.logger.name=run",
        "--trainer.logger.version=0",
        f"--ckpt_path={source_checkpoint}",
    )
    assert "the output folder" in message and "version_0/test' is a file" in message


def test_a_cache_folder_that_is_a_file_is_named(tmp_path, medad_root):
    blocker = in_the_way(tmp_path)
    message = cli_error(
        "fit",
        *MODEL,
        "--data=sagan_ad.MedADDataModule",
        f"--data.root={medad_root}",
        "--data.image_size=32",
        f"--data.cache.dir={blocker / 'cache'}",
        *QUIET,
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    )
    assert message.startswith("error: --data.init_args.cache.dir: the output folder")
    assert "a_file' is a file" in message


def test_a_checkpoint_folder_that_is_a_file_is_named(tmp_path):
    blocker = in_the_way(tmp_path)
    config = tmp_path / "checkpoints.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {blocker / 'checkpoints'}}}\n"
    )
    message = cli_error("fit", *MODEL, *DATA, *QUIET, *logger(tmp_path), f"--config={config}")
    assert message.startswith("error: dirpath of ModelCheckpoint: the output folder")
    assert "a_file' is a file" in message


def test_evaluating_data_of_another_size_names_both_settings(fitted):
    message = cli_error(
        "test", *MODEL, *DATA, *QUIET, *logger(fitted), "--ckpt_path=last", "--data.image_size=64"
    )
    assert message == (
        "error: model.generator.image_size=32 but data.image_size=64: set both to the same value"
    )


@pytest.mark.parametrize("root", ["a_file", "a_file/run"])
def test_a_run_folder_that_is_a_file_is_called_a_file(tmp_path, root):
    """mkdir's reasons ("File exists" for the file itself, as for --trainer.default_root_dir=
    /dev/null) did not say that a file was in the way."""
    in_the_way(tmp_path)
    message = cli_error(
        "fit", *MODEL, *DATA, *QUIET, f"--trainer.default_root_dir={tmp_path / root}"
    )
    assert message == (
        f"error: the output folder '{tmp_path / root}' cannot be written ('{tmp_path / 'a_file'}' "
        "is a file, not a folder): choose another --trainer.default_root_dir"
    )


@pytest.mark.parametrize("where", ["a_file", "a_file/sub"])
def test_configs_copy_into_a_file_is_named(tmp_path, where):
    """FileExistsError / NotADirectoryError tracebacks from pathlib before."""
    in_the_way(tmp_path)
    message = cli_error("configs", "--copy", "quickstart", "--to", str(tmp_path / where))
    assert message.startswith(f"error: --to: the output folder '{tmp_path / where}' cannot be")
    assert "a_file' is a file, not a folder): choose another folder with --to" in message


# --------------------------------------------------------------- run settings
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # Lightning's own verdicts (MisconfigurationException) were tracebacks.
        (
            "--trainer.max_steps=-5",
            "error: `max_steps` must be a non-negative integer or -1 (infinite steps). You "
            "passed in -5.",
        ),
        ("--trainer.limit_val_batches=-1", "error: You have passed invalid value -1.0 for "),
        ("--trainer.devices=0", "error: `Trainer(devices='0')` value is not a valid input"),
        # A ZeroDivisionError inside Lightning's loop.
        ("--trainer.val_check_interval=0", "error: --trainer.val_check_interval=0: validate every"),
        # Named by the callbacks' parameters (num_samples, every_n_iterations) before.
        ("--val_samples=-2", "error: --val_samples=-2: pass 0 (no images) or a positive number"),
        ("--last_every_n_iterations=0", "error: --last_every_n_iterations=0: pass a number >= 1"),
    ],
    ids=lambda value: value if value.startswith("--") else "",
)
def test_run_settings_that_cannot_work_are_one_error_naming_them(tmp_path, setting, expected):
    message = cli_error("fit", *MODEL, *DATA, *QUIET, *logger(tmp_path), setting)
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("subcommand", "setting"),
    [
        ("validate", "--trainer.limit_val_batches=0"),
        ("test", "--trainer.limit_test_batches=0"),
        ("predict", "--trainer.limit_predict_batches=0.0"),
        ("fit", "--trainer.limit_test_batches=0"),
    ],
)
def test_evaluating_no_batch_is_refused(tmp_path, source_checkpoint, subcommand, setting):
    """It exited 0 having scored nothing and written no report."""
    ckpt = [] if subcommand == "fit" else [f"--ckpt_path={source_checkpoint}"]
    message = cli_error(subcommand, *MODEL, *DATA, *QUIET, *logger(tmp_path), *ckpt, setting)
    what = "the test after fit" if subcommand == "fit" else subcommand
    assert message.startswith(f"error: {setting.partition('=')[0]}=0"), message
    assert f": {what} would score no image and write no report; leave it out, or" in message
    assert ("--test_after_fit=false" in message) == (subcommand == "fit")


def test_evaluating_an_empty_split_is_an_error(tmp_path, source_checkpoint):
    """validate on data without a validation split exited 0 having scored nothing; test on data
    without a test set was a RuntimeError traceback (with a good message)."""
    options = [*MODEL, *DATA, *QUIET, *logger(tmp_path), f"--ckpt_path={source_checkpoint}"]
    message = cli_error("validate", *options, "--data.split.val_fraction=0")
    assert message.startswith(
        "error: validate scored no image: SyntheticCXRDataModule has no val batches; give it a "
        "val split"
    ), message
    message = cli_error("test", *options, "--data.num_test=0")
    assert message.startswith("error: SyntheticCXRDataModule has no test set: add labelled")


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    """jsonargparse read it with a UnicodeDecodeError traceback that named no file."""
    config = tmp_path / "run.yaml"
    config.write_bytes("model:\n  init_args: {base_channels: 4}  # réglage\n".encode("latin-1"))
    message = cli_error("fit", f"--config={config}", *MODEL, *DATA, *QUIET, *logger(tmp_path))
    assert message.startswith(f"error: --config '{config}' is not UTF-8 text (byte 0xe9 at "), (
        message
    )
    assert message.endswith("a config is a YAML file; save it as UTF-8")


# --------------------------------------------------------------- optimizer settings
@pytest.mark.parametrize(
    ("setting", "init_args", "expected"),
    [
        ("optimizer_g", "{lr: -0.001}", r"model\.optimizer_g: Invalid learning rate: -0\.001"),
        ("optimizer_d", "{betas: [1.5, 0.9]}", r"model\.optimizer_d: Invalid beta parameter"),
    ],
)
def test_optimizer_arguments_torch_refuses_name_the_setting(tmp_path, setting, init_args, expected):
    config = tmp_path / "optimizer.yaml"
    config.write_text(
        f"model:\n  init_args:\n    {setting}:\n      class_path: torch.optim.Adam\n"
        f"      init_args: {init_args}\n"
    )
    message = cli_error(
        "fit",
        *MODEL,
        f"--config={config}",
        *DATA,
        *QUIET,
        *logger(tmp_path),
        "--model.max_iterations=2",
    )
    assert re.search(expected, message), message
    assert f"model.init_args.{setting}" in message


# --------------------------------------------------------------- export targets
def test_export_target_in_a_file_or_a_folder_is_named(tmp_path, source_checkpoint):
    blocker = in_the_way(tmp_path)
    message = cli_error("export", f"--ckpt_path={source_checkpoint}", f"--output={blocker}/s.pt")
    assert message.startswith(f"error: export target '{blocker}/s.pt': its folder cannot be")
    message = cli_error("export", f"--ckpt_path={source_checkpoint}", f"--output={tmp_path}")
    assert message.startswith(f"error: export target '{tmp_path}' is a folder")


FULL_DISK = """
import resource, signal, sys
# The file size limit makes every write past it fail as a full disk would (EFBIG).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
from sagan_ad.cli import main
main(sys.argv[1:])
"""


def on_a_full_disk(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def test_an_onnx_target_is_recognised_in_any_case(tmp_path, source_checkpoint):
    """scorer.ONNX was written as TorchScript (a zip archive), to fail only in ONNX Runtime."""
    main(["export", f"--ckpt_path={source_checkpoint}", f"--output={tmp_path / 'scorer.ONNX'}"])
    assert not zipfile.is_zipfile(tmp_path / "scorer.ONNX")
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(str(tmp_path / "scorer.ONNX"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_an_export_target_that_cannot_be_created_is_not_called_a_full_disk(source_checkpoint):
    message = cli_error("export", f"--ckpt_path={source_checkpoint}", "--output=/proc/scorer.pt")
    assert message.startswith("error: cannot write the exported scorer to '/proc/scorer.pt' (")
    assert "choose another output path, in a folder you can write" in message
    assert "free some space" not in message


@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_FSIZE (Linux)")
@pytest.mark.parametrize("output", ["scorer.onnx", "scorer.pt"])
def test_a_real_full_disk_during_export_is_an_error_message(tmp_path, source_checkpoint, output):
    result = on_a_full_disk(
        "export", f"--ckpt_path={source_checkpoint}", f"--output={tmp_path}/{output}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: cannot write the exported scorer to '{tmp_path}/{output}' (File too large)" in (
        result.stderr
    )
    assert "free some space or choose another output path" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_FSIZE (Linux)")
def test_a_full_disk_while_checkpointing_is_an_error_message(tmp_path):
    result = on_a_full_disk(
        "fit",
        *MODEL,
        *DATA,
        *QUIET,
        *logger(tmp_path),
        "--model.max_iterations=2",
        "--trainer.val_check_interval=2",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: cannot write checkpoint '" in result.stderr
    assert "is the disk full or the folder not writable?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.ckpt*"))


def test_an_export_batch_size_below_one_is_refused(tmp_path, source_checkpoint):
    message = cli_error(
        "export", f"--ckpt_path={source_checkpoint}", f"--output={tmp_path}/s.pt", "--batch_size=0"
    )
    assert message == "error: batch_size=0: must be >= 1"


def test_missing_onnx_extras_are_named(tmp_path, source_checkpoint, monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript")

    monkeypatch.setattr(torch.onnx, "export", missing)
    message = cli_error("export", f"--ckpt_path={source_checkpoint}", f"--output={tmp_path}/s.onnx")
    assert "ONNX export needs the export extra (onnxscript is missing)" in message
    assert "pip install 'sagan-ad[export]'" in message


def test_a_wandb_error_is_one_error_line_with_what_to_do(monkeypatch, capsys):
    """A run logged to W&B without an API key stopped with wandb's traceback."""

    class UsageError(Exception):
        pass

    # What wandb raises from wandb.errors when no API key is configured (wandb is optional).
    UsageError.__module__ = "wandb.errors.errors"
    monkeypatch.delenv("SAGAN_AD_DEBUG", raising=False)

    def no_key(args):
        raise UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(cli_module, "_main", no_key)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", "quickstart"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: W&B: No API key configured.")
    assert "WANDB_MODE=offline" in err and "--trainer.logger" in err
