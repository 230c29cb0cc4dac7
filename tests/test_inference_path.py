"""One inference path (issue 25): every stage and export score through `AnomalyScorer`, the
score changes on a `Scorer` subclass only, and the pre-processing a model was trained with is
recorded in its checkpoints and applied at predict without the user repeating it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    TINY_MODEL_ARGS,
    chest_phantom,
    mark,
    tiny_networks,
    tiny_sagan,
    tiny_trainer,
    write_dicom,
)

from sagan_ad import (
    SAGAN,
    AnomalyScorer,
    DataMismatchError,
    DecodeSettings,
    DicomOptions,
    Engine,
    FolderDataModule,
    FolderPredictDataModule,
    InputError,
    Preprocessing,
    Scorer,
)
from sagan_ad.cli import main
from sagan_ad.data import ImageFolder, to_model_range
from sagan_ad.preprocessing import PREPROCESSING_KEY


def dicom_films(root: Path, count: int = 6) -> Path:
    """Films whose header window shows a narrow band of their values: the standard reading
    (header window) and the benchmark one (min-max) give different pixels."""
    for i in range(count):
        pixels = mark(chest_phantom(40, 40), i).astype(np.uint16)
        write_dicom(root / f"IM{i:04d}", pixels, WindowCenter=1500, WindowWidth=1000)
    return root


@pytest.fixture
def benchmark_model(tmp_path) -> tuple[Path, Path]:
    """A checkpoint fitted on DICOM films read in benchmark mode, and the films' folder."""
    films = dicom_films(tmp_path / "films")
    data = FolderDataModule(
        films,
        image_size=32,
        batch_size=2,
        decode=DecodeSettings(dicom_mode="benchmark"),
        split={"val_fraction": 0.0},
        cache={"dir": tmp_path / "cache", "workers": 1, "progress": False},
    )
    model = tiny_sagan(max_iterations=1)
    trainer = tiny_trainer(tmp_path / "run", enable_checkpointing=False)
    trainer.fit(model, data)
    path = tmp_path / "benchmark.ckpt"
    trainer.save_checkpoint(path)
    return path, films


def test_fit_records_the_decode_settings_and_predict_reads_films_with_them(
    benchmark_model, tmp_path
):
    path, films = benchmark_model
    record = torch.load(path, weights_only=True)[PREPROCESSING_KEY]
    assert record["decode"]["dicom_mode"] == "benchmark"
    assert record["normalization"] == "none"
    data = FolderPredictDataModule(films, image_size=32, batch_size=4)
    data.setup()  # a first look at the folder, before the checkpoint's settings are known
    assert len(data.dataset) == 6
    engine = Engine(tiny_trainer(tmp_path / "predict"))
    out = engine.predict(SAGAN(**tiny_networks()), data, ckpt_path=str(path))
    assert data.decode == DecodeSettings(dicom_mode="benchmark")
    predicted = torch.cat([batch["image"] for batch in out])
    benchmark = ImageFolder(films, 32, dicom=DicomOptions(mode="benchmark"))
    standard = ImageFolder(films, 32)
    as_benchmark = torch.stack([benchmark[i]["image"] for i in range(len(benchmark))])
    as_standard = torch.stack([standard[i]["image"] for i in range(len(standard))])
    assert not torch.equal(as_benchmark, as_standard)
    assert torch.equal(predicted, to_model_range(as_benchmark))


def test_the_command_line_predicts_with_the_recorded_decode_settings(benchmark_model, tmp_path):
    path, films = benchmark_model
    arguments = [
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        "--data=sagan_ad.FolderPredictDataModule",
        f"--data.root={films}",
        "--data.image_size=32",
        f"--ckpt_path={path}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    ]
    # Read as the checkpoint records (benchmark): the standard reading would be refused.
    main(["predict", *arguments, f"--trainer.logger.save_dir={tmp_path / 'adopted'}"])
    (predictions,) = (tmp_path / "adopted").rglob("predict/predictions.csv")
    assert len(predictions.read_text().splitlines()) == 1 + 6
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                *arguments,
                "--data.decode.dicom_mode=standard",
                f"--trainer.logger.save_dir={tmp_path / 'refused'}",
            ]
        )
    assert exit_info.value.code == 2


