"""The acquisition audit and the matched subset: a sharpness meter is flagged and a lesion
detector is not; the matched subset is deterministic, the largest within the tolerance, honours
it, says when it is too small, and round-trips as a data.json."""

from __future__ import annotations

import itertools
import json
import math

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from conftest import tiny_networks, tiny_trainer, write_medad_tree

from sagan_ad import (
    SAGAN,
    EvaluationWriter,
    Evaluator,
    MedADDataModule,
    Scorer,
    build_report,
)
from sagan_ad.evaluation.audit import best_trivial
from sagan_ad.evaluation.matching import (
    MatchedSubset,
    MatchingSettings,
    match_pairs,
    matched_metrics,
)
from sagan_ad.image_statistics import STATISTICS, image_statistics


def film_set(blurred: list[bool], spots: list[bool], seed: int) -> torch.Tensor:
    """Textured 32 px films of varied brightness and contrast; a blurred one is re-scaled to its
    sharp contrast, so that only its sharpness and fine detail differ; a spot is a 3x3 square
    100 grey levels brighter."""
    rng = np.random.default_rng(seed)
    films = []
    for blur, spot in zip(blurred, spots, strict=True):
        film = rng.uniform(90, 150) + rng.normal(0, rng.uniform(15, 35), (32, 32))
        if blur:
            soft = cv2.GaussianBlur(film, (0, 0), 1.2)
            film = (soft - soft.mean()) * film.std() / soft.std() + film.mean()
        if spot:
            y, x = rng.integers(6, 22, 2)
            film[y : y + 3, x : x + 3] += 100
        films.append(np.clip(film, 0, 255).round().astype(np.uint8))
    return torch.from_numpy(np.stack(films))[:, None]


def sharpness_meter(images: torch.Tensor) -> torch.Tensor:
    """Blurrier = more abnormal: minus the mean absolute vertical difference."""
    x = images.float()
    return -(x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)


def spot_detector(images: torch.Tensor) -> torch.Tensor:
    """The brightest 3x3 patch above the film's mean."""
    x = images.float()
    patches = torch.nn.functional.avg_pool2d(x, 3, stride=1)
    return patches.flatten(1).max(1).values - x.flatten(1).mean(1)


def report_of(scores: torch.Tensor, images: torch.Tensor, labels: list[int], **settings):
    evaluator = Evaluator(bootstrap_resamples=0, **settings)
    batch = {
        "label": torch.tensor(labels),
        "index": torch.arange(len(labels)),
        "name": [f"f{i}.png" for i in range(len(labels))],
        "statistics": image_statistics(images),
    }
    evaluator.update("test", batch, scores, torch.zeros(len(labels), 1, 4, 4))
    # A threshold, as after validation: without one the report also says that it has none.
    return evaluator.report("test", threshold=0.5)


# Normal films sharp, abnormal films blurred and nothing else (the pediatric set's shortcut).
BLURRED_ABNORMALS = film_set([False] * 40 + [True] * 40, [False] * 80, seed=0)
# The spot is the finding; sharpness only partly follows the label (a quarter of the normals and
# three quarters of the abnormals are blurred): a spot detector beats it, a sharpness meter not.
MIXED = film_set(
    [i % 4 == 0 for i in range(80)] + [i % 4 != 0 for i in range(80)],
    [False] * 80 + [True] * 80,
    seed=1,
)


def test_a_sharpness_meter_is_flagged_where_brightness_and_contrast_say_nothing():
    labels = [0] * 40 + [1] * 40
    report = report_of(sharpness_meter(BLURRED_ABNORMALS), BLURRED_ABNORMALS, labels)
    metrics = report.metrics
    assert metrics["AUROC"] == 1.0
    # What the audit knew before (mean and contrast) would not have caught it.
    assert metrics["audit/AUROC_mean_intensity"] < 0.7
    assert metrics["audit/AUROC_contrast"] < 0.7
    name, value = best_trivial(metrics)
    assert name in ("sharpness_vertical", "sharpness_horizontal", "high_frequency")
    assert value == metrics["audit/AUROC_best_trivial"] == 1.0
    assert metrics[f"audit/{name}_direction"] == -1.0
    assert metrics["audit/flag_below_trivial"] == 1.0
    assert metrics["audit/shortcut_warning"] == 1.0
    [warning] = report.warnings
    assert "(blurrier = abnormal)" in warning or "less fine detail" in warning
    # Every statistic is reported with its direction.
    for statistic in STATISTICS:
        assert 0.5 <= metrics[f"audit/AUROC_{statistic}"] <= 1.0
        assert metrics[f"audit/{statistic}_direction"] in (-1.0, 1.0)


