"""End-to-end command-line runs at tiny size, and the shipped example configs."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    NIH_ROOT,
    PEDIATRIC_ROOT,
    TINY_DATA_ARGS,
    requires_nih,
    requires_pediatric,
)

from sagan_ad import Scorer
from sagan_ad.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = [
    "--model=sagan_ad.SAGAN",
    "--model.generator.image_size=32",
    "--model.generator.base_channels=4",
    "--model.generator.num_res_blocks=1",
    "--model.critic.base_channels=4",
    "--model.critic.num_downsamples=5",
    "--model.max_iterations=4",
    *TINY_DATA_ARGS,
    "--trainer.val_check_interval=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
]


def tiny_run(tmp_path: Path, *extra: str, subcommand: str = "fit") -> None:
    main([subcommand, *TINY, f"--trainer.default_root_dir={tmp_path}", *extra])


def metrics_rows(tmp_path: Path) -> list[dict[str, str]]:
    files = sorted(tmp_path.glob("*/version_*/metrics.csv"))
    assert files, "the CSV logger wrote no metrics"
    with files[-1].open() as f:
        return list(csv.DictReader(f))


def logger_args(tmp_path: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
    ]


def test_fit_trains_validates_checkpoints_and_tests(tmp_path):
    tiny_run(tmp_path, *logger_args(tmp_path))
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("best-iteration=") for name in checkpoints)
    rows = metrics_rows(tmp_path)
    # Losses and validation are logged against the iteration, and fit ended with a test.
    steps = [int(r["step"]) for r in rows if r.get("val/AUROC")]
    assert steps == [2, 4]
    assert any(r.get("test/AUROC") for r in rows)
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=False)["sagan_iteration"] == 4


def test_rerun_into_the_same_directory_does_not_fail_on_the_saved_config(tmp_path):
    tiny_run(tmp_path, "--test_after_fit=false")
    tiny_run(tmp_path, "--test_after_fit=false")
    assert len(list(tmp_path.rglob("config.yaml"))) >= 1


def test_test_and_predict_from_a_checkpoint(tmp_path, capsys):
    tiny_run(tmp_path, "--test_after_fit=false")
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    capsys.readouterr()
    tiny_run(tmp_path, f"--ckpt_path={checkpoint}", subcommand="test")
    out = capsys.readouterr().out
    assert "test/AUROC" in out and "test/AP" in out
    tiny_run(tmp_path, f"--ckpt_path={checkpoint}", subcommand="predict")


def test_misspelled_key_is_reported_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        tiny_run(tmp_path, "--model.base_chanels=8")
    assert info.value.code != 0
    assert "base_chanels" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config",
    [
        "quickstart.yaml",
        "nih_cpu.yaml",
        "pediatric_cpu.yaml",
        "nih_gpu.yaml",
        "medad_rsna.yaml",
        "medad_vindr.yaml",
        "medad_lag.yaml",
        "multi_gpu.yaml",
    ],
)
def test_example_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", f"--config={EXAMPLES / config}", "--print_config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: sagan_ad.SAGAN" in printed


def test_wandb_logger_config_composes_with_a_main_config(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                f"--config={EXAMPLES / 'quickstart.yaml'}",
                f"--config={EXAMPLES / 'logger_wandb.yaml'}",
                "--print_config",
            ]
        )
    assert "WandbLogger" in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run(
        [Path(sys.executable).parent / "sagan-ad", "fit", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--model" in result.stdout and "--test_after_fit" in result.stdout


def test_subclassing_example_trains_and_tests():
    spec = importlib.util.spec_from_file_location("subclass_sagan", EXAMPLES / "subclass_sagan.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.run(max_iterations=4, num_known_normal=16)
    assert 0.0 <= metrics["test/AUROC"] <= 1.0
    model = example.lesion_focused_sagan(image_size=32, base_channels=4)
    assert isinstance(model.loss, example.MaskWeightedLoss) and isinstance(model.scorer, Scorer)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    # Scorer(top_fraction=0.05): the mean of the ceil(0.05 * 1024) = 52 largest map values.
    top = model.anomaly_map(x).flatten(1).topk(52, dim=1).values.mean(dim=1)
    assert torch.allclose(model.score(x), top)
    masks = torch.zeros(1, 1, 2, 2)
    masks[..., 0, 0] = 1
    restoration = model.loss.restoration(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), masks)
    assert restoration.item() == (1 + 4.0 + 3) / 4  # the masked pixel counts 1 + mask_weight times


@requires_nih
def test_nih_config_runs_on_real_chest_xrays(tmp_path):
    main(
        [
            "fit",
            f"--config={EXAMPLES / 'nih_cpu.yaml'}",
            f"--data.root={NIH_ROOT}",
            "--model.max_iterations=2",
            "--trainer.val_check_interval=2",
            f"--trainer.default_root_dir={tmp_path}",
            *logger_args(tmp_path),
        ]
    )
    rows = metrics_rows(tmp_path)
    test_row = next(r for r in rows if r.get("test/AUROC"))
    assert 0.0 <= float(test_row["test/AUROC"]) <= 1.0


@requires_pediatric
def test_pediatric_config_runs_and_reports_the_acquisition_audit(tmp_path):
    main(
        [
            "fit",
            "--config=pediatric_cpu",
            f"--data.root={PEDIATRIC_ROOT}",
            "--model.max_iterations=2",
            "--trainer.val_check_interval=2",
            f"--trainer.default_root_dir={tmp_path}",
            *logger_args(tmp_path),
        ]
    )
    rows = metrics_rows(tmp_path)
    test_row = next(r for r in rows if r.get("test/AUROC"))
    # The dev test's trivial statistics (docs/results.md): sharpness alone scores 0.92, and
    # the matched subset's 34 pairs take it away.
    assert float(test_row["test/audit/AUROC_sharpness_vertical"]) == pytest.approx(0.921, abs=0.01)
    assert float(test_row["test/matched/pairs"]) == 34
    assert abs(float(test_row["test/matched/AUROC_sharpness_vertical"]) - 0.5) < 0.1
    saved = json.loads(next(tmp_path.glob("*/version_*/test/metrics.json")).read_text())
    assert saved["audit"]["best_trivial"] == "sharpness_vertical"
    assert (next(tmp_path.glob("*/version_*/test")) / "matched_data.json").is_file()


def test_each_network_gets_its_optimizer_and_scheduler_from_yaml(tmp_path):
    config = tmp_path / "optimizers.yaml"
    config.write_text(
        "model:\n"
        "  init_args:\n"
        "    optimizer_g:\n"
        "      class_path: torch.optim.Adam\n"
        "      init_args: {lr: 0.0001, betas: [0.5, 0.999]}\n"
        "    optimizer_d:\n"
        "      class_path: torch.optim.RMSprop\n"
        "      init_args: {lr: 0.0003}\n"
        "    scheduler_g:\n"
        "      class_path: torch.optim.lr_scheduler.StepLR\n"
        "      init_args: {step_size: 1, gamma: 0.5}\n"
    )
    tiny_run(tmp_path, f"--config={config}", "--test_after_fit=false")
    state = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    generator, critic = state["optimizer_states"]
    # 4 iterations = 4 critic steps and 2 generator steps (n_critic=2): the generator lr is
    # halved twice, the critic lr (no scheduler) stays.
    assert generator["param_groups"][0]["lr"] == pytest.approx(1e-4 / 2**2)
    assert generator["param_groups"][0]["betas"] == (0.5, 0.999)
    assert critic["param_groups"][0]["lr"] == pytest.approx(3e-4)
    assert "alpha" in critic["param_groups"][0]  # RMSprop's, so the class came from the YAML