def test_predict_refuses_films_decoded_otherwise_than_the_model_was_trained(
    benchmark_model, tmp_path
):
    path, films = benchmark_model
    data = FolderPredictDataModule(films, image_size=32, decode=DecodeSettings())
    with pytest.raises(DataMismatchError, match=r"decoded with dicom_mode='benchmark'.*'standard'"):
        tiny_trainer(tmp_path / "p").predict(SAGAN(**tiny_networks()), data, ckpt_path=str(path))


def test_every_stage_and_export_score_through_the_one_inference_module():
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), scorer=Scorer(map_sigma=1.0, top_fraction=0.2)).eval()
    raw = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    images = model.preprocessing(raw)
    with torch.no_grad():
        expected = model.inference.infer(images, with_restored=True)
        predicted = model.predict_step({"image": raw, "decoded": True}, 0)
        # Unmarked uint8 images may be normalised already: refused, never prepared twice.
        with pytest.raises(InputError, match="images must be float"):
            model.predict_step({"image": raw}, 0)
        exported_scores, exported_maps = AnomalyScorer.from_model(model)(images)
    assert torch.equal(predicted["score"], expected["score"])
    assert torch.equal(predicted["anomaly_map"], expected["anomaly_map"])
    assert torch.equal(predicted["restored"], expected["restored"])
    assert torch.equal(model.score(images), expected["score"])
    assert torch.equal(exported_scores, expected["score"])
    assert torch.equal(exported_maps, expected["anomaly_map"])
    assert model.inference.generator is model.inference_generator
    assert model.inference.scorer is model.scorer


@pytest.mark.parametrize("method", ["anomaly_map", "score", "infer"])
def test_a_model_subclass_that_overrides_scoring_is_refused_when_defined(method):
    with pytest.raises(TypeError, match=rf"overrides {method} of SAGAN: .*sagan_ad\.Scorer"):
        type("Custom", (SAGAN,), {method: lambda self, images: images})


def test_a_scorer_subclass_changes_every_stage_alike():
    class PeakScorer(Scorer):
        def score(self, maps: torch.Tensor) -> torch.Tensor:
            return maps.flatten(1).max(1).values

    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), scorer=PeakScorer()).eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        maps = model.anomaly_map(images)
        assert torch.equal(model.score(images), maps.flatten(1).max(1).values)
        assert torch.equal(AnomalyScorer.from_model(model)(images)[0], model.score(images))


def test_a_scorer_subclass_that_overrides_forward_is_what_every_stage_runs():
    class Halved(Scorer):
        def forward(self, images, restored):
            scores, maps = super().forward(images, restored)
            return scores / 2, maps

    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), scorer=Halved()).eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        paper = SAGAN(**tiny_networks()).eval()
        paper.load_state_dict(model.state_dict())
        assert torch.allclose(model.score(images), paper.score(images) / 2)
        assert torch.equal(AnomalyScorer.from_model(model)(images)[0], model.score(images))


def test_the_preprocessing_record_round_trips_and_a_damaged_one_is_named():
    decode = DecodeSettings("benchmark", percentiles=(1.0, 99.0), force_dicom=True, bit_depth=12)
    prep = Preprocessing("clahe(clip_limit=3.0)", decode)
    again = Preprocessing.from_record(prep.record())
    assert again.decode == decode
    assert again.normalization == prep.normalization
    with pytest.raises(InputError, match="recorded decode settings"):
        Preprocessing.from_record({"normalization": "none", "decode": {"dicom": {"mode": 3}}})
    with pytest.raises(InputError, match=r"decode\.dicom_mode='bogus': must be 'standard' or"):
        DecodeSettings(dicom_mode="bogus")
    with pytest.raises(InputError, match=r"decode\.percentiles=5: give a low and a high"):
        DecodeSettings(percentiles=5)
    with pytest.raises(InputError, match=r"decode\.force_dicom='no': must be true or false"):
        DecodeSettings(force_dicom="no")
    with pytest.raises(InputError, match=r"recorded decode settings .*decode\.dicom_mode=3"):
        Preprocessing.from_record({"normalization": "none", "decode": {"dicom_mode": 3}})
    with pytest.raises(InputError, match=r"decode='benchmark': give a sagan_ad\.data\.Decode"):
        FolderPredictDataModule("scans", decode="benchmark")
    with pytest.raises(InputError, match=r"decode: no setting 'mode'; the settings are dicom_mode"):
        FolderPredictDataModule("scans", decode={"mode": "benchmark"})
