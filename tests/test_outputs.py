"""End to end: a tiny fit, then `sagan-ad test`, `predict` and `export`, and the files written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_DATA_ARGS
from PIL import Image

from sagan_ad import SAGAN
from sagan_ad.cli import main

MODEL = [
    "--model=sagan_ad.SAGAN",
    "--model.generator.image_size=32",
    "--model.generator.base_channels=4",
    "--model.generator.num_res_blocks=1",
    "--model.critic.base_channels=4",
    "--model.critic.num_downsamples=5",
    "--model.max_iterations=2",
    "--model.evaluator.bootstrap_resamples=50",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
]
DATA = TINY_DATA_ARGS


def csv_logger(root: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A checkpoint of a 2-iteration fit (validated once, so it has a threshold)."""
    root = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            *MODEL,
            *DATA,
            "--trainer.val_check_interval=2",
            f"--trainer.default_root_dir={root}",
            "--test_after_fit=false",
            "--val_samples=4",
            *csv_logger(root),
        ]
    )
    return next(root.rglob("last.ckpt"))


def test_checkpoint_loads_with_weights_only_and_carries_the_threshold(fitted):
    checkpoint = torch.load(fitted, weights_only=True)
    threshold = checkpoint["state_dict"]["threshold"]
    assert math.isfinite(float(threshold))
    hparams = checkpoint["hyper_parameters"]
    assert hparams["evaluator"]["init_args"]["threshold_policy"] == "balanced"
    assert yaml.safe_load(yaml.safe_dump(hparams)) == hparams  # plain values only
    model = SAGAN.load_from_checkpoint(fitted)
    assert float(model.threshold) == float(threshold)


def test_fit_logs_validation_samples_and_the_data_summary(fitted):
    run = fitted.parents[1]
    samples = sorted((run / "val_samples").glob("iteration_*.png"))
    assert [p.name for p in samples] == ["iteration_0000002.png"]
    grid = np.asarray(Image.open(samples[0]))
    assert grid.ndim == 3 and grid.shape[0] >= 4 * 32
    hparams = (run / "hparams.yaml").read_text()
    assert "data/train/known_normal: 12" in hparams and "data/val/abnormal: 4" in hparams


def test_test_writes_the_per_image_csv_metrics_json_and_curves(fitted, tmp_path, capsys):
    main(["test", *MODEL, *DATA, f"--ckpt_path={fitted}", *csv_logger(tmp_path)])
    out = next(tmp_path.rglob("test/metrics.json")).parent
    assert out.parent.name.startswith("version_")  # the run's log dir
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 8
    assert list(rows[0]) == ["name", "score", "label", "prediction", "threshold"]
    assert sorted(r["name"] for r in rows)[0] == "test_00000"
    threshold = float(rows[0]["threshold"])
    for row in rows:
        assert int(row["prediction"]) == int(float(row["score"]) >= threshold)
    report = json.loads((out / "metrics.json").read_text())
    assert report["checkpoint"] == str(fitted)
    assert report["threshold_policy"] == "balanced"
    metrics = report["metrics"]
    assert metrics["threshold"] == pytest.approx(threshold)
    assert metrics["AUROC_CI_low"] <= metrics["AUROC"] <= metrics["AUROC_CI_high"]
    assert metrics["num_normal"] == metrics["num_abnormal"] == 4
    for name in ("roc.png", "pr.png"):
        assert Image.open(out / name).size[0] > 100
    printed = capsys.readouterr().out
    assert "test/AUROC" in printed and "test/sensitivity@threshold" in printed


def write_folder(root: Path) -> dict[str, tuple[int, int]]:
    """PNG and JPEG files of different sizes, one in a subfolder; returns name -> (h, w)."""
    rng = np.random.default_rng(0)
    sizes = {"a.png": (40, 56), "b.jpg": (64, 48), "sub/c.jpeg": (33, 33), "d.PNG": (50, 50)}
    for name, (h, w) in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(path)
    (root / "notes.txt").write_text("not an image")
    return sizes


def test_predict_on_a_folder_writes_the_csv_and_overlays(fitted, tmp_path):
    sizes = write_folder(tmp_path / "scans")
    main(
        [
            "predict",
            *MODEL,
            "--data=sagan_ad.FolderPredictDataModule",
            f"--data.root={tmp_path / 'scans'}",
            "--data.image_size=32",
            "--data.batch_size=3",
            f"--ckpt_path={fitted}",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            *csv_logger(tmp_path / "run"),
        ]
    )
    out = next((tmp_path / "run").rglob("predict/predictions.csv")).parent
    rows = read_csv(out / "predictions.csv")
    assert [r["name"] for r in rows] == ["a.png", "b.jpg", "d.PNG", "sub/c.jpeg"]
    for row in rows:
        assert Path(row["path"]) == tmp_path / "scans" / row["name"]
        assert 0.0 <= float(row["score"]) <= 1.0
        assert int(row["prediction"]) == int(float(row["score"]) >= float(row["threshold"]))
        assert "label" not in row
        assert row["overlay"] == f"overlays/{row['name']}.png"
        overlay = Image.open(out / row["overlay"])
        h, w = sizes[row["name"]]
        # The film (small ones enlarged by a whole factor) under the text, the colour bar beside.
        factor = -(-512 // max(h, w))
        assert overlay.size[1] > h * factor and overlay.size[0] > w * factor
    overlays = out / "overlays"
    assert sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png")) == [
        "a.png.png",
        "b.jpg.png",
        "d.PNG.png",
        "sub/c.jpeg.png",
    ]


def test_export_command_writes_a_torchscript_scorer(fitted, tmp_path):
    path = tmp_path / "scorer.pt"
    main(["export", f"--ckpt_path={fitted}", f"--output={path}"])
    scorer = torch.jit.load(str(path))
    model = SAGAN.load_from_checkpoint(fitted).eval()
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    scores, maps = scorer(images)
    with torch.no_grad():
        assert (scores - model.score(images)).abs().max() <= 1e-4
        assert (maps - model.anomaly_map(images)).abs().max() <= 1e-4
