"""SAGAN from components: each is recorded in checkpoints and rebuilt from them, v0.1's flat
settings (configs, command-line flags, checkpoints) still mean the same model, and evaluation
takes everything it knows of an image from the batches."""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_networks, tiny_sagan, tiny_trainer
from lightning.pytorch.cli import instantiate_module
from torch.utils.data import DataLoader

from sagan_ad import (
    SAGAN,
    CheckpointError,
    Critic,
    Evaluator,
    Generator,
    Performance,
    SAGANLoss,
    Scorer,
    export_scorer,
    load_checkpoint,
)
from sagan_ad.cli import main
from sagan_ad.data.modules.datasets import LabelledImages, collate_evaluation
from sagan_ad.preprocessing import PREPROCESSING_KEY
from sagan_ad.training.checkpoint_upgrade import (
    FORMAT_KEY,
    FORMAT_VERSION,
    V0_1_SETTINGS,
    format_version,
    upgrade_checkpoint,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def unusual_model() -> SAGAN:
    """Every component away from its default."""
    return SAGAN(
        Generator(image_size=32, base_channels=4, num_res_blocks=1, position_encoding="none"),
        Critic(in_channels=1, base_channels=6, num_downsamples=5),
        loss=SAGANLoss(lambda_gp=5.0, lambda_identity=0.5, lambda_restoration=2.0),
        n_critic=3,
        max_iterations=7,
        scorer=Scorer(
            map_sigma=1.5,
            top_fraction=0.1,
            residual_sigma=1.0,
            border=0.1,
        ),
        evaluator=Evaluator(
            threshold_policy="percentile",
            threshold_percentile=90.0,
            bootstrap_resamples=7,
            shortcut_audit={"margin": 0.2},
            subgroup_columns=["view"],
            seed=4,
            matched_subset={"tolerance": 0.7, "columns": ["view"]},
        ),
        generator_ema=0.5,
        performance=Performance(divergence_check_interval=3),
        seed=9,
    )


def described(model: SAGAN) -> dict:
    """What a model is, component by component."""
    return {
        "generator": (type(model.generator), repr(model.generator)),
        "critic": (model.critic.in_channels, model.critic.base_channels),
        "critic_depth": model.critic.num_downsamples,
        "loss": repr(model.loss),
        "scorer": repr(model.scorer),
        "evaluator": (
            model.evaluator.threshold_policy,
            model.evaluator.threshold_percentile,
            model.evaluator.bootstrap_resamples,
            model.evaluator.audit_thresholds,
            model.evaluator.subgroup_columns,
            model.evaluator.seed,
            model.evaluator.matching,
        ),
        "performance": model.performance,
        "schedule": (model.n_critic, model.max_iterations, model.seed),
        "ema": model.generator_ema_decay,
    }


def test_the_constructor_takes_at_most_fifteen_settings():
    parameters = list(inspect.signature(SAGAN.__init__).parameters)[1:]
    assert len(parameters) <= 15, parameters


def test_every_component_is_recorded_as_plain_settings_and_rebuilt_from_them():
    model = unusual_model()
    settings = {k: v for k, v in model.hparams.items() if k != "_instantiator"}
    assert yaml.safe_load(yaml.safe_dump(settings)) == settings  # plain values only
    assert settings["scorer"]["class_path"] == "sagan_ad.Scorer"
    rebuilt = instantiate_module(SAGAN, settings)
    assert described(rebuilt) == described(model)


def test_a_checkpoint_rebuilds_the_model_with_its_components(tmp_path):
    model = unusual_model()
    torch.manual_seed(0)
    path = tmp_path / "model.ckpt"
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": "2.6.6",
        "sagan_iteration": 5,
        "sagan_model_class": "sagan_ad.SAGAN",
    }
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path)
    assert described(loaded) == described(model)
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(images), model.eval().score(images))


