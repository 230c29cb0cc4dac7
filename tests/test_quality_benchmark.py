"""The quality study's own logic: intensity matching, score variants, one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import NIH_ROOT, requires_nih, write_medad_tree

from sagan_ad import SAGAN, Critic, Generator, Scorer
from sagan_ad.atomic import is_temporary

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    # The benchmark scripts import their shared helpers (harness.py) from their own folder.
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_matched_subset_pairs_same_view_within_tolerance(quality):
    statistics = torch.tensor([[0.50], [0.505], [0.70], [0.52], [0.30], [0.701], [0.31]])
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 0])
    view = ["PA", "PA", "AP", "PA", "AP", "PA", "AP"]
    # 0.1 standard deviations of these values (0.16) is 0.016: 0 pairs with 1 (same view,
    # 0.005 apart); 2 has no AP normal near 0.70 (5 is PA); 4 pairs with 6.
    keep = quality.matched_subset(statistics, labels, view, tolerance=0.1).tolist()
    assert keep == [0, 1, 4, 6]
    pairs = torch.tensor(keep)
    assert labels[pairs].sum() * 2 == len(keep)


def test_matched_subset_uses_each_normal_once(quality):
    statistics = torch.tensor([[0.5, 0.1], [0.5, 0.1], [0.5, 0.1]])
    labels = torch.tensor([1, 1, 0])
    assert quality.matched_subset(statistics, labels, None, 0.01).tolist() == [0, 2]


def test_floors_are_every_trivial_statistic_in_its_better_direction(quality):
    statistics = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.3], [0.1, 0.4]])
    labels = torch.tensor([0, 0, 1, 1])
    floors = quality.trivial_floors(statistics, labels)
    assert list(floors) == [
        "baseline: mean intensity (darker = abnormal)",
        "baseline: global contrast (more contrast = abnormal)",
    ]
    for scores in floors.values():
        assert quality.auroc(scores, labels) == 1.0


def test_standardized_score_ignores_global_brightness_and_contrast(quality):
    torch.manual_seed(0)
    images = torch.rand(4, 1, 16, 16) * 1.6 - 0.8
    restored = images + 0.05 * torch.randn_like(images)
    scores = quality.score_variants(images, restored)
    shifted = quality.score_variants(0.5 * images + 0.2, 0.5 * restored + 0.2)
    torch.testing.assert_close(shifted["standardized"], scores["standardized"])
    # The paper's mean halves with the contrast; the standardized score does not move.
    torch.testing.assert_close(shifted["mean"], scores["mean"] / 2)
    # The critic's variants need a critic; the others are all there.
    assert set(scores) == set(quality.SCORE_VARIANTS) - {"critic", "critic_features"}
    assert all(s.shape == (4,) for s in scores.values())


def test_top5_score_is_the_mean_of_the_largest_smoothed_values(quality):
    images = torch.zeros(1, 1, 20, 20)
    restored = images.clone()
    restored[..., :5, :4] = 1.0  # 20 of 400 pixels differ by 1: the top 5% exactly
    scores = quality.score_variants(images, restored)
    assert scores["mean"].item() == pytest.approx(20 / 400 / 2)
    assert scores["top5_smoothed"].item() > 4 * scores["mean"].item()


@requires_nih
def test_quality_study_runs_end_to_end_on_nih(quality, tmp_path, capsys):
    output = tmp_path / "table.md"
    quality.main(
        [
            "--root",
            str(NIH_ROOT),
            "--iterations",
            "2",
            "--seeds",
            "0",
            "--configs",
            "full",
            "no_unlabeled",
            "--resamples",
            "20",
            "--output",
            str(output),
        ]
    )
    table = output.read_text()
    darkness = "baseline: mean intensity (darker = abnormal)"
    for row in ("| full | 1 |", "| no_unlabeled | 1 |", darkness, "autoencoder"):
        assert row in table
    assert "baseline: vertical sharpness" in table
    assert "AUROC AP | AUROC PA" in table
    # Darkness is the 0.78 floor on this split.
    floor = next(line for line in table.splitlines() if darkness in line)
    assert 0.74 < float(floor.split("|")[3].split("±")[0]) < 0.82
    assert "| full: critic |" in table and "| full: lung_lowpass |" in table
    assert "Machine:" in capsys.readouterr().out


def test_labelled_validation_and_tuning_candidates(quality, tmp_path):
    root = write_medad_tree(tmp_path / "medad", size=64)
    before = (root / "data.json").read_text()
    saved = tmp_path / "runs.json"
    quality.main(
        [
            *("--root", str(root), "--iterations", "2", "--seeds", "0", "--no-baselines"),
            *("--configs", "full", "lr_2e-4", "--labelled-val", "3", "--resamples", "10"),
            *("--json", str(saved)),
        ]
    )
    runs = json.loads(saved.read_text())
    assert (
        "Validation: labelled, held-out known normals and 3 unused pool abnormals"
        in (runs["header"])
    )
    for name in ("full", "lr_2e-4"):
        assert 0.0 <= runs["results"][name][0]["val_auroc"] <= 1.0
    assert (root / "data.json").read_text() == before


def test_saved_runs_merge_into_one_table_and_ratio_plot(quality, tmp_path):
    def run(auroc, seed):
        return {
            "auroc": auroc,
            "ci_low": auroc - 0.1,
            "ci_high": auroc + 0.1,
            "ap": 0.5,
            "matched_auroc": 0.5,
            "intensity_corr": -0.5,
            "train_s": 10.0 + seed,
        }

    variant = {"val_auroc": 0.5, "auroc": 0.6, "matched_auroc": 0.5, "chosen_on_val": 1.0}
    paths = []
    for seed in (0, 1):
        saved = {
            "header": f"seed {seed}",
            "results": {
                f"ratio_{r}": [run(0.6 + float(r) / 10 + seed / 100, seed)] for r in ("0.0", "0.4")
            },
            "variants": {"ratio_0.0: mean": [variant]},
        }
        paths.append(tmp_path / f"run{seed}.json")
        paths[-1].write_text(quality.json.dumps(saved))
    output, png = tmp_path / "table.md", tmp_path / "ratio.png"
    quality.main(
        ["--from-json", *map(str, paths), "--output", str(output), "--plot-ratio", str(png)]
    )
    table = output.read_text()
    assert table.startswith("seed 0\nseed 1\n")
    # Two seeds per configuration: mean and sample standard deviation of 0.60 and 0.61.
    assert "| ratio_0.0 | 2 | 0.605 ± 0.007 |" in table
    assert "| ratio_0.0: mean | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.500 ± 0.000 | 2/2 |" in table
    assert png.read_bytes().startswith(b"\x89PNG")


def test_main_table_scores_with_the_models_own_settings(quality):
    torch.manual_seed(0)
    model = SAGAN(
        generator=Generator(image_size=32, base_channels=4),
        critic=Critic(base_channels=4, num_downsamples=5),
        scorer=Scorer(map_sigma=1.0, top_fraction=0.05),
    ).eval()
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    restored = quality.restore_all(model.inference.restore, images)
    assert torch.allclose(quality.own_score(model, images, restored), model.score(images))


def test_every_configuration_builds_the_model_it_names(quality):
    # The quality fixture put benchmarks/ on sys.path, where quality.py finds its modules.
    from quality_configs import COMPONENTS, model_arguments

    for name, (overrides, _) in quality.CONFIGS.items():
        model = quality.model_class(name)(**model_arguments(overrides))
        for setting, value in overrides.items():
            if setting in COMPONENTS:
                component = getattr(model, setting)
                assert {k: getattr(component, k) for k in value} == value, name
            else:
                assert getattr(model, setting) == value, name
        # The base config's other settings stay (examples/nih_cpu.yaml: 2 blocks, 1500 its).
        assert model.generator.num_res_blocks == 2 and model.max_iterations == 1500, name


def with_views(root: Path) -> Path:
    """``labels.csv`` with a view per image of a fake Med-AD tree (alternating AP / PA)."""
    split = json.loads((root / "data.json").read_text())
    names = split["train"]["0"] + split["train"]["unlabeled"]["0"]
    names += split["train"]["unlabeled"]["1"] + split["test"]["0"] + split["test"]["1"]
    lines = ["file,view_position"] + [f"{n},{'AP' if i % 2 else 'PA'}" for i, n in enumerate(names)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_intensity_settings_run_with_a_view_balanced_validation(quality, tmp_path):
    root = with_views(write_medad_tree(tmp_path / "medad", size=64))
    saved, output = tmp_path / "runs.json", tmp_path / "table.md"
    quality.main(
        [
            *("--root", str(root), "--iterations", "2", "--seeds", "0", "--no-baselines"),
            *("--configs", "full", "--labelled-val", "3", "--balance-val-by", "view_position"),
            *("--normalizations", "none", "equalize", "--augmentations", "none", "brightness"),
            *("--resamples", "10", "--json", str(saved), "--output", str(output)),
        ]
    )
    runs = json.loads(saved.read_text())
    assert list(runs["results"]) == [
        "full",
        "full norm=none aug=brightness",
        "full norm=equalize aug=none",
        "full norm=equalize aug=brightness",
    ]
    columns = {"val_auroc", "intensity_spearman", "input_mean_auroc", "input_contrast_auroc"}
    assert all(columns <= set(run) for (run,) in runs["results"].values())
    # The fake abnormal images are brighter: a perfect brightness cue on the decoded inputs,
    # which equalisation takes away; the decoded-intensity columns stay the same.
    plain, equalized = runs["results"]["full"][0], runs["results"]["full norm=equalize aug=none"][0]
    assert plain["input_mean_auroc"] == 1.0 and equalized["input_mean_auroc"] < 0.9
    assert "balanced by view_position" in runs["header"]
    assert (
        "Intensity settings: normalisations none equalize; augmentations none = None"
        in (runs["header"])
    )
    table = output.read_text()
    assert "| trivial AUROC: input mean | trivial AUROC: input std | val AUROC |" in table


def test_balanced_validation_needs_a_labelled_one(quality, tmp_path):
    root = with_views(write_medad_tree(tmp_path / "medad", size=64))
    with pytest.raises(SystemExit, match="--balance-val-by needs a labelled validation"):
        quality.main(["--root", str(root), "--labelled-val", "0", "--balance-val-by", "view"])


def test_val_every_reports_the_best_validation_weights(quality, tmp_path):
    root = write_medad_tree(tmp_path / "medad", size=64)
    saved, output = tmp_path / "runs.json", tmp_path / "table.md"
    quality.main(
        [
            *("--root", str(root), "--iterations", "4", "--val-every", "2", "--seeds", "0"),
            *("--no-baselines", "--configs", "full", "--labelled-val", "3", "--resamples", "10"),
            *("--json", str(saved), "--output", str(output)),
        ]
    )
    (run,) = runs = json.loads(saved.read_text())["results"]["full"]
    assert len(runs) == 1
    # Validated at iterations 2 and 4; the kept weights are those of the better one.
    assert run["best_iteration"] in (2.0, 4.0)
    # The fake abnormals are brighter than every normal: no intensity-matched pair exists.
    assert 0.0 <= run["best_auroc"] <= 1.0 and math.isnan(run["best_matched_auroc"])
    assert run["best_val_auroc"] >= run["val_auroc"] - 1e-9
    assert "| test AUROC at best val | matched AUROC at best val |" in output.read_text()


def test_best_validation_weights_keeps_the_best_and_its_iteration(quality):
    # The quality fixture put benchmarks/ on sys.path, where quality.py finds its modules.
    from quality_models import BestValidationWeights

    class Module:
        iteration = 0

        def state_dict(self):
            return {"w": torch.tensor([float(self.iteration)])}

    class Trainer:
        sanity_checking = False

    keeper, module, trainer = BestValidationWeights(), Module(), Trainer()
    for iteration, value in ((2, 0.6), (4, 0.8), (6, 0.7)):
        module.iteration = iteration
        trainer.callback_metrics = {"val/AUROC": torch.tensor(value)}
        keeper.on_validation_end(trainer, module)
    assert keeper.iteration == 4 and keeper.best_auroc == pytest.approx(0.8)
    assert keeper.state["w"].item() == 4.0


def test_a_stopped_study_keeps_the_runs_it_finished(quality, tmp_path, monkeypatch):
    root = write_medad_tree(tmp_path / "medad", size=64)
    saved = tmp_path / "runs.json"
    real = quality.train_sagan
    calls = []

    def stopped_on_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(quality, "train_sagan", stopped_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        quality.main(
            [
                *("--root", str(root), "--iterations", "2", "--seeds", "0", "1"),
                *("--no-baselines", "--configs", "full", "--labelled-val", "3"),
                *("--resamples", "10", "--json", str(saved)),
            ]
        )
    runs = json.loads(saved.read_text())
    assert [len(v) for v in runs["results"].values()] == [1]
    assert "seeds [0, 1]" in runs["header"]
    assert not [path for path in tmp_path.iterdir() if is_temporary(path)]


def test_group_by_keeps_patients_out_of_training_and_validation(quality, tmp_path):
    root = write_medad_tree(tmp_path / "medad", size=64)
    split = json.loads((root / "data.json").read_text())
    train = split["train"]["0"] + split["train"]["unlabeled"]["0"]
    train += split["train"]["unlabeled"]["1"]
    test = split["test"]["0"] + split["test"]["1"]
    # Two films per training patient; test patients of their own (data.json's split is given).
    patients = {n: f"p{i // 2}" for i, n in enumerate(train)}
    patients.update({n: f"t{i}" for i, n in enumerate(test)})
    (root / "labels.csv").write_text(
        "file,patient\n" + "".join(f"{n},{p}\n" for n, p in patients.items())
    )
    data = quality.make_data(root, {}, 0, 2, group_by="patient")
    training = {patients[n] for n in [*data.known_normal.names, *data.unlabeled.names]}
    validation = {patients[n] for n in data.val.names}
    assert validation and not training & validation
    assert sum(data.val.labels) == 2


def test_none_settings_override_what_the_base_config_ships(quality, monkeypatch, tmp_path):
    root = write_medad_tree(tmp_path / "medad", size=64)
    model_args, data_args = quality.load_base()
    data_args.update(normalization="equalize", augment={"brightness": 0.2})
    monkeypatch.setattr(quality, "load_base", lambda base: (dict(model_args), dict(data_args)))
    made = []

    class StopError(Exception):
        pass

    def recorded(root, overrides, *args):
        made.append(overrides)
        raise StopError

    monkeypatch.setattr(quality, "make_data", recorded)
    with pytest.raises(StopError):
        quality.main(["--root", str(root), "--seeds", "0", "--no-baselines"])
    assert made[0]["normalization"] == "none" and made[0]["augment"] is None
