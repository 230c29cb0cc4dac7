"""The quality study's scoring: the score variants, the matched subset, the trivial floors, and
every number of one run (AUROC with its interval, AP, per view, matched, correlations,
shortcuts)."""

from __future__ import annotations

import copy
import math

import torch
from quality_models import BestValidationWeights
from torch import Tensor, nn

from sagan_ad import SAGAN
from sagan_ad.data import image_statistics
from sagan_ad.evaluation.audit import spearman, statistic_names, trivial_auroc
from sagan_ad.evaluation.matching import match_pairs
from sagan_ad.evaluation.metrics import auroc, average_precision, bootstrap_auroc_ci
from sagan_ad.evaluation.scoring import anomaly_map, map_to_score, score_and_map, smooth_map
from sagan_ad.image_statistics import describe_statistic

SCORE_VARIANTS = (
    "mean",
    "top5_smoothed",
    "standardized",
    "lung_lowpass",
    "critic",
    "critic_features",
)


def to_float(images: Tensor) -> Tensor:
    """uint8 images to ``[-1, 1]`` floats, as the LightningModule sees them."""
    return images.float().div(127.5).sub(1.0)


def matched_subset(
    statistics: Tensor, labels: Tensor, view: list[str] | None, tolerance: float
) -> Tensor:
    """Indices of the matched subset of a test set from the trivial ``statistics`` of its films
    as decoded (`sagan_ad.evaluation.matching`): each abnormal image paired with an unused
    normal (of the same view, where views are given) whose every statistic lies within
    ``tolerance`` standard deviations."""
    groups = {"view": view} if view else None
    return match_pairs(statistics, labels, tolerance, groups).indices


def trivial_floors(statistics: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Each trivial statistic of the films as decoded as a score, in the direction that
    separates the classes better on these very labels (an optimistic floor), keyed by its row
    name."""
    statistics = statistics.double()
    floors = {}
    for column, name in enumerate(statistic_names(statistics.shape[1])):
        _, direction = trivial_auroc(statistics[:, column], labels)
        what = describe_statistic(name, direction or 1.0)
        floors[f"baseline: {what}"] = statistics[:, column] * (direction or 1.0)
    return floors


def score_variants(
    images: Tensor, restored: Tensor, critic: nn.Module | None = None
) -> dict[str, Tensor]:
    """The image scores compared in this study, each of shape ``(B,)``; the critic's two only
    with a ``critic``."""
    maps = anomaly_map(images, restored)

    def standardize(x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)

    scores = {
        "mean": maps.flatten(1).mean(1),
        "top5_smoothed": map_to_score(smooth_map(maps, 2.0), top_fraction=0.05),
        "standardized": (standardize(images) - standardize(restored)).abs().mean(1) / 2,
        "lung_lowpass": score_and_map(images, restored, residual_sigma=1.0, border=0.1)[0],
    }
    if critic is not None:
        with torch.no_grad():
            # What the critic thinks of the film itself: low = unlike the known normals.
            scores["critic"] = -critic(images).reshape(len(images), -1).mean(1)
            # f-AnoGAN's residual in the critic's feature space.
            features = critic.features(images) - critic.features(restored)
            scores["critic_features"] = features.pow(2).flatten(1).mean(1)
    return scores


def own_score(model: SAGAN, images: Tensor, restored: Tensor) -> Tensor:
    """``model.score`` from already restored images (its scorer's smoothing and top fraction)."""
    return model.scorer(images, restored)[0]


@torch.no_grad()
def restore_all(net: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([net(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def variants_of(model: SAGAN, images: Tensor, restored: Tensor, batch: int = 64) -> dict:
    """`score_variants` of a trained model, in batches (the critic's features are large)."""
    parts = [
        score_variants(images[i : i + batch], restored[i : i + batch], model.critic)
        for i in range(0, len(images), batch)
    ]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def evaluate(
    scores: Tensor,
    labels: Tensor,
    intensity: Tensor,
    view: list[str] | None,
    matched: Tensor,
    resamples: int,
) -> dict[str, float]:
    """All numbers of one run's test scores."""
    low, high = bootstrap_auroc_ci(scores, labels, num_resamples=resamples)
    out = {
        "auroc": auroc(scores, labels),
        "ci_low": low,
        "ci_high": high,
        "ap": average_precision(scores, labels),
        "matched_auroc": auroc(scores[matched], labels[matched]) if len(matched) else math.nan,
        "intensity_corr": float(torch.corrcoef(torch.stack([scores, intensity]))[0, 1]),
        "intensity_spearman": spearman(scores, intensity),
    }
    for name in sorted(set(view or [])):
        index = torch.tensor([v == name for v in view])
        if labels[index].unique().numel() == 2:
            out[f"auroc_{name}"] = auroc(scores[index], labels[index])
    return out


def best_checkpoint_numbers(
    model: SAGAN,
    best: BestValidationWeights,
    images: Tensor,
    labels: Tensor,
    intensity: Tensor,
    matched: Tensor,
) -> dict[str, float]:
    """Test AUROC, matched AUROC and correlation of the best validation's weights (the
    checkpoint ``sagan-ad fit`` tests), scored with the model's own settings."""
    chosen = copy.deepcopy(model)
    chosen.load_state_dict(best.state)
    chosen.eval()
    scores = own_score(chosen, images, restore_all(chosen.inference.restore, images)).cpu()
    return {
        "best_val_auroc": best.best_auroc,
        "best_iteration": float(best.iteration),
        "best_auroc": auroc(scores, labels),
        "best_matched_auroc": auroc(scores[matched], labels[matched]) if len(matched) else math.nan,
        "best_intensity_corr": float(
            torch.corrcoef(torch.stack([scores.double(), intensity]))[0, 1]
        ),
    }


def input_shortcuts(images: Tensor, labels: Tensor) -> dict[str, float]:
    """AUROC (better direction) of the mean and the standard deviation of the model's inputs."""
    stats = image_statistics(images)
    return {
        "input_mean_auroc": trivial_auroc(stats[:, 0], labels)[0],
        "input_contrast_auroc": trivial_auroc(stats[:, 1], labels)[0],
    }
