"""A run is what it says (issue 22, class 5): a fit without validation says so and keeps its
final weights, a resumed fit is the run it continues, and a report never ranks NaN scores or
prints an interval that one image cannot give."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
import yaml
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_sagan, tiny_trainer

from sagan_ad import SyntheticCXRDataModule
from sagan_ad.cli import main
from sagan_ad.cli.resumed import check_resumed_settings
from sagan_ad.evaluation.metrics import auroc, detection_metrics
from sagan_ad.evaluation.report import build_report
from sagan_ad.training.callbacks import best_and_last_checkpoints


def test_a_fit_without_validation_says_so_and_keeps_its_final_weights(tmp_path):
    data = SyntheticCXRDataModule(
        num_known_normal=8, num_test=4, image_size=32, batch_size=4, split={"val_fraction": 0.0}
    )
    trainer = tiny_trainer(tmp_path, callbacks=best_and_last_checkpoints(str(tmp_path / "ck")))
    with pytest.warns(UserWarning) as caught:
        trainer.fit(tiny_sagan(max_iterations=3), datamodule=data)
    assert any(
        str(w.message).startswith(
            "SyntheticCXRDataModule has no validation set (split.val_fraction=0.0 and no val "
            "split): no checkpoint is chosen on validation and no threshold is set, so last.ckpt "
            "keeps the final weights"
        )
        for w in caught
    )
    saved = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert saved["sagan_iteration"] == 3


def test_nan_scores_are_refused_naming_the_images():
    with pytest.raises(ValueError) as info:
        build_report(
            "test",
            torch.tensor([0.1, math.nan, 0.3, 0.9]),
            torch.tensor([0, 0, 1, 1]),
            ["a.png", "b.png", "c.png", "d.png"],
        )
    assert str(info.value).startswith(
        "test: 1 of 4 image(s) have a NaN or infinite score (b.png): no metric can rank them"
    )
    for metric in (auroc, detection_metrics):
        with pytest.raises(ValueError, match=r"1 of 2 scores are NaN or infinite"):
            metric(torch.tensor([math.inf, 0.2]), torch.tensor([0, 1]))


def test_one_abnormal_image_gives_no_interval_and_a_warning():
    report = build_report(
        "test",
        torch.tensor([0.1, 0.2, 0.3, 0.9]),
        torch.tensor([0, 0, 0, 1]),
        list("abcd"),
        threshold=0.5,
        bootstrap_resamples=50,
    )
    assert report.metrics["AUROC"] == 1.0
    assert math.isnan(report.metrics["AUROC_CI_low"]) and math.isnan(
        report.metrics["AUROC_CI_high"]
    )
    assert report.warnings[0].startswith(
        "test: the AUROC rests on 1 abnormal image: it is the rank of that one image among the "
        "others, not a measure of the model"
    )
    two = build_report(
        "test",
        torch.tensor([0.1, 0.2, 0.8, 0.9]),
        torch.tensor([0, 0, 1, 1]),
        list("abcd"),
        threshold=0.5,
        bootstrap_resamples=50,
    )
    assert not math.isnan(two.metrics["AUROC_CI_low"]) and not two.warnings
    unvalidated = build_report("test", two.scores, two.labels, list("abcd"), bootstrap_resamples=0)
    assert unvalidated.warnings == [
        "test: no threshold (the model was never validated): predictions are -1 (undecided) "
        "and the metrics at the threshold are NaN; validate with a validation set "
        "(split.val_fraction above 0, or a val split) to choose one"
    ]


def saved_run(folder, seed=0, batch_size=4) -> None:
    config = {
        "model": {"class_path": "sagan_ad.SAGAN", "init_args": {"max_iterations": 4}},
        "data": {
            "class_path": "sagan_ad.SyntheticCXRDataModule",
            "init_args": {"seed": seed, "batch_size": batch_size, "num_workers": 0},
        },
        "ckpt_path": None,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def test_resuming_with_data_settings_that_change_the_images_is_refused(tmp_path):
    run = saved_run(tmp_path)
    now = {**run, "ckpt_path": "last"}
    now["data"] = {**run["data"], "init_args": {**run["data"]["init_args"], "seed": 3}}
    with pytest.raises(ValueError) as info:
        check_resumed_settings(tmp_path, now, "last")
    assert str(info.value).startswith(
        "--ckpt_path last resumes a run whose data settings were others: data.seed=3 (the run: "
        "0); the images it trains and validates on (or how validation scores them) would change "
        "mid-run and the best checkpoint be chosen across two validation sets"
    )


def test_resuming_with_another_batch_size_warns_and_an_unchanged_resume_is_silent(
    tmp_path, recwarn
):
    run = saved_run(tmp_path)
    check_resumed_settings(tmp_path, {**run, "ckpt_path": "last"}, "last")
    assert not [w for w in recwarn if "resuming with settings" in str(w.message)]
    now = {**run, "data": {**run["data"], "init_args": {**run["data"]["init_args"]}}}
    now["data"]["init_args"]["batch_size"] = 8
    now["data"]["init_args"]["num_workers"] = 2
    with pytest.warns(
        UserWarning,
        match=r"resuming with settings that differ from the run's: "
        r"data.batch_size=8 \(the run: 4\), data.num_workers=2 \(the run: 0\)",
    ):
        check_resumed_settings(tmp_path, now, "last")


def test_a_resumed_fit_keeps_the_runs_config_and_records_its_own_beside_it(tmp_path):
    args = [
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        *TINY_DATA_ARGS,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.val_check_interval=2",
        "--val_samples=0",
        "--test_after_fit=false",
    ]
    main(["fit", *args, "--model.max_iterations=2"])
    run = tmp_path / "lightning_logs" / "version_0"
    original = (run / "config.yaml").read_text()
    with pytest.warns(UserWarning, match=r"data.batch_size=8 \(the run: 4\)"):
        main(["fit", *args, "--model.max_iterations=4", "--data.batch_size=8", "--ckpt_path=last"])
    assert (run / "config.yaml").read_text() == original
    resumed = yaml.safe_load((run / "config-resumed-1.yaml").read_text())
    assert resumed["data"]["init_args"]["batch_size"] == 8
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit):
        main(["fit", *args, "--model.max_iterations=6", "--data.seed=5", "--ckpt_path=last"])
    assert "error: --ckpt_path last resumes a run whose data settings were others: data.seed=5" in (
        stderr.getvalue()
    )
    assert not (run / "config-resumed-2.yaml").exists()


def test_resuming_with_another_scorer_is_refused(tmp_path):
    run = saved_run(tmp_path)
    now = {**run, "model": {**run["model"], "init_args": {"max_iterations": 4}}}
    now["model"]["init_args"]["scorer"] = {
        "class_path": "sagan_ad.Scorer",
        "init_args": {"top_fraction": 0.1},
    }
    with pytest.raises(ValueError, match=r"model.scorer=.*model.scorer.top_fraction=0.1"):
        check_resumed_settings(tmp_path, now, "last")
