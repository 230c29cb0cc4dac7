"""The quality study's scoring: the score variants, the intensity-matched subset, and every
number of one run (AUROC with its interval, AP, per view, matched, correlations, shortcuts)."""

from __future__ import annotations

import copy
import math

import torch
from quality_models import BestValidationWeights
from torch import Tensor, nn

from sagan_ad import SAGAN
from sagan_ad.data import image_statistics
from sagan_ad.evaluation.audit import spearman, trivial_auroc
from sagan_ad.evaluation.metrics import auroc, average_precision, bootstrap_auroc_ci
from sagan_ad.evaluation.scoring import anomaly_map, map_to_score, smooth_map

SCORE_VARIANTS = ("mean", "top5_smoothed", "standardized")


def to_float(images: Tensor) -> Tensor:
    """uint8 images to ``[-1, 1]`` floats, as the LightningModule sees them."""
    return images.float().div(127.5).sub(1.0)


def matched_subset(
    intensity: Tensor, labels: Tensor, view: list[str] | None, tolerance: float
) -> Tensor:
    """Indices of abnormal images each paired with an unused normal of the same view whose mean
    intensity is within ``tolerance`` (greedy, closest first; unpaired abnormals are dropped)."""
    view = view or ["all"] * len(labels)
    used: set[int] = set()
    keep: list[int] = []
    normals = [i for i in range(len(labels)) if labels[i] == 0]
    for i in sorted(range(len(labels)), key=lambda k: float(intensity[k])):
        if labels[i] != 1:
            continue
        candidates = [
            j
            for j in normals
            if j not in used
            and view[j] == view[i]
            and abs(float(intensity[j] - intensity[i])) <= tolerance
        ]
        if candidates:
            j = min(candidates, key=lambda k: abs(float(intensity[k] - intensity[i])))
            used.add(j)
            keep += [i, j]
    return torch.tensor(sorted(keep), dtype=torch.long)


def score_variants(images: Tensor, restored: Tensor) -> dict[str, Tensor]:
    """The three image scores compared in this study, each of shape ``(B,)``."""
    maps = anomaly_map(images, restored)

    def standardize(x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)

    return {
        "mean": maps.flatten(1).mean(1),
        "top5_smoothed": map_to_score(smooth_map(maps, 2.0), top_fraction=0.05),
        "standardized": (standardize(images) - standardize(restored)).abs().mean(1) / 2,
    }


def own_score(model: SAGAN, images: Tensor, restored: Tensor) -> Tensor:
    """``model.score`` from already restored images (its scorer's smoothing and top fraction)."""
    return model.scorer(images, restored)[0]


@torch.no_grad()
def restore_all(net: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([net(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


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
    scores = own_score(chosen, images, restore_all(chosen.restore, images)).cpu()
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
