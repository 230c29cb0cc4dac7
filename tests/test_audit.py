"""The shortcut audit: a brightness meter is flagged, a lesion detector is not; the numbers, the
thresholds, subgroup shares, and where the audit is reported (logs, metrics.json)."""

from __future__ import annotations

import json
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
    ShortcutWarning,
    build_report,
    shortcut_audit,
)
from sagan_ad.data import AnomalyDataModule, ImageSet, SplitData, image_statistics
from sagan_ad.evaluation.audit import (
    AuditThresholds,
    group_shares,
    pearson,
    spearman,
    trivial_auroc,
)


def films(count: int, lesion: bool, brightness: tuple[float, float], seed: int) -> torch.Tensor:
    """Textured 32 px images at a random brightness and texture strength; with ``lesion`` a
    3x3 spot 90 grey levels brighter than its surroundings."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 1, 32, 32))
    for i in range(count):
        images[i, 0] = rng.uniform(*brightness) + rng.normal(0, rng.uniform(8, 30), (32, 32))
        if lesion:
            y, x = rng.integers(4, 26, 2)
            images[i, 0, y : y + 3, x : x + 3] += 90
    return torch.from_numpy(np.clip(images, 0, 255).round().astype(np.uint8))


class Films(AnomalyDataModule):
    """Abnormal films carry a spot at the normals' brightness or, with ``darker_abnormals``, are
    darker and carry no spot."""

    def __init__(self, darker_abnormals: bool, **kwargs) -> None:
        super().__init__(image_size=32, batch_size=4, split={"val_fraction": 0.0}, **kwargs)
        self.darker_abnormals = darker_abnormals

    def load(self) -> SplitData:
        abnormal_range = (40, 90) if self.darker_abnormals else (50, 150)
        normal = films(24, False, (70, 160) if self.darker_abnormals else (50, 150), 0)
        abnormal = films(24, not self.darker_abnormals, abnormal_range, 1)
        views = [{"view": "AP" if i % 2 else "PA"} for i in range(48)]
        test = ImageSet(
            torch.cat([normal, abnormal]),
            [0] * 24 + [1] * 24,
            [f"t{i}" for i in range(48)],
            metadata=views,
        )
        train = films(16, False, (40, 160), 2)
        return SplitData(
            known_normal=ImageSet(train, [0] * 16, [f"n{i}" for i in range(16)]),
            unlabeled=ImageSet(train, [-1] * 16, [f"u{i}" for i in range(16)]),
            test=test,
        )


class DarknessScorer(Scorer):
    """Maps darkness, 1 - the image in [0, 1]; the score is its mean, 1 - the film's mean."""

    def anomaly_map(self, images: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        return (1 - (images + 1) / 2).mean(1, keepdim=True)


class SpotScorer(Scorer):
    """Scores the brightest 3x3 patch above the film's mean: finds the spot whatever the film's
    brightness and texture."""

    def anomaly_map(self, images: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        return (images.mean(1, keepdim=True) + 1) / 2

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        patches = torch.nn.functional.avg_pool2d(maps, 3, stride=1)
        return patches.flatten(1).max(1).values - maps.flatten(1).mean(1)


class BrightnessMeter(SAGAN):
    """Scores darkness (`DarknessScorer`)."""

    def __init__(self, scorer: Scorer | None = None, **kwargs) -> None:
        super().__init__(scorer=scorer if scorer is not None else DarknessScorer(), **kwargs)


class SpotDetector(SAGAN):
    """Scores the brightest spot (`SpotScorer`)."""

    def __init__(self, scorer: Scorer | None = None, **kwargs) -> None:
        super().__init__(scorer=scorer if scorer is not None else SpotScorer(), **kwargs)


def audited_test(model_class, darker_abnormals: bool, tmp_path) -> tuple[dict, list]:
    L.seed_everything(0)
    model = model_class(
        **tiny_networks(), max_iterations=2, evaluator=Evaluator(bootstrap_resamples=0)
    )
    data = Films(darker_abnormals)
    trainer = tiny_trainer(tmp_path, callbacks=[EvaluationWriter(tmp_path)])
    trainer.fit(model, data)
    with pytest.warns() as caught:
        trainer.test(model, data, verbose=False)
    shortcut = [str(w.message) for w in caught if issubclass(w.category, ShortcutWarning)]
    return json.loads((tmp_path / "test" / "metrics.json").read_text()), shortcut


def test_a_brightness_meter_triggers_the_warning(tmp_path):
    saved, warned = audited_test(BrightnessMeter, darker_abnormals=True, tmp_path=tmp_path)
    metrics = saved["metrics"]
    assert metrics["AUROC"] > 0.9
    assert metrics["audit/mean_intensity_direction"] == -1.0
    assert metrics["audit/AUROC_mean_intensity"] == pytest.approx(metrics["AUROC"], abs=0.01)
    assert metrics["audit/intensity_corr_pearson"] < -0.95
    assert metrics["audit/flag_below_trivial"] == 1.0
    assert metrics["audit/flag_intensity_correlated"] == 1.0
    assert metrics["audit/shortcut_warning"] == 1.0
    # The model is never validated: the report also says it has no threshold (issue 22).
    assert saved["warnings"][0].startswith("test: no threshold (the model was never validated)")
    assert len(warned) == 2 and saved["warnings"][1:] == warned
    assert "does not beat the mean intensity (darker = abnormal)" in warned[0]
    assert warned[0].startswith("shortcut audit (test): the model's AUROC")
    assert "the score follows the mean intensity" in warned[1]


def test_a_detector_that_is_not_a_brightness_meter_passes(tmp_path):
    saved, warned = audited_test(SpotDetector, darker_abnormals=False, tmp_path=tmp_path)
    metrics = saved["metrics"]
    assert metrics["AUROC"] == 1.0
    assert metrics["audit/AUROC_best_trivial"] < 0.75
    assert abs(metrics["audit/intensity_corr_spearman"]) < 0.7
    assert metrics["audit/shortcut_warning"] == 0.0
    assert warned == [] and [w for w in saved["warnings"] if "shortcut" in w] == []
    assert saved["warnings"][0].startswith("test: no threshold (the model was never validated)")
    # The view is balanced in this test set: the shares match and no confound is reported.
    assert metrics["audit/share_normal/view=AP"] == metrics["audit/share_abnormal/view=AP"] == 0.5
    assert metrics["audit/share_gap/view"] == 0.0


def test_the_audit_runs_at_every_validation_too(tmp_path):
    L.seed_everything(0)
    model = BrightnessMeter(
        **tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=2
    )

    class WithValidation(Films):
        def load(self) -> SplitData:
            data = super().load()
            data.val = data.test
            return data

    with pytest.warns(ShortcutWarning, match=r"shortcut audit \(val\)"):
        tiny_trainer(tmp_path, enable_checkpointing=False).fit(model, WithValidation(True))
    assert model.reports["val"].metrics["audit/flag_below_trivial"] == 1.0


def test_the_audit_reads_the_decoded_statistics_not_the_normalised_images(tmp_path):
    # Equalised, every film has about the same mean: statistics of the model's input would hide
    # what the decoded films show.
    L.seed_everything(0)
    model = SpotDetector(
        **tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=2
    )
    data = Films(darker_abnormals=True, normalization="equalize")
    trainer = tiny_trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(model, data)
    with pytest.warns(ShortcutWarning):
        trainer.test(model, data, verbose=False)
    decoded = image_statistics(Films(True).load().test.images)
    metrics = model.reports["test"].metrics
    expected, _ = trivial_auroc(decoded[:, 0], torch.tensor(data.test.labels))
    assert metrics["audit/AUROC_mean_intensity"] == pytest.approx(expected)
    assert expected > 0.9


def test_thresholds_are_configurable_and_checked():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    stats = torch.tensor([[0.6, 0.1], [0.7, 0.2], [0.65, 0.3], [0.4, 0.1], [0.5, 0.2], [0.45, 0.3]])
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    strict, messages = shortcut_audit(scores, labels, stats, model_auroc=1.0)
    assert strict["audit/flag_below_trivial"] == 1.0  # 1.0 does not beat 1.0 by 0.05
    loose, _ = shortcut_audit(
        scores, labels, stats, 1.0, thresholds=AuditThresholds(margin=0.0, max_intensity_corr=1.0)
    )
    assert loose["audit/flag_below_trivial"] == 0.0 and loose["audit/shortcut_warning"] == 0.0
    assert "by the margin 0.05" in messages[0]
    with pytest.raises(ValueError, match=r"shortcut_audit\.margin=0\.7: must be in \[0, 0\.5\)"):
        AuditThresholds.parse({"margin": 0.7})
    with pytest.raises(ValueError, match=r"unknown field\(s\) corr"):
        AuditThresholds.parse({"corr": 0.5})
    model = SAGAN(
        **tiny_networks(), evaluator=Evaluator(shortcut_audit={"margin": 0.1, "max_share_gap": 0.5})
    )
    assert model.evaluator.audit_thresholds == AuditThresholds(margin=0.1, max_share_gap=0.5)


def test_a_confounded_subgroup_is_reported_with_its_shares():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    view = ["AP", "AP", "AP", "PA", "PA", "PA", "PA", "AP"]
    stats = torch.rand(8, 2, generator=torch.Generator().manual_seed(0))
    scores = torch.arange(8.0)
    metrics, messages = shortcut_audit(scores, labels, stats, 1.0, groups={"view": view})
    assert metrics["audit/share_normal/view=AP"] == 0.75
    assert metrics["audit/share_abnormal/view=AP"] == 0.25
    assert metrics["audit/share_gap/view"] == 0.5
    assert metrics["audit/flag_subgroup_confound"] == 1.0
    assert any("view (normals / abnormals: AP 75% / 25%, PA 25% / 75%)" in m for m in messages)


def test_single_class_evaluations_audit_without_flags():
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.warns(UserWarning):
        report = build_report(
            "val",
            torch.rand(4),
            labels,
            list("abcd"),
            bootstrap_resamples=0,
            statistics=torch.rand(4, 2),
        )
    assert math.isnan(report.metrics["audit/AUROC_mean_intensity"])
    assert report.metrics["audit/shortcut_warning"] == 0.0 and report.warnings == []


def test_statistics_helpers():
    labels = torch.tensor([0, 0, 1, 1])
    assert trivial_auroc(torch.tensor([1.0, 2.0, 3.0, 4.0]), labels) == (1.0, 1.0)
    assert trivial_auroc(torch.tensor([4.0, 3.0, 1.0, 2.0]), labels) == (1.0, -1.0)
    monotone = torch.tensor([1.0, 2.0, 3.0, 100.0])
    assert spearman(monotone, torch.tensor([0.0, 1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert pearson(monotone, torch.tensor([0.0, 1.0, 2.0, 3.0])) < 0.9
    # Ties get average ranks: a constant is uncorrelated (NaN, not 1).
    assert math.isnan(spearman(torch.ones(4), monotone))
    assert group_shares(["a", "b", "a", "a"], labels) == {"a": (0.5, 1.0), "b": (0.5, 0.0)}
