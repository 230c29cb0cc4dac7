"""Deployable scorers: the generator, the score and the anomaly map as ONNX or TorchScript.

The exported graph takes float images ``(B, C, S, S)`` in ``[-1, 1]`` (any batch size) and
returns ``(scores (B,), anomaly_maps (B, 1, S, S))``, exactly what `SAGAN.infer` computes with
SAGAN's own map and score: the patching of the image into the generator's grid is inside the
generator. Scoring is deterministic (the released code's random inference is not exported).
A model trained on intensity-normalised images (``data.normalization``) carries its
normalisation inside the graph, so the input stays the image as decoded; CLAHE has no graph
expression, and its export needs ``input_normalized=True``: the caller then normalises with
`sagan_ad.data.normalize_images` first.
ONNX export needs the ``export`` extra (``pip install 'sagan-ad[export]'``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sagan_ad.data.intensity import IntensityNormalization, IntensityNormalizer
from sagan_ad.generator import Generator
from sagan_ad.module import SAGAN
from sagan_ad.scoring import score_and_map

ExportFormat = Literal["onnx", "torchscript"]


class AnomalyScorer(nn.Module):
    """The inference part of a trained SAGAN: ``images -> (scores, anomaly_maps)``.

    Args:
        generator: the trained generator (its training-time residual mask is never applied).
        map_sigma: Gaussian smoothing of the map, as `SAGAN`'s ``map_sigma``.
        score_top_fraction: share of the largest map values averaged into the score, as
            `SAGAN`'s ``score_top_fraction``.
        normalizer: the intensity normalisation the model was trained with, applied to the
            input first (None: the input is used as given).

    Examples:
        >>> model = SAGAN(image_size=32, base_channels=4, critic_downsamples=5)
        >>> scores, maps = AnomalyScorer.from_model(model)(torch.zeros(2, 1, 32, 32))
        >>> scores.shape, maps.shape
        (torch.Size([2]), torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        generator: Generator,
        map_sigma: float = 0.0,
        score_top_fraction: float = 1.0,
        normalizer: IntensityNormalizer | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < score_top_fraction <= 1.0:
            raise ValueError(f"score_top_fraction={score_top_fraction}: must be in (0, 1]")
        self.generator = generator
        self.map_sigma = float(map_sigma)
        self.score_top_fraction = float(score_top_fraction)
        self.normalizer = normalizer

    @classmethod
    def from_model(cls, model: SAGAN, input_normalized: bool = False) -> AnomalyScorer:
        """The scorer of a `SAGAN` (which must score with its own map and score).

        The model's intensity normalisation (``model.hparams["normalization"]``) becomes the
        graph's first step; with ``input_normalized`` it is left out and the caller applies it
        (`sagan_ad.data.normalize_images`), which CLAHE requires.
        """
        if model.inference != "deterministic":
            raise ValueError(
                "only deterministic inference can be exported; the model has "
                f"inference={model.inference!r}"
            )
        if type(model).anomaly_map is not SAGAN.anomaly_map or type(model).score is not SAGAN.score:
            raise ValueError(
                f"{type(model).__name__} overrides anomaly_map or score; export a scorer module "
                "of your own that reproduces the override"
            )
        normalization = IntensityNormalization.parse(model.hparams.get("normalization"))
        if not (input_normalized or normalization.graph_expressible):
            raise ValueError(
                f"the model was trained on {normalization.spec()}-normalised images, which "
                "the exported graph cannot compute: export with input_normalized=True (command "
                "line: --input_normalized) and apply sagan_ad.data.normalize_images(images, "
                f"{normalization.spec()!r}) to the uint8 images before scoring"
            )
        normalizer = None
        if not input_normalized and normalization.method != "none":
            normalizer = IntensityNormalizer(normalization)
        return cls(model.inference_generator, model.map_sigma, model.score_top_fraction, normalizer)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.normalizer is not None:
            images = self.normalizer(images)
        restored = self.generator(images, residual_mask=False)
        return score_and_map(images, restored, self.map_sigma, self.score_top_fraction)


def export_scorer(
    model: SAGAN | AnomalyScorer,
    path: str | os.PathLike,
    format: ExportFormat = "onnx",
    batch_size: int = 2,
    input_normalized: bool = False,
) -> Path:
    """Write ``model``'s scorer to ``path`` as ONNX or TorchScript.

    The model is traced on a random batch of ``batch_size`` images of its size; the batch
    dimension stays dynamic. Inputs are named ``images``, outputs ``scores`` and
    ``anomaly_maps``.

    Args:
        model: a trained `SAGAN` (or an `AnomalyScorer`).
        path: output file (``.onnx`` or ``.pt`` by convention).
        format: ``"onnx"`` or ``"torchscript"``.
        batch_size: batch size of the tracing example.
        input_normalized: the caller applies the model's intensity normalisation (see
            `AnomalyScorer.from_model`).

    Returns:
        The written path.

    Examples:
        >>> model = SAGAN.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
        >>> export_scorer(model, "sagan.onnx")  # doctest: +SKIP
        >>> export_scorer(model, "sagan.pt", format="torchscript")  # doctest: +SKIP
    """
    scorer = (
        model
        if isinstance(model, AnomalyScorer)
        else AnomalyScorer.from_model(model, input_normalized)
    )
    # A copy, so that exporting leaves the caller's model on its device and in its mode.
    scorer = copy.deepcopy(scorer).cpu().eval()
    generator = scorer.generator
    example = torch.rand(
        batch_size, generator.in_channels, generator.image_size, generator.image_size
    )
    example = example * 2 - 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if format == "torchscript":
            with warnings.catch_warnings():
                # The traced shape checks compare the fixed channels and image size only; the
                # batch dimension stays free (the tests run a traced scorer on other batches).
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(scorer, example)
            torch.jit.save(traced, str(path))
        elif format == "onnx":
            torch.onnx.export(
                scorer,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["scores", "anomaly_maps"],
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                dynamo=True,
                verbose=False,
            )
        else:
            raise ValueError(f"format={format!r}: choose 'onnx' or 'torchscript'")
    return path