def test_a_lesion_detector_on_the_same_kind_of_films_is_not_flagged_and_keeps_its_auroc_matched():
    labels = [0] * 80 + [1] * 80
    wide = {"tolerance": 0.75}
    detector = report_of(spot_detector(MIXED), MIXED, labels, matched_subset=wide)
    meter = report_of(sharpness_meter(MIXED), MIXED, labels, matched_subset=wide)
    assert 0.6 < detector.metrics["audit/AUROC_best_trivial"] < 0.9
    assert detector.metrics["AUROC"] > 0.95
    assert detector.metrics["audit/shortcut_warning"] == 0.0 and detector.warnings == []
    assert meter.metrics["audit/flag_below_trivial"] == 1.0
    # On the matched subset the sharpness cue is gone: the meter falls to about chance, the
    # detector keeps its AUROC.
    assert detector.metrics["matched/pairs"] >= 20
    assert detector.metrics["matched/AUROC"] > 0.9
    assert abs(meter.metrics["matched/AUROC"] - 0.5) < 0.2
    for statistic in STATISTICS:
        assert abs(detector.metrics[f"matched/AUROC_{statistic}"] - 0.5) < 0.2, statistic


def test_a_metadata_column_is_a_trivial_shortcut_too():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    site = ["A", "A", "A", "B", "B", "B", "B", "B"]
    stats = torch.full((8, 6), 0.5)
    report = build_report(
        "test",
        torch.tensor([0.1, 0.5, 0.3, 0.6, 0.4, 0.7, 0.2, 0.9]),
        labels,
        list("abcdefgh"),
        [{"site": s} for s in site],
        bootstrap_resamples=0,
        statistics=stats,
        threshold=0.5,
    )
    assert report.metrics["audit/AUROC_metadata/site"] == pytest.approx(0.875)
    assert best_trivial(report.metrics) == ("metadata/site", pytest.approx(0.875))
    assert any("metadata column 'site'" in warning for warning in report.warnings)