def test_a_component_that_cannot_be_recorded_says_so():
    class Hidden(Scorer):
        def __init__(self, gain: float = 2.0) -> None:
            super().__init__()
            self._gain = gain

    with pytest.warns(UserWarning, match=r"scorer \(.*Hidden\) cannot be recorded"):
        model = SAGAN(**tiny_networks(), scorer=Hidden())
    assert "scorer" not in model.hparams


def test_v0_1_checkpoint_settings_upgrade_to_the_components_that_mean_the_same_model():
    flat = {
        "image_size": 32,
        "base_channels": 4,
        "num_res_blocks": 1,
        "critic_downsamples": 5,
        "lambda_gp": 5.0,
        "map_sigma": 1.5,
        "score_top_fraction": 0.1,
        "threshold_policy": "percentile",
        "channels_last": False,
        "normalization": "equalize",
        "seed": 9,
        "max_iterations": 7,
    }
    checkpoint = {"hyper_parameters": dict(flat)}
    assert format_version(checkpoint) == 1
    assert upgrade_checkpoint(checkpoint)
    assert checkpoint[FORMAT_KEY] == FORMAT_VERSION
    assert checkpoint[PREPROCESSING_KEY] == {"normalization": "equalize", "decode": None}
    settings = {k: v for k, v in checkpoint["hyper_parameters"].items() if k != "_instantiator"}
    model = instantiate_module(SAGAN, settings)
    assert model.generator.image_size == 32 and model.generator.base_channels == 4
    # v0.1's rule: the critic is as wide as the generator unless critic_base_channels is set.
    assert (model.critic.base_channels, model.critic.num_downsamples) == (4, 5)
    assert model.loss.lambda_gp == 5.0 and model.scorer.top_fraction == 0.1
    assert model.evaluator.threshold_policy == "percentile"
    # The seed also seeded the AUROC bootstrap in v0.1.
    assert (model.seed, model.evaluator.seed, model.max_iterations) == (9, 9, 7)
    assert set(V0_1_SETTINGS) >= set(flat) - {"seed", "max_iterations", "normalization"}


def test_a_checkpoint_of_a_newer_or_unknown_format_is_refused_by_name(tmp_path):
    model = tiny_sagan(max_iterations=1)
    model.iteration = 1
    for recorded, reason in [
        (FORMAT_VERSION + 1, rf"has format {FORMAT_VERSION + 1}, written by a newer version"),
        ("3", r"records format '3', which no version of sagan-ad writes"),
    ]:
        checkpoint = {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "sagan_iteration": 1,
            FORMAT_KEY: recorded,
            "pytorch-lightning_version": L.__version__,
        }
        path = tmp_path / "future.ckpt"
        torch.save(checkpoint, path)
        with pytest.raises(CheckpointError, match=rf"checkpoint '.*future\.ckpt' {reason}"):
            load_checkpoint(path)


@pytest.mark.parametrize(
    "where",
    [
        ["--model.score_top_fraction=0.1"],
        ["--config", "v0_1.yaml"],
    ],
    ids=["flag", "config"],
)
def test_v0_1_flat_settings_are_refused_naming_the_setting(tmp_path, capsys, where):
    # No version of sagan-ad was published with them: they are dropped, not translated.
    old = {"model": {"class_path": "sagan_ad.SAGAN", "init_args": {"score_top_fraction": 0.1}}}
    (tmp_path / "v0_1.yaml").write_text(yaml.safe_dump(old))
    where = [str(tmp_path / w) if w.endswith(".yaml") else w for w in where]
    with pytest.raises(SystemExit) as stop:
        main(["fit", *where, *TINY_DATA_ARGS, "--print_config"])
    assert stop.value.code == 2
    assert "model.score_top_fraction is not a setting of sagan_ad.SAGAN" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_the_shipped_configs_use_the_component_settings(name):
    model = (yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()) or {}).get("model") or {}
    settings = model.get("init_args", {})
    assert not set(settings) & set(V0_1_SETTINGS), name


