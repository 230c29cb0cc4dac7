"""Intensity normalisation and augmentation: the library transforms, the DataModules, the model's
record of the normalisation, predict and export."""

from __future__ import annotations

import io
import json

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL_ARGS, tiny_networks, tiny_trainer, write_medad_tree
from jsonargparse import ArgumentParser
from PIL import Image
from torch.utils.data import DataLoader

from sagan_ad import (
    SAGAN,
    AnomalyScorer,
    Evaluator,
    FolderDataModule,
    FolderPredictDataModule,
    LAGDataModule,
    MedADDataModule,
    Preprocessing,
    RSNADataModule,
    SyntheticCXRDataModule,
    VinDrCXRDataModule,
    export_scorer,
    load_checkpoint,
)
from sagan_ad.cli import main
from sagan_ad.data import (
    Augmentation,
    DecodeSettings,
    DeviceTrainingStream,
    IntensityNormalization,
    IntensityNormalizer,
    TrainingStream,
    image_statistics,
    normalize_images,
    to_model_range,
)
from sagan_ad.data.images.intensity import to_uint8
from sagan_ad.preprocessing import PREPROCESSING_KEY
from sagan_ad.training.checkpoint_upgrade import FORMAT_KEY


def radiographs(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 images with structure (a bright band, dark fields, noise) at varied brightness."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, size, size))
    for i in range(n):
        base = rng.uniform(40, 150)
        image = base + rng.normal(0, 12, (size, size))
        image[:, size // 3 : 2 * size // 3] += rng.uniform(30, 80)
        images[i, 0] = image
    return torch.from_numpy(np.clip(images, 0, 255).round().astype(np.uint8))


def test_equalize_and_clahe_are_opencvs():
    images = radiographs()
    equalized = IntensityNormalization("equalize").apply(images)
    clahe = IntensityNormalization("clahe", clip_limit=3.0, tile_grid=4).apply(images)
    reference = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4))
    for i in range(len(images)):
        plane = images[i, 0].numpy()
        assert np.array_equal(equalized[i, 0].numpy(), cv2.equalizeHist(plane))
        assert np.array_equal(clahe[i, 0].numpy(), reference.apply(plane))


@pytest.mark.parametrize("method", ["equalize", "zscore", "percentile"])
def test_the_graph_module_gives_the_data_pipelines_grey_levels(method):
    # The exported graph must see exactly what training saw: same grey levels, RGB and
    # constant images included.
    normalization = IntensityNormalization(method)
    generator = torch.Generator().manual_seed(0)
    colour = torch.randint(30, 90, (6, 3, 16, 16), generator=generator, dtype=torch.uint8)
    flat = torch.full((2, 1, 8, 8), 77, dtype=torch.uint8)
    for images in (radiographs(), colour, flat):
        pipeline = normalization.apply(images)
        graph = to_uint8(IntensityNormalizer(normalization)(to_model_range(images)))
        assert torch.equal(pipeline, graph)


def test_normalisations_remove_global_brightness_and_contrast():
    images = radiographs()
    # A brighter, lower-contrast exposure of the same films (no value is clipped).
    exposed = (images.float() * 0.6 + 60).round().to(torch.uint8)
    for method in ("equalize", "zscore", "percentile"):
        a = IntensityNormalization(method).apply(images).float()
        b = IntensityNormalization(method).apply(exposed).float()
        # The decoded means differ by tens of grey levels; the normalised ones by about one.
        assert (a.mean((1, 2, 3)) - b.mean((1, 2, 3))).abs().max() < 2.5, method
    means = IntensityNormalization("equalize").apply(images).float().mean((1, 2, 3))
    assert means.std() < 0.2 * images.float().mean((1, 2, 3)).std()


def test_none_leaves_the_images_and_every_method_keeps_the_shape():
    images = radiographs(4)
    assert torch.equal(IntensityNormalization().apply(images), images)
    for method in ("equalize", "clahe", "zscore", "percentile"):
        out = normalize_images(images, method)
        assert out.dtype == torch.uint8 and out.shape == images.shape


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("histogram", r"data\.normalization\.method='histogram': choose one of none, equalize"),
        ({"method": "clahe", "clip": 2}, r"unknown field\(s\) clip: the fields are"),
        ({"method": "percentile", "percentiles": [99, 1]}, r"need 0 <= low < high <= 100"),
        ({"method": "clahe", "tile_grid": 0}, r"tile_grid=0 >= 1"),
    ],
)
def test_bad_normalisation_settings_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        IntensityNormalization.parse(spec)


