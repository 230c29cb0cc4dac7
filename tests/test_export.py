"""Exported scorers (ONNX, TorchScript) reproduce the PyTorch scores and maps."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_networks

from sagan_ad import SAGAN, AnomalyScorer, Scorer, export_scorer


@pytest.fixture(
    scope="module",
    params=[(1.0, 0.0, 0.0), (0.05, 0.0, 0.0), (0.2, 1.0, 0.15)],
    ids=["mean", "top5", "lowpass_border"],
)
def model(request) -> SAGAN:
    torch.manual_seed(0)
    # Smoothing on, so the exported graph includes it; both score reductions; and the residual's
    # low-pass with the border left out of the score.
    top_fraction, residual_sigma, border = request.param
    scorer = Scorer(
        map_sigma=1.0, top_fraction=top_fraction, residual_sigma=residual_sigma, border=border
    )
    return SAGAN(**tiny_networks(), scorer=scorer).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    # A batch size other than the tracing example's (2): the batch dimension must stay dynamic.
    return torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def reference(model: SAGAN, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model.infer(images)
    return out["score"], out["anomaly_map"]


def test_onnx_scorer_matches_pytorch(model, batch, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_scorer(model, tmp_path / "scorer.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    scores, maps = session.run(["scores", "anomaly_maps"], {"images": batch.numpy()})
    expected_scores, expected_maps = reference(model, batch)
    assert abs(scores - expected_scores.numpy()).max() <= 1e-4
    assert abs(maps - expected_maps.numpy()).max() <= 1e-4


def test_torchscript_scorer_matches_pytorch(model, batch, tmp_path):
    path = export_scorer(model, tmp_path / "scorer.pt", format="torchscript")
    scores, maps = torch.jit.load(str(path))(batch)
    expected_scores, expected_maps = reference(model, batch)
    assert (scores - expected_scores).abs().max() <= 1e-4
    assert (maps - expected_maps).abs().max() <= 1e-4


def test_export_leaves_the_model_as_it_was(model, tmp_path):
    model.train()
    export_scorer(model, tmp_path / "scorer.pt", format="torchscript")
    assert model.training and model.generator.training
    model.eval()


def test_random_inference_is_not_exported_and_scores_change_on_the_scorer_only(tmp_path):
    with pytest.raises(ValueError, match="deterministic"):
        AnomalyScorer.from_model(SAGAN(**tiny_networks(), scorer=Scorer(inference="reference")))
    # A model subclass's own score would bypass validation, predict and export: refused at once.
    with pytest.raises(TypeError, match=r"TopScore overrides score of SAGAN: .*Scorer subclass"):

        class TopScore(SAGAN):
            def score(self, images: torch.Tensor) -> torch.Tensor:
                return self.anomaly_map(images).flatten(1).max(dim=1).values

    with pytest.raises(ValueError, match="format"):
        export_scorer(SAGAN(**tiny_networks()), tmp_path / "x.bin", format="tflite")


def test_the_weight_averaged_generator_is_the_one_exported():
    model = SAGAN(**tiny_networks(), generator_ema=0.99)
    with torch.no_grad():
        for p in model.generator_ema.parameters():
            p.mul_(0.5)
    assert AnomalyScorer.from_model(model).generator is model.generator_ema


def test_the_border_and_the_residual_low_pass_change_what_scores():
    images = torch.zeros(1, 1, 20, 20)
    edge = images.clone()
    edge[..., :2, :] = 1.0  # a difference in the top rows only
    whole = Scorer()(images, edge)[0]
    inner = Scorer(border=0.15)(images, edge)[0]
    assert whole.item() > 0 and inner.item() == 0.0
    checker = (torch.arange(400).view(1, 1, 20, 20) % 2 * 2 - 1).float() * 0.5
    assert Scorer(residual_sigma=2.0)(checker, torch.zeros_like(checker))[0].item() < 0.05
    assert Scorer()(checker, torch.zeros_like(checker))[0].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"scorer border=0\.5: must be in \[0, 0\.5\)"):
        Scorer(border=0.5)
    with pytest.raises(ValueError, match=r"scorer residual_sigma=-1: must be >= 0"):
        Scorer(residual_sigma=-1)
