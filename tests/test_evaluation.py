"""Evaluation inside the LightningModule: thresholds in fit, subgroups, boxes, pixel metrics."""

from __future__ import annotations

import csv
import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import tiny_networks, tiny_trainer

from sagan_ad import (
    SAGAN,
    EvaluationWriter,
    Evaluator,
    Scorer,
    SyntheticCXRDataModule,
    build_report,
)
from sagan_ad.data import ImageSet, SplitData


class AnnotatedPhantoms(SyntheticCXRDataModule):
    """Phantoms whose test images carry a view column, original sizes and boxes."""

    def load(self) -> SplitData:
        data = super().load()
        test = data.test
        n = len(test)
        test.metadata = [{"view": "AP" if i % 2 else "PA"} for i in range(n)]
        test.original_sizes = [(64, 64)] * n
        # Abnormal images get one box covering the whole right half, normals none.
        test.boxes = [
            np.array([[32.0, 0.0, 64.0, 64.0]]) if label else np.zeros((0, 4))
            for label in test.labels
        ]
        return data


class NormalOnlyValidation(SyntheticCXRDataModule):
    """A labelled validation set without any abnormal image."""

    def load(self) -> SplitData:
        data = super().load()
        normals = data.known_normal.subset(np.arange(4))
        data.known_normal = data.known_normal.subset(np.arange(4, len(data.known_normal)))
        data.val = ImageSet(normals.images, normals.labels, normals.names)
        return data


def quick_trainer(tmp_path, **kwargs) -> L.Trainer:
    return tiny_trainer(tmp_path, **{"enable_checkpointing": False, **kwargs})


def phantoms(cls=SyntheticCXRDataModule, **kwargs):
    options = {"num_known_normal": 16, "num_test": 8, "image_size": 32, "batch_size": 4}
    return cls(**{**options, **kwargs})


def test_validation_logs_the_metric_suite_pixel_metrics_and_chooses_a_threshold(tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=20), max_iterations=2)
    trainer = quick_trainer(tmp_path)
    trainer.fit(model, phantoms(split={"val_fraction": 0.25}))
    logged = trainer.callback_metrics
    for key in (
        "val/AUROC",
        "val/AUROC_CI_low",
        "val/AP",
        "val/F1_max",
        "val/sensitivity@specificity=0.95",
        "val/specificity@sensitivity=0.90",
        "val/threshold",
        "val/sensitivity@threshold",
        # The pseudo-anomaly validation set knows its masks: localization is measured.
        "val/pixel_AUROC",
        "val/AUPRO",
    ):
        assert key in logged, key
    assert 0.0 <= float(logged["val/pixel_AUROC"]) <= 1.0
    report = model.reports["val"]
    scores, labels = report.scores, report.labels
    assert len(scores) == 8 and int(labels.sum()) == 4
    assert float(model.threshold) == float(logged["val/threshold"])
    assert float(model.threshold) in scores.tolist()  # an ROC threshold is a validation score


def test_percentile_policy_works_when_validation_has_no_anomalies(tmp_path):
    L.seed_everything(0)
    model = SAGAN(
        **tiny_networks(), evaluator=Evaluator(threshold_policy="percentile"), max_iterations=2
    )
    trainer = quick_trainer(tmp_path)
    with pytest.warns(UserWarning, match="no abnormal"):
        trainer.fit(model, phantoms(NormalOnlyValidation))
    normal_scores = model.reports["val"].scores
    assert float(model.threshold) == pytest.approx(float(torch.quantile(normal_scores, 0.95)))
    assert math.isnan(float(trainer.callback_metrics["val/AUROC"]))


def test_curve_policy_on_validation_without_anomalies_fails_with_a_clear_error(tmp_path):
    model = SAGAN(
        **tiny_networks(), evaluator=Evaluator(threshold_policy="youden"), max_iterations=2
    )
    with pytest.raises(ValueError, match="use policy 'percentile'"):
        quick_trainer(tmp_path).fit(model, phantoms(NormalOnlyValidation))