def brute_force_pairs(distance: np.ndarray, tolerance: float) -> int:
    """The size of the largest matching within ``tolerance``, by trying every assignment."""
    rows, cols = distance.shape
    best = 0
    for perm in itertools.permutations(range(cols), min(rows, cols)):
        best = max(best, sum(distance[r, c] <= tolerance for r, c in enumerate(perm)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_matching_is_the_largest_within_the_tolerance_and_honours_it(seed):
    generator = torch.Generator().manual_seed(seed)
    stats = torch.rand(11, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([1] * 5 + [0] * 6)
    tolerance = 0.6
    subset = match_pairs(stats, labels, tolerance)
    z = (stats - stats.mean(0)) / stats.std(0, unbiased=False)
    gaps = (z[subset.abnormal] - z[subset.normal]).abs()
    assert bool((gaps <= tolerance).all())
    assert len(set(subset.normal.tolist())) == subset.pairs
    assert (labels[subset.abnormal] == 1).all() and (labels[subset.normal] == 0).all()
    distance = (z[:5, None, :] - z[None, 5:, :]).abs().amax(-1).numpy()
    assert subset.pairs == brute_force_pairs(distance, tolerance)


def test_the_matching_is_deterministic_and_ignores_the_order_of_the_columns():
    generator = torch.Generator().manual_seed(0)
    stats = torch.rand(120, 6, generator=generator)
    labels = (torch.arange(120) % 3 == 0).long()
    first = match_pairs(stats, labels, 0.5)
    again = match_pairs(stats.clone(), labels.clone(), 0.5)
    shuffled = match_pairs(stats[:, [5, 3, 1, 0, 2, 4]], labels, 0.5)
    assert torch.equal(first.abnormal, again.abnormal) and torch.equal(first.normal, again.normal)
    assert shuffled.pairs == first.pairs
    assert first.abnormal.tolist() == sorted(first.abnormal.tolist())


def test_pairs_share_the_named_metadata_columns():
    stats = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    labels = torch.tensor([1, 0, 1, 0])
    view = ["AP", "PA", "PA", "AP"]
    free = match_pairs(stats, labels, 0.1)
    assert free.pairs == 2
    same_view = match_pairs(stats, labels, 0.1, {"view": view})
    assert same_view.pairs == 0


def test_too_small_a_subset_gives_a_note_instead_of_a_number():
    generator = torch.Generator().manual_seed(0)
    stats = torch.rand(30, 6, generator=generator)
    labels = (torch.arange(30) % 2).long()
    metrics, subset, note = matched_metrics(torch.rand(30), labels, stats, MatchingSettings())
    assert subset.pairs < 20
    assert metrics["matched/too_small"] == 1.0 and metrics["matched/pairs"] == subset.pairs
    assert all(math.isnan(v) for k, v in metrics.items() if "AUROC" in k)
    assert note.startswith(f"matched subset: only {subset.pairs} abnormal/normal pairs")
    assert "at least 20 are needed" in note
    report = build_report(
        "test", torch.rand(30), labels, [str(i) for i in range(30)], bootstrap_resamples=0,
        statistics=stats, matching=MatchingSettings(),
    )  # fmt: skip
    assert report.notes == [f"test: {note}"]
    assert math.isnan(report.metrics["matched/AUROC"])


def test_matching_settings_are_checked():
    assert MatchingSettings.parse(None) == MatchingSettings()
    assert MatchingSettings.parse({"columns": ["view"]}).columns == ("view",)
    with pytest.raises(ValueError, match=r"matched_subset\.tolerance=0: must be a number > 0"):
        MatchingSettings(tolerance=0)
    with pytest.raises(ValueError, match=r"matched_subset\.min_pairs=1: must be a whole >= 2"):
        MatchingSettings(min_pairs=1)
    with pytest.raises(ValueError, match=r"matched_subset\.columns='view': must be a list"):
        MatchingSettings(columns="view")
    with pytest.raises(ValueError, match=r"unknown field\(s\) tolerence: .*did you mean tolerance"):
        MatchingSettings.parse({"tolerence": 0.3})
    with pytest.raises(ValueError, match=r"matched_subset\.min_pairs"):
        Evaluator(matched_subset={"min_pairs": 0})


def test_a_column_the_images_do_not_have_is_a_note_not_a_silent_match():
    stats = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    labels = (torch.arange(40) % 2).long()
    metrics, subset, note = matched_metrics(
        torch.rand(40), labels, stats, MatchingSettings(columns=("view",))
    )
    assert subset.pairs == 0 and math.isnan(metrics["matched/AUROC"])
    assert "no metadata column 'view'" in note


def test_the_subset_as_a_data_json():
    pairs = MatchedSubset(torch.tensor([3, 1]), torch.tensor([0, 2]))
    assert pairs.indices.tolist() == [0, 1, 2, 3]
    assert pairs.split(["n0", "a1", "n2", "a3"]) == {"test": {"0": ["n0", "n2"], "1": ["a1", "a3"]}}


class BrightnessScorer(Scorer):
    """Maps brightness; the score is its mean (the abnormal films of `write_medad_tree` are
    brighter)."""

    def anomaly_map(self, images: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        return (images.mean(1, keepdim=True) + 1) / 2


class Brightness(SAGAN):
    """Scores brightness (`BrightnessScorer`)."""

    def __init__(self, scorer: Scorer | None = None, **kwargs) -> None:
        super().__init__(scorer=scorer if scorer is not None else BrightnessScorer(), **kwargs)


def test_a_test_writes_the_matched_subset_and_a_datamodule_tests_on_it(tmp_path):
    # Abnormal films a little brighter on average than normals, with overlap: some pairs match.
    root = write_medad_tree(
        tmp_path / "medad", {"known": 12, "pool0": 6, "pool1": 8, "test0": 30, "test1": 30}
    )
    L.seed_everything(0)
    model = Brightness(
        **tiny_networks(),
        max_iterations=2,
        evaluator=Evaluator(bootstrap_resamples=0, matched_subset={"tolerance": 3.0}),
    )
    data = MedADDataModule(root, image_size=32, batch_size=4, split={"val_fraction": 0.25})
    trainer = tiny_trainer(tmp_path, callbacks=[EvaluationWriter(tmp_path / "out")])
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    saved = json.loads((tmp_path / "out" / "test" / "metrics.json").read_text())
    pairs = saved["metrics"]["matched/pairs"]
    assert pairs >= 20 and saved["audit"]["matched_pairs"] == pairs
    assert saved["audit"]["best_trivial"] == "mean_intensity"
    written = json.loads((tmp_path / "out" / "test" / "matched_data.json").read_text())
    original = json.loads((root / "data.json").read_text())
    assert written["train"] == original["train"]
    assert len(written["test"]["0"]) == len(written["test"]["1"]) == pairs
    assert set(written["test"]["1"]) <= set(original["test"]["1"])
    again = MedADDataModule(
        root,
        image_size=32,
        split={"val_fraction": 0.25, "file": tmp_path / "out" / "test" / "matched_data.json"},
    )
    again.setup()
    assert sorted(again.test.names) == sorted(written["test"]["0"] + written["test"]["1"])
    assert again.split_manifest()["source"].startswith(f"read from {tmp_path / 'out'}")
