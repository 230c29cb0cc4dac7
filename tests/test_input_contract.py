"""The model and every exported scorer refuse the same inputs: wrong rank, channel count, size or
dtype raise an error naming what was expected; values outside [-1, 1] raise in PyTorch and give a
NaN score and map in the exports (a graph cannot raise on values), never a plausible number."""

from __future__ import annotations

import logging
import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import tiny_networks

import sagan_ad.export
from sagan_ad import SAGAN, export_scorer
from sagan_ad.cli import main
from sagan_ad.data.modules.datasets import to_model_range

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model() -> SAGAN:
    torch.manual_seed(0)
    return SAGAN(**tiny_networks()).eval()


@pytest.fixture(scope="module")
def valid() -> torch.Tensor:
    return torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1


@pytest.fixture(scope="module")
def torchscript(model, tmp_path_factory):
    path = export_scorer(model, tmp_path_factory.mktemp("ts") / "scorer.pt", format="torchscript")
    return torch.jit.load(str(path))


@pytest.fixture(scope="module")
def onnx_session(model, tmp_path_factory):
    path = export_scorer(model, tmp_path_factory.mktemp("onnx") / "scorer.onnx", format="onnx")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


BAD_SHAPES = {
    "wrong size": ((2, 1, 64, 64), r"(?s)for input: images.*index: 2 Got: 64 Expected: 32"),
    "wrong channel count": ((2, 3, 32, 32), r"(?s)for input: images.*index: 1 Got: 3 Expected: 1"),
    "missing batch dimension": ((1, 32, 32), r"Invalid rank for input: images Got: 3 Expected: 4"),
}
"""Bad input shapes, with what ONNX Runtime says about each."""


@pytest.mark.parametrize("case", list(BAD_SHAPES))
@pytest.mark.parametrize("entry", ["score", "anomaly_map", "infer", "forward"])
def test_pytorch_refuses_wrong_shapes_naming_expected_and_got(model, case, entry):
    shape, _ = BAD_SHAPES[case]
    call = {"forward": model, "score": model.score, "anomaly_map": model.anomaly_map}
    with pytest.raises(ValueError) as info:
        call.get(entry, model.infer)(torch.zeros(shape))
    assert str(info.value) == (
        f"images must have shape (B, 1, 32, 32) (the model's in_channels and image_size), got "
        f"{shape}"
    )


def test_pytorch_refuses_uint8_and_says_how_to_convert(model):
    images = torch.full((2, 1, 32, 32), 200, dtype=torch.uint8)
    with pytest.raises(
        ValueError, match=r"float in \[-1, 1\], got dtype torch\.uint8: .*to_model_range"
    ):
        model.score(images)
    assert model.score(to_model_range(images)).shape == (2,)


@pytest.mark.parametrize(
    ("convert", "expected"),
    [
        (
            lambda x: x.double(),
            r"^images must be torch\.float32 like the model's weights, got torch\.float64: "
            r"convert with images\.to\(torch\.float32\)$",
        ),
        (lambda x: x.half(), r"float32 like the model's weights, got torch\.float16"),
        (lambda x: x.bfloat16(), r"float32 like the model's weights, got torch\.bfloat16"),
        (lambda x: x.to_sparse(), r"dense tensor, got layout torch\.sparse_coo: .*to_dense\(\)"),
        (
            lambda x: torch.empty_like(x, device="meta"),
            r"images are on meta, the model on cpu: move them with images\.to\(model\.device\)",
        ),
    ],
    ids=["float64", "float16", "bfloat16", "sparse", "another device"],
)
@pytest.mark.parametrize("entry", ["score", "anomaly_map", "infer", "forward"])
def test_pytorch_refuses_images_its_weights_cannot_take(model, valid, convert, expected, entry):
    """torch's own messages ("expected scalar type Double but found Float", "Could not run
    'aten::aminmax' with arguments from the 'SparseCPU' backend") say neither what the model
    wants nor how to convert."""
    with pytest.raises(ValueError, match=expected):
        getattr(model, entry)(convert(valid))


def test_autocast_may_pass_images_of_its_dtype(model, valid):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score(valid.bfloat16())
    assert torch.allclose(scores.float(), model.score(valid), atol=0.02)


def test_every_scorer_scores_an_empty_batch_as_empty(model, torchscript, onnx_session):
    """The traced TorchScript graph indexed the first image and failed on an empty batch
    (select(): index 0 out of range), where the model and ONNX return empty results."""
    empty = torch.zeros(0, 1, 32, 32)
    results = {
        "pytorch": (model.score(empty), model.anomaly_map(empty)),
        "torchscript": torchscript(empty),
        "onnx": [torch.from_numpy(a) for a in onnx_session.run(None, {"images": empty.numpy()})],
    }
    for name, (scores, maps) in results.items():
        assert tuple(scores.shape) == (0,), name
        assert tuple(maps.shape) == (0, 1, 32, 32), name


