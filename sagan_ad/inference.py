"""The one inference path of a trained SAGAN: images -> generator -> scorer -> scores and maps.

Validation, test, predict, `sagan_ad.SAGAN.score` and export all run `AnomalyScorer`: the model
builds one over its inference generator and its `sagan_ad.Scorer` (`sagan_ad.SAGAN.inference`),
and `sagan_ad.export_scorer` traces the same module. The score therefore changes in one place, a
`sagan_ad.Scorer` subclass (``anomaly_map(images, restored)``, ``score(maps)``); a SAGAN subclass
that overrides the model's own scoring methods is refused when it is defined.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.evaluation.inputs import images_in_range
from sagan_ad.evaluation.scorer import Scorer
from sagan_ad.networks.generator import Generator

SCORING_METHODS = ("anomaly_map", "score", "infer")
"""The `sagan_ad.SAGAN` methods that read the inference path; a subclass changes the score on a
`sagan_ad.Scorer` subclass instead."""


def refuse_scoring_overrides(cls: type, base: type) -> None:
    """Refuse a subclass of ``base`` that overrides one of `SCORING_METHODS`: validation, test,
    predict and export run `AnomalyScorer`, which would not see the override."""
    overridden = [
        name for name in SCORING_METHODS if getattr(cls, name, None) is not getattr(base, name)
    ]
    if overridden:
        raise TypeError(
            f"{cls.__name__} overrides {', '.join(overridden)} of {base.__name__}: change the "
            "score on a sagan_ad.Scorer subclass instead (anomaly_map(images, restored), "
            "score(maps)) and build the model with scorer=YourScorer(); validation, test, "
            "predict and export all score through it (docs/evaluation.md, 'Changing the score')"
        )


class AnomalyScorer(nn.Module):
    """The inference of a trained SAGAN: ``images -> (scores, anomaly_maps)``.

    `infer` restores images in the model's range ``[-1, 1]`` with ``generator`` and turns image
    and restoration into a map and a score with ``scorer``. `forward` is what export traces: it
    first applies ``normalizer`` (the model's intensity normalisation, for images as decoded) and
    gives NaN, not a number that looks valid, for an image outside ``[-1, 1]`` (a graph cannot
    raise on values).

    Args:
        generator: the trained generator (the weight average with ``generator_ema``).
        scorer: the map and score (default: the paper's `sagan_ad.Scorer`).
        normalizer: the intensity normalisation `forward` applies first (None: none).

    Examples:
        >>> from sagan_ad.module import SAGAN
        >>> from sagan_ad.networks.critic import Critic
        >>> model = SAGAN(Generator(image_size=32, base_channels=4), Critic(1, 4, 5))
        >>> scores, maps = AnomalyScorer.from_model(model)(torch.zeros(2, 1, 32, 32))
        >>> scores.shape, maps.shape
        (torch.Size([2]), torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        generator: Generator,
        scorer: Scorer | None = None,
        normalizer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.scorer = scorer if scorer is not None else Scorer()
        self.normalizer = normalizer

    @classmethod
    def from_model(cls, model: nn.Module, input_normalized: bool = False) -> AnomalyScorer:
        """The scorer of a `sagan_ad.SAGAN` to export: its inference path (sharing the model's
        modules), with the model's intensity normalisation as the first step of `forward` unless
        ``input_normalized`` (the caller then applies it, as CLAHE requires:
        `sagan_ad.data.normalize_images`)."""
        inference: AnomalyScorer = model.inference
        if inference.scorer.inference != "deterministic":
            raise InputError(
                "only deterministic inference can be exported; the model has "
                f"inference={inference.scorer.inference!r}"
            )
        normalizer = None if input_normalized else model.preprocessing.graph()
        return cls(inference.generator, inference.scorer, normalizer)

    def restore(self, images: Tensor) -> Tensor:
        """``G(images)``: the normal-looking restoration (with the training-time residual mask
        only under the scorer's ``inference="reference"``, the released code's inference)."""
        return self.generator(images, residual_mask=self.scorer.inference == "reference")

    def infer(self, images: Tensor, with_restored: bool = False) -> dict[str, Tensor]:
        """Scores ``(B,)`` and anomaly maps ``(B, 1, H, W)`` of images in ``[-1, 1]``, plus the
        restorations under ``"restored"`` on request."""
        restored = self.restore(images)
        # The scorer called whole: a subclass may override its forward, not only its parts.
        scores, maps = self.scorer(images, restored)
        out = {"score": scores, "anomaly_map": maps}
        return {**out, "restored": restored} if with_restored else out

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Scores and maps of ``images`` as decoded; NaN for images outside ``[-1, 1]``."""
        # Judged on the input as given: the normalised image is the graph's own business.
        valid = images_in_range(images)
        if self.normalizer is not None:
            images = self.normalizer(images)
        out = self.infer(images)
        scores, maps = out["score"], out["anomaly_map"]
        scores = torch.where(valid, scores, torch.full_like(scores, float("nan")))
        maps = torch.where(valid.view(-1, 1, 1, 1), maps, torch.full_like(maps, float("nan")))
        return scores, maps