def test_specs_name_only_what_the_method_reads_and_parse_back():
    assert IntensityNormalization("none", clip_limit=9.0).spec() == "none"
    spec = IntensityNormalization("percentile", percentiles=[2, 98]).spec()
    assert spec == "percentile(percentiles=(2.0, 98.0))"
    assert IntensityNormalization.parse(spec) == IntensityNormalization(
        "percentile", percentiles=(2.0, 98.0)
    )
    odd = IntensityNormalization("clahe", clip_limit=2.123456789, tile_grid=4)
    assert IntensityNormalization.parse(odd.spec()) == odd
    assert IntensityNormalization.parse({"method": "clahe", "clip_limit": 2}).spec() == (
        "clahe(clip_limit=2.0, tile_grid=8)"
    )
    with pytest.raises(ValueError, match=r"data\.normalization='clahe\(3\)': give a method name"):
        IntensityNormalization.parse("clahe(3)")


def test_statistics_are_of_the_decoded_images():
    images = torch.tensor([[[[0, 255], [255, 0]]], [[[100, 100], [100, 100]]]], dtype=torch.uint8)
    stats = image_statistics(images)
    assert torch.allclose(stats[:, :2], torch.tensor([[0.5, 0.5], [100 / 255, 0.0]]))


def test_statistics_are_exact_for_many_images_of_any_size():
    """Integer sums, a few hundred images at a time: float64 statistics rounded once."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (600, 3, 37, 29), dtype=np.uint8))
    values = images.flatten(1).double() / 255
    expected = torch.stack([values.mean(1), values.std(1, unbiased=False)], 1).float()
    assert torch.equal(image_statistics(images)[:, :2], expected)
    assert image_statistics(images[:0]).shape == (0, 6)
    with pytest.raises(ValueError, match=r"uint8 images \(N, C, H, W\), got torch.float32"):
        image_statistics(images.float())


# --------------------------------------------------------------------------- DataModules


def test_datamodule_normalises_every_part_after_taking_the_decoded_statistics(medad_root):
    plain = MedADDataModule(medad_root, image_size=32, split={"val_fraction": 0.25})
    equalized = MedADDataModule(
        medad_root, image_size=32, normalization="equalize", split={"val_fraction": 0.25}
    )
    plain.setup()
    equalized.setup()
    for part in ("known_normal", "unlabeled", "val", "test"):
        a, b = getattr(plain, part), getattr(equalized, part)
        assert torch.equal(b.images, IntensityNormalization("equalize").apply(a.images)), part
        if part in ("known_normal", "unlabeled"):
            # Only evaluated images are audited: training films get no statistics.
            assert a.decoded_stats is None and b.decoded_stats is None, part
            continue
        assert torch.equal(a.decoded_stats, image_statistics(a.images))
        assert torch.equal(b.decoded_stats, a.decoded_stats), part
    # The pseudo anomalies are made from the decoded held-out normals, then normalised alike.
    assert equalized.val.names == plain.val.names


def test_the_cache_keeps_decoded_pixels_whatever_the_normalisation(medad_root, tmp_path):
    cache = tmp_path / "cache"
    options = {"image_size": 32, "split": {"val_fraction": 0.25}, "cache": {"dir": cache}}
    first = MedADDataModule(medad_root, normalization="zscore", **options)
    first.setup()
    shards = sorted(cache.rglob("shard-*.npy"))
    second = MedADDataModule(medad_root, normalization="clahe", **options)
    second.setup()
    # No second decoding (same shards), and the second normalisation starts from decoded pixels.
    assert sorted(cache.rglob("shard-*.npy")) == shards
    plain = MedADDataModule(medad_root, image_size=32, split={"val_fraction": 0.25})
    plain.setup()
    assert torch.equal(second.test.images, IntensityNormalization("clahe").apply(plain.test.images))


def stream_batches(stream: TrainingStream, count: int, workers: int = 0) -> list[dict]:
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    return batches


AUGMENT = Augmentation(brightness=0.3, contrast=0.2, gamma=(0.6, 1.6))


def test_augmented_stream_is_seeded_by_position_resumable_and_worker_independent():
    normal, unlabeled = radiographs(10), radiographs(7, seed=1)
    plain = stream_batches(TrainingStream(normal, unlabeled, 4, seed=3), 6)
    full = stream_batches(TrainingStream(normal, unlabeled, 4, seed=3, augment=AUGMENT), 6)
    again = stream_batches(TrainingStream(normal, unlabeled, 4, seed=3, augment=AUGMENT), 6)
    resumed = stream_batches(
        TrainingStream(normal, unlabeled, 4, seed=3, start_batch=4, augment=AUGMENT), 2
    )
    workers = stream_batches(
        TrainingStream(normal, unlabeled, 4, seed=3, augment=AUGMENT), 6, workers=2
    )
    for key in ("normal", "unlabeled"):
        assert all(torch.equal(a[key], b[key]) for a, b in zip(full, again, strict=True))
        assert all(torch.equal(a[key], b[key]) for a, b in zip(full[4:], resumed, strict=True))
        assert all(torch.equal(a[key], b[key]) for a, b in zip(full, workers, strict=True))
        # The images change, and each image of a batch gets its own draw.
        shifts = torch.cat([a[key].float().mean((1, 2, 3)) for a in full]) - torch.cat(
            [p[key].float().mean((1, 2, 3)) for p in plain]
        )
        assert shifts.abs().mean() > 5 and shifts.std() > 5
    # The two streams of one batch draw independently.
    assert not torch.equal(full[0]["normal"], plain[0]["normal"])


def test_brightness_alone_keeps_each_films_contrast():
    images = radiographs(8)
    shifted = Augmentation(brightness=0.15)(images, seed=0)
    delta = shifted.float() - images.float()
    # One shift per image (no clipping at these grey levels): the film's std is unchanged.
    assert torch.allclose(delta.flatten(1).std(1), torch.zeros(8), atol=0.6)
    assert delta.flatten(1).mean(1).abs().max() > 5


def test_datamodule_augments_training_streams_only(medad_root):
    options = {"image_size": 32, "batch_size": 4, "split": {"val_fraction": 0.25}}
    plain = MedADDataModule(medad_root, **options)
    augmented = MedADDataModule(medad_root, augment={"brightness": 0.3}, **options)
    for dm in (plain, augmented):
        dm.setup()
    a = next(iter(plain.train_dataloader()))
    b = next(iter(augmented.train_dataloader()))
    assert not torch.equal(a["normal"], b["normal"])
    assert torch.equal(plain.val.images, augmented.val.images)
    assert torch.equal(plain.test.images, augmented.test.images)
    assert MedADDataModule(medad_root, augment={"brightness": 0.0}).augment is None


@pytest.mark.parametrize(
    "datamodule",
    [
        MedADDataModule,
        SyntheticCXRDataModule,
        FolderDataModule,
        RSNADataModule,
        VinDrCXRDataModule,
        LAGDataModule,
    ],
)
def test_every_datamodule_takes_the_intensity_options(datamodule):
    # From YAML a DataModule gets the options its signature lists and those its **kwargs pass
    # on to the base class, as jsonargparse resolves them.
    parser = ArgumentParser()
    parser.add_class_arguments(datamodule, "data")
    defaults = parser.get_defaults().data
    assert defaults.normalization == "none"
    assert defaults.augment is None


def test_folder_datamodule_normalises_and_augments(tmp_path):
    normals = write_folder(tmp_path / "normal", 6)
    # Other films than the normals: copies of them would be a leak the setup refuses.
    tests = write_folder(tmp_path / "abnormal", 2, seed=1)
    options = {"test_abnormal": tests, "cache": {"dir": tmp_path / "cache", "progress": False}}
    options.update(image_size=32, batch_size=2, split={"val_fraction": 0.34})
    plain = FolderDataModule(normals, **options)
    changed = FolderDataModule(
        normals, normalization="zscore", augment={"gamma": [0.5, 2]}, **options
    )
    plain.setup()
    changed.setup()
    assert torch.equal(changed.test.images, normalize_images(plain.test.images, "zscore"))
    assert torch.equal(changed.test.decoded_stats, plain.test.decoded_stats)
    a, b = next(iter(plain.train_dataloader())), next(iter(changed.train_dataloader()))
    assert not torch.equal(normalize_images(a["normal"], "zscore"), b["normal"])


def test_augmentation_is_refused_on_the_device_stream(medad_root):
    with pytest.raises(ValueError, match=r"data_on_device=True with augment \(brightness=0\.2\)"):
        MedADDataModule(medad_root, data_on_device=True, augment={"brightness": 0.2})
    with pytest.raises(ValueError, match="DeviceTrainingStream cannot augment"):
        DeviceTrainingStream(radiographs(4), radiographs(4), 2, augment=AUGMENT)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"brightness": 1.5}, r"data\.augment\.brightness=1\.5: must be in \[0, 1\]"),
        ({"gamma": [1.4, 0.7]}, r"data\.augment\.gamma=\(1\.4, 0\.7\): need 0 < low <= high"),
        ({"hue": 0.1}, r"data\.augment has unknown field\(s\) hue"),
    ],
)
def test_bad_augmentation_settings_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        Augmentation.parse(spec)


# --------------------------------------------------------------------------- model record


def fitted(root, tmp_path, normalization="zscore", **data) -> tuple[SAGAN, L.Trainer]:
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=2)
    dm = MedADDataModule(
        root,
        image_size=32,
        batch_size=4,
        normalization=normalization,
        **data,
        split={"val_fraction": 0.25},
    )
    trainer = tiny_trainer(tmp_path, enable_checkpointing=True)
    trainer.fit(model, dm)
    return model, trainer


def test_fit_records_the_normalisation_in_the_checkpoint_and_test_refuses_other_data(
    medad_root, tmp_path
):
    model, trainer = fitted(medad_root, tmp_path, "zscore(zscore_range=2)")
    assert model.preprocessing.normalization.spec() == "zscore(zscore_range=2.0)"
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    recorded = torch.load(path, weights_only=True)
    saved = recorded[PREPROCESSING_KEY]["normalization"]
    assert saved == "zscore(zscore_range=2.0)"
    assert recorded[PREPROCESSING_KEY]["decode"] == DecodeSettings().record()
    assert "normalization" not in recorded["hyper_parameters"]["scorer"]["init_args"]
    fresh = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    other = MedADDataModule(
        medad_root, image_size=32, normalization="zscore", split={"val_fraction": 0.25}
    )
    message = (
        r"trained on images with intensity normalisation zscore\(zscore_range=2\.0\) \(as its "
        r"checkpoint records\), but data\.normalization is zscore\(zscore_range=3\.0\): set "
        r"data\.normalization to 'zscore\(zscore_range=2\.0\)'"
    )
    with pytest.raises(ValueError, match=message):
        tiny_trainer(tmp_path).test(fresh, other, ckpt_path=path, verbose=False)
    with pytest.raises(ValueError, match=message):
        tiny_trainer(tmp_path).validate(fresh, other, ckpt_path=path, verbose=False)
    same = MedADDataModule(
        medad_root,
        image_size=32,
        normalization={"method": "zscore", "zscore_range": 2.0},
        split={"val_fraction": 0.25},
    )
    tiny_trainer(tmp_path).test(fresh, same, ckpt_path=path, verbose=False)
    assert fresh.preprocessing.normalization.spec() == saved


def test_resuming_on_differently_normalised_data_is_refused(medad_root, tmp_path):
    _, trainer = fitted(medad_root, tmp_path, "equalize")
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=4)
    dm = MedADDataModule(medad_root, image_size=32, batch_size=4, split={"val_fraction": 0.25})
    with pytest.raises(ValueError, match=r"normalisation equalize .* data\.normalization is none"):
        tiny_trainer(tmp_path).fit(model, dm, ckpt_path=path)


def without_preprocessing_record(root, tmp_path, normalization: str, on_scorer: bool):
    """A checkpoint as older versions wrote it: the normalisation among the scorer's settings
    (``on_scorer``), or nowhere (before normalisation existed)."""
    _, trainer = fitted(root, tmp_path, normalization)
    path = tmp_path / "older.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint[PREPROCESSING_KEY], checkpoint[FORMAT_KEY]
    if on_scorer:
        checkpoint["hyper_parameters"]["scorer"]["init_args"]["normalization"] = normalization
    torch.save(checkpoint, path)
    return path


def test_checkpoints_that_kept_the_normalisation_on_the_scorer_load_it(medad_root, tmp_path):
    # Checkpoints written before the pre-processing record kept it among the scorer's settings.
    path = without_preprocessing_record(medad_root, tmp_path, "equalize", on_scorer=True)
    for loaded in (
        SAGAN.load_from_checkpoint(path, weights_only=True),
        SAGAN.load_from_checkpoint(io.BytesIO(path.read_bytes()), weights_only=True),
        load_checkpoint(path),
    ):
        assert loaded.preprocessing.normalization.spec() == "equalize"
    dm = MedADDataModule(medad_root, image_size=32, split={"val_fraction": 0.25})
    fresh = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    with pytest.raises(ValueError, match=r"normalisation equalize .* data\.normalization is none"):
        tiny_trainer(tmp_path).test(fresh, dm, ckpt_path=path, verbose=False)


def test_checkpoints_from_before_normalisation_count_as_none(medad_root, tmp_path):
    path = without_preprocessing_record(medad_root, tmp_path, "none", on_scorer=False)
    loaded = SAGAN.load_from_checkpoint(path, weights_only=True)
    assert loaded.preprocessing.normalization.spec() == "none"
    dm = MedADDataModule(
        medad_root, image_size=32, normalization="clahe", split={"val_fraction": 0.25}
    )
    with pytest.raises(ValueError, match="normalisation none"):
        tiny_trainer(tmp_path).test(loaded, dm, verbose=False)


def write_folder(root, count: int = 3, seed: int = 0):
    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(radiographs(count, size=40, seed=seed)):
        Image.fromarray(image[0].numpy()).save(root / f"scan{i}.png")
    return root


def test_predict_prepares_the_films_with_the_models_normalisation(medad_root, tmp_path):
    model, _ = fitted(medad_root, tmp_path, "equalize")
    folder = write_folder(tmp_path / "scans")
    predict = tiny_trainer(tmp_path)
    data = FolderPredictDataModule(folder, image_size=32)
    out = predict.predict(model, data)
    images = torch.cat([batch["image"] for batch in out])
    raw = torch.stack([data.dataset[i]["image"] for i in range(len(data.dataset))])
    # The DataModule hands the films as decoded; the model's pre-processing prepares them.
    assert raw.dtype == torch.uint8
    assert torch.equal(images, to_model_range(IntensityNormalization("equalize").apply(raw)))
    scores = torch.cat([batch["score"] for batch in out])
    with torch.no_grad():
        assert torch.equal(scores, model.score(images))


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("method", ["equalize", "zscore", "percentile"])
def test_exported_scorer_normalises_inside_the_graph(method, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks()).eval()
    model.preprocessing = Preprocessing(method)
    raw = radiographs(5)
    with torch.no_grad():
        expected = model.infer(to_model_range(normalize_images(raw, method)))
    onnx = export_scorer(model, tmp_path / "s.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    scores, maps = session.run(None, {"images": to_model_range(raw).numpy()})
    assert abs(scores - expected["score"].numpy()).max() <= 1e-4
    assert abs(maps - expected["anomaly_map"].numpy()).max() <= 1e-4
    traced = torch.jit.load(str(export_scorer(model, tmp_path / "s.pt", format="torchscript")))
    scores, _ = traced(to_model_range(raw))
    assert (scores - expected["score"]).abs().max() <= 1e-4


def test_clahe_export_needs_the_callers_normalisation(tmp_path):
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks()).eval()
    model.preprocessing = Preprocessing("clahe(clip_limit=3.0)")
    with pytest.raises(
        ValueError,
        match=r"clahe\(clip_limit=3\.0, tile_grid=8\)-normalised images.*"
        r"input_normalized=True.*normalize_images",
    ):
        export_scorer(model, tmp_path / "s.pt", format="torchscript")
    raw = radiographs(3)
    record = model.preprocessing.normalization
    path = export_scorer(model, tmp_path / "s.pt", format="torchscript", input_normalized=True)
    scores, _ = torch.jit.load(str(path))(to_model_range(normalize_images(raw, record)))
    with torch.no_grad():
        expected = model.score(to_model_range(normalize_images(raw, record)))
    assert (scores - expected).abs().max() <= 1e-4
    assert AnomalyScorer.from_model(model, input_normalized=True).normalizer is None


def test_command_line_normalisation_reaches_the_checkpoint_and_export(tmp_path, capsys):
    root = write_medad_tree(tmp_path / "medad", size=32)
    args = [
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        "--model.max_iterations=2",
        "--model.evaluator.bootstrap_resamples=0",
        "--data=sagan_ad.MedADDataModule",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.split.val_fraction=0.25",
        "--data.normalization.method=clahe",
        "--data.augment.gamma=[0.7, 1.4]",
        "--trainer.val_check_interval=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    main(["fit", *args])
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    record = torch.load(checkpoint, weights_only=True)[PREPROCESSING_KEY]["normalization"]
    assert record == "clahe(clip_limit=2.0, tile_grid=8)"
    metrics = json.loads(next((tmp_path / "run").rglob("test/metrics.json")).read_text())
    assert "audit/AUROC_mean_intensity" in metrics["metrics"]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "s.pt")])
    assert exit_info.value.code == 2
    assert "--input_normalized" in capsys.readouterr().err
    main(
        [
            "export",
            "--ckpt_path",
            str(checkpoint),
            "--output",
            str(tmp_path / "s.pt"),
            "--input_normalized",
        ]
    )
    assert (tmp_path / "s.pt").is_file()