def test_torchscript_refuses_other_floats_and_says_how_to_convert(torchscript, valid):
    with pytest.raises(torch.jit.Error, match=r"float32 in \[-1, 1\].*images\.float\(\)"):
        torchscript(valid.double())


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (lambda x: (x + 1) * 127.5, r"values from 0\.\d+ to 25\d\.\d+"),
        (lambda x: x * 1.5, r"values from -1\.\d+ to 1\.\d+"),
        (lambda x: x.index_fill(0, torch.tensor([1]), float("nan")), r"contain NaN"),
        (lambda x: x.index_fill(0, torch.tensor([1]), float("inf")), r"to inf"),
    ],
    ids=["0-255 floats", "1.5x range", "NaN", "inf"],
)
def test_pytorch_refuses_values_outside_the_range(model, valid, values, expected):
    with pytest.raises(ValueError, match=expected):
        model.score(values(valid))


def test_values_just_inside_the_tolerance_are_scored(model, valid):
    scores = model.score(valid.clamp(-1, 1) * 1.005)
    assert bool(((scores >= 0) & (scores <= 1)).all())


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_torchscript_refuses_wrong_shapes(torchscript, case):
    shape, _ = BAD_SHAPES[case]
    with pytest.raises(torch.jit.Error, match=r"images must have shape \(B, 1, 32, 32\), got "):
        torchscript(torch.zeros(shape))


def test_torchscript_refuses_uint8(torchscript):
    with pytest.raises(torch.jit.Error, match=r"float32 in \[-1, 1\].*to_model_range"):
        torchscript(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_onnx_refuses_wrong_shapes(onnx_session, case):
    shape, expected = BAD_SHAPES[case]
    with pytest.raises(Exception, match=expected) as info:
        onnx_session.run(None, {"images": np.zeros(shape, np.float32)})
    assert "INVALID_ARGUMENT" in str(info.value)


def test_onnx_refuses_uint8(onnx_session):
    with pytest.raises(
        Exception, match=r"Actual: \(tensor\(uint8\)\) , expected: \(tensor\(float\)\)"
    ):
        onnx_session.run(None, {"images": np.zeros((2, 1, 32, 32), np.uint8)})


def out_of_range_batch(valid: torch.Tensor) -> torch.Tensor:
    """Image 0 valid, image 1 in 0-255, image 2 with one NaN pixel."""
    batch = valid.clone()
    batch[1] = (batch[1] + 1) * 127.5
    batch[2, 0, 5, 5] = float("nan")
    return batch


def check_flagged(scores: np.ndarray, maps: np.ndarray, expected_first: torch.Tensor) -> None:
    assert abs(float(scores[0]) - float(expected_first)) <= 1e-4
    assert math.isnan(scores[1]) and math.isnan(scores[2])
    assert np.isnan(maps[1:]).all() and not np.isnan(maps[0]).any()


def test_exports_give_nan_for_images_outside_the_range(model, valid, torchscript, onnx_session):
    batch = out_of_range_batch(valid)
    with torch.no_grad():
        first = model.score(valid[:1])[0]
    scores, maps = torchscript(batch)
    check_flagged(scores.numpy(), maps.numpy(), first)
    scores, maps = onnx_session.run(["scores", "anomaly_maps"], {"images": batch.numpy()})
    check_flagged(scores, maps, first)


def test_exports_match_pytorch_on_valid_images(model, valid, torchscript, onnx_session):
    with torch.no_grad():
        expected = model.score(valid).numpy()
    assert np.abs(torchscript(valid)[0].numpy() - expected).max() <= 1e-4
    (scores,) = onnx_session.run(["scores"], {"images": valid.numpy()})
    assert np.abs(scores - expected).max() <= 1e-4


def test_onnx_export_is_one_self_contained_file(model, tmp_path, caplog, capfd):
    with caplog.at_level(logging.WARNING):
        path = export_scorer(model, tmp_path / "scorer.onnx", format="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scorer.onnx"]
    printed = capfd.readouterr()
    assert "torchvision" not in printed.out + printed.err + caplog.text
    # The file alone, copied elsewhere, still runs.
    copy = tmp_path / "elsewhere" / "copied.onnx"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    session = onnxruntime.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"images": np.zeros((1, 1, 32, 32), np.float32)})
    assert scores.shape == (1,)


def test_weights_over_the_protobuf_limit_go_to_a_sidecar_the_cli_names(
    model, valid, tmp_path, monkeypatch, capsys
):
    checkpoint = tmp_path / "model.ckpt"
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(checkpoint)
    monkeypatch.setattr(sagan_ad.export, "ONNX_INLINE_LIMIT", 1000)
    path = tmp_path / "out" / "big.onnx"
    main(["export", f"--ckpt_path={checkpoint}", f"--output={path}", "--allow_untrained"])
    assert f"are in {path}.data: keep the two files together" in capsys.readouterr().out
    assert sorted(p.name for p in path.parent.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert path.stat().st_size < (path.parent / "big.onnx.data").stat().st_size
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.score(valid).numpy()
    (scores,) = session.run(["scores"], {"images": valid.numpy()})
    assert np.abs(scores - expected).max() <= 1e-4
    # Exporting inline again over it removes the sidecar of the export it replaces.
    monkeypatch.undo()
    export_scorer(model, path, format="onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["big.onnx"]
