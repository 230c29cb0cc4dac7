"""The scoring component of `sagan_ad.SAGAN`: how a restoration becomes a map and a score."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.evaluation.scoring import anomaly_map, map_to_score, score_region, smooth_map

Inference = Literal["deterministic", "reference"]


class Scorer(nn.Module):
    """Turns an image and its restoration ``G(x)`` into an anomaly map and an image score.

    The map is ``|x - G(x)| / 2`` in ``[0, 1]`` (of the residual low-passed by a Gaussian of
    ``residual_sigma`` pixels), smoothed by a Gaussian of ``map_sigma`` pixels; the score is the
    mean of the ``top_fraction`` largest map values (1: the paper's mean over all pixels) inside
    the map less a ``border`` at each edge. The paper's score is the default:
    ``residual_sigma=0``, ``border=0``.

    It is the one place to change the score: validation, test, predict, `sagan_ad.SAGAN.score`
    and the exported graph all run `sagan_ad.AnomalyScorer`, which calls `anomaly_map` and
    `score`; a subclass that overrides them (``anomaly_map(images, restored)``, ``score(maps)``)
    and is given to the model (``SAGAN(scorer=MyScorer())``) is what every stage and export
    computes.

    Args:
        map_sigma: Gaussian smoothing (pixels) of the anomaly map, 0 for none; the score is
            computed from the smoothed map.
        top_fraction: share of the largest map values averaged into the score, in ``(0, 1]``.
            Choose it on a labelled validation set, never on the test set.
        inference: ``"deterministic"`` (default) or ``"reference"``: the released code's random
            inference, which keeps the generator's training-time residual mask on while
            scoring (cannot be exported).
        residual_sigma: Gaussian low-pass (pixels) of the signed residual ``x - G(x)`` before
            its absolute value, 0 for none: removes what the generator cannot reproduce of a
            film's fine detail and noise, which follows the scanner more than the disease
            (`sagan_ad.evaluation.scoring.anomaly_map`).
        border: the share of the height and of the width at each edge left out of the score,
            in ``[0, 0.5)``: 0.15 scores the lung fields of a chest film rather than its edges
            (`sagan_ad.evaluation.scoring.score_region`); the map keeps its full size.

    Examples:
        >>> import torch
        >>> restored = torch.tensor([0.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
        >>> scores, maps = Scorer(top_fraction=0.5)(torch.zeros(1, 1, 2, 2), restored)
        >>> scores.tolist(), maps.shape
        ([0.75], torch.Size([1, 1, 2, 2]))
    """

    def __init__(
        self,
        map_sigma: float = 0.0,
        top_fraction: float = 1.0,
        inference: Inference = "deterministic",
        residual_sigma: float = 0.0,
        border: float = 0.0,
    ) -> None:
        super().__init__()
        if map_sigma < 0:
            raise InputError(f"scorer map_sigma={map_sigma}: must be >= 0")
        if not 0.0 < top_fraction <= 1.0:
            raise InputError(f"scorer top_fraction={top_fraction}: must be in (0, 1]")
        if inference not in ("deterministic", "reference"):
            raise InputError(
                f"scorer inference={inference!r}: choose 'deterministic' or 'reference'"
            )
        if residual_sigma < 0:
            raise InputError(f"scorer residual_sigma={residual_sigma}: must be >= 0")
        if not 0.0 <= border < 0.5:
            raise InputError(f"scorer border={border}: must be in [0, 0.5)")
        self.map_sigma = float(map_sigma)
        self.residual_sigma = float(residual_sigma)
        self.border = float(border)
        self.top_fraction = float(top_fraction)
        self.inference = inference

    def anomaly_map(self, images: Tensor, restored: Tensor) -> Tensor:
        """The (smoothed) anomaly map ``(B, 1, H, W)`` of ``images`` and their restorations."""
        return smooth_map(anomaly_map(images, restored, self.residual_sigma), self.map_sigma)

    def score(self, maps: Tensor) -> Tensor:
        """Image scores ``(B,)`` of anomaly maps."""
        return map_to_score(score_region(maps, self.border), self.top_fraction)

    def forward(self, images: Tensor, restored: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores, maps)`` of ``images`` and their restorations."""
        maps = self.anomaly_map(images, restored)
        return self.score(maps), maps

    def extra_repr(self) -> str:
        return (
            f"map_sigma={self.map_sigma}, top_fraction={self.top_fraction}, "
            f"inference={self.inference!r}, "
            f"residual_sigma={self.residual_sigma}, border={self.border}"
        )