def test_test_reports_subgroups_pointing_game_and_metadata_columns(tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=2)
    model.threshold.fill_(0.01)
    model.allow_untrained = True  # the report's structure is tested, not the weights
    trainer = quick_trainer(tmp_path, callbacks=[EvaluationWriter(dirpath=tmp_path / "out")])
    results = trainer.test(model, phantoms(AnnotatedPhantoms), verbose=False)[0]
    for key in ("test/AUROC/view=AP", "test/AUROC/view=PA", "test/AP/view=AP"):
        assert 0.0 <= results[key] <= 1.0
    assert 0.0 <= results["test/pointing_game"] <= 1.0
    # Each view holds 2 normals and 2 abnormals of the 8 test images.
    assert results["test/num_abnormal/view=AP"] == 2.0
    with (tmp_path / "out" / "test" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["view"] for r in rows} == {"AP", "PA"}
    assert all(float(r["threshold"]) == pytest.approx(0.01) for r in rows)


def test_pointing_game_counts_peaks_inside_boxes(tmp_path):
    class RightHalfMap(Scorer):
        """A map that always peaks in the right half of the image."""

        def anomaly_map(self, images: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
            maps = torch.zeros(images.shape[0], 1, *images.shape[-2:], device=images.device)
            maps[..., 5, 25] = 1.0
            return maps

    model = SAGAN(**tiny_networks(), scorer=RightHalfMap())
    model.allow_untrained = True  # its map ignores the weights
    trainer = quick_trainer(tmp_path)
    results = trainer.test(model, phantoms(AnnotatedPhantoms), verbose=False)[0]
    assert results["test/pointing_game"] == 1.0


def test_old_checkpoints_without_a_threshold_still_load(tmp_path):
    model = SAGAN(**tiny_networks())
    trainer = quick_trainer(tmp_path)
    trainer.strategy.connect(model)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["threshold"]
    torch.save(checkpoint, path)
    restored = SAGAN.load_from_checkpoint(path)
    assert math.isnan(float(restored.threshold))


def subgroup_columns_of(metrics: dict[str, float]) -> set[str]:
    return {key.split("/", 1)[1].split("=")[0] for key in metrics if key.startswith("AUROC/")}


def test_per_image_values_never_make_subgroups():
    # LAG: an attention-map path for most images made one "subgroup" per image.
    n = 40
    metadata = [
        {"attention_map": f"/data/LAG/suspicious_glaucoma/attention/{i}.jpg"} if i % 5 else {}
        for i in range(n)
    ]
    report = build_report(
        "test",
        torch.rand(n),
        torch.tensor([0, 1] * (n // 2)),
        [str(i) for i in range(n)],
        metadata,
        bootstrap_resamples=0,
    )
    assert subgroup_columns_of(report.metrics) == set()
    # The values still reach the per-image table.
    assert report.rows[1]["attention_map"].endswith("/1.jpg")


def test_rsna_like_metadata_keeps_view_sex_and_binned_age_but_never_the_label():
    rng = np.random.default_rng(0)
    n = 60
    labels = torch.tensor([i % 2 for i in range(n)])
    metadata = [
        {
            "class": "Lung Opacity" if labels[i] else "Normal",
            "ViewPosition": "AP" if rng.random() < 0.5 else "PA",
            "PatientSex": "F" if rng.random() < 0.5 else "M",
            "PatientAge": f"{int(rng.integers(18, 90)):03d}Y",
            "PatientID": f"p{i}",
        }
        for i in range(n)
    ]
    report = build_report(
        "test", torch.rand(n), labels, [str(i) for i in range(n)], metadata, bootstrap_resamples=0
    )
    assert subgroup_columns_of(report.metrics) == {"ViewPosition", "PatientSex", "PatientAge"}
    ages = {key.split("=", 1)[1] for key in report.metrics if key.startswith("AUROC/PatientAge")}
    assert ages <= {"[0,20)", "[20,40)", "[40,60)", "[60,80)", "[80,100)"} and len(ages) >= 3
    # Twenty metrics per group: the whole report stays small however many images there are.
    assert len(report.metrics) < 200


def test_subgroup_columns_are_configurable():
    metadata = [{"site": f"s{i}", "view": "AP" if i % 2 else "PA", "note": ""} for i in range(12)]
    report = build_report(
        "test",
        torch.rand(12),
        torch.tensor([0, 1] * 6),
        list("abcdefghijkl"),
        metadata,
        bootstrap_resamples=0,
        subgroup_columns=["site", "scanner"],
    )
    # Asked for: used even with one value per image; a column nobody has is one "missing" group.
    assert subgroup_columns_of(report.metrics) == {"site", "scanner"}
    assert report.metrics["num_normal/scanner=missing"] == 6.0
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(subgroup_columns=["view"]))
    assert model.evaluator.subgroup_columns == ["view"]