def test_the_tiny_command_line_model_is_the_tiny_python_model(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model=sagan_ad.SAGAN", *TINY_MODEL_ARGS, *TINY_DATA_ARGS, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    networks = tiny_networks()
    assert printed["generator"]["init_args"]["base_channels"] == networks["generator"].base_channels
    assert printed["critic"]["init_args"]["num_downsamples"] == networks["critic"].num_downsamples


def test_v0_1_module_paths_are_gone():
    # Dropped with the flat settings: every module has its one path.
    assert importlib.util.find_spec("sagan_ad.generator") is None
    assert importlib.util.find_spec("sagan_ad.checkpointing") is None


def evaluation_loader(images: torch.Tensor) -> DataLoader:
    """Evaluation batches that carry masks, boxes, sizes, metadata and statistics: no
    DataModule behind them."""
    n = len(images)
    masks = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    masks[n // 2 :, :, 8:16, 8:16] = 1
    data = LabelledImages(
        images,
        [0] * (n // 2) + [1] * (n - n // 2),
        [f"img{i}" for i in range(n)],
        statistics=torch.rand(n, 2),
        masks=masks,
        boxes=[np.array([[8.0, 8.0, 16.0, 16.0]]) for _ in range(n)],
        original_sizes=[(32, 32)] * n,
        metadata=[{"view": "AP" if i % 2 else "PA"} for i in range(n)],
    )
    return DataLoader(data, batch_size=3, collate_fn=collate_evaluation)


def test_evaluation_takes_everything_from_the_batches(tmp_path):
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    model.allow_untrained = True
    images = torch.rand(8, 1, 32, 32) * 2 - 1  # no DataModule converts uint8 here
    loader = evaluation_loader(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained network's shortcut audit, say
        tiny_trainer(tmp_path).test(model, dataloaders=loader, verbose=False)
    report = model.reports["test"]
    assert {"pixel_AUROC", "AUPRO", "pointing_game", "AUROC/view=AP"} <= set(report.metrics)
    assert any(key.startswith("audit/") for key in report.metrics)
    assert [row["name"] for row in report.rows] == [f"img{i}" for i in range(8)]
    assert report.rows[1]["view"] == "AP"


def test_evaluation_says_when_only_some_batches_carry_metadata_or_statistics():
    evaluator = Evaluator(bootstrap_resamples=0)
    maps = torch.zeros(2, 1, 4, 4)
    first = {
        "label": torch.tensor([0, 1]),
        "index": torch.tensor([0, 1]),
        "metadata": [{"view": "AP"}, {"view": "PA"}],
        "statistics": torch.rand(2, 2),
    }
    second = {"label": torch.tensor([0, 1]), "index": torch.tensor([2, 3])}
    evaluator.update("test", first, torch.tensor([0.1, 0.9]), maps)
    evaluator.update("test", second, torch.tensor([0.2, 0.8]), maps)
    with pytest.warns(UserWarning) as caught:
        report = evaluator.report("test", threshold=0.5)
    said = " ".join(str(w.message) for w in caught)
    assert "statistics came with 2 of 4" in said and "metadata came with 2 of 4" in said
    assert not any(key.startswith(("audit/", "AUROC/")) for key in report.metrics)


class TopPixelScorer(Scorer):
    """A scorer that changes the score: the single largest map value."""

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.flatten(1).amax(dim=1)


def test_a_scorer_subclass_scores_evaluation_and_is_exported_as_it_scores(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), scorer=TopPixelScorer(map_sigma=1.0), generator_ema=0.9)
    with torch.no_grad():
        model.generator_ema.head.weight.mul_(1.5)  # scoring must use the average, not G
    model.eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = model.anomaly_map(images).flatten(1).amax(dim=1)
        torch.testing.assert_close(model.score(images), expected)
        torch.testing.assert_close(model.infer(images)["score"], expected)  # what evaluation uses
    path = export_scorer(model, tmp_path / "s.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(path))
    scores, maps = session.run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(scores), expected, atol=1e-4, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.from_numpy(maps), model.anomaly_map(images), atol=1e-4, rtol=0
        )
