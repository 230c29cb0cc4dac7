"""Pixel-level localization metrics of anomaly maps: pixel AUROC, AUPRO and the pointing game.

The maps of `SAGAN` lie in ``[0, 1]``; pixel AUROC and AUPRO are computed at ``num_thresholds``
evenly spaced thresholds on that range, from histograms whose counts add up across batches and
processes (the metrics are DDP-correct and use constant memory). ``PRO`` is the per-region overlap
of Bergmann et al. (MVTec AD): the mean, over connected ground-truth regions, of the fraction of
the region above the threshold; AUPRO is the area under PRO against the false-positive rate up to
``max_fpr``, divided by ``max_fpr`` (so a perfect map scores 1).
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from sagan_ad.errors import InputError
from sagan_ad.evaluation.metrics import SingleClassWarning


def _bins(maps: Tensor, num_thresholds: int) -> Tensor:
    """Index of the highest threshold ``k / (num_thresholds - 1)`` that each value reaches."""
    scaled = maps.detach().double().clamp(0.0, 1.0) * (num_thresholds - 1)
    return scaled.add_(1e-9).floor_().long()


def _at_or_above(histogram: Tensor) -> Tensor:
    """Counts of values at or above each threshold, from per-bin counts (last axis)."""
    return histogram.flip(-1).cumsum(-1).flip(-1)


def label_regions(masks: Tensor) -> tuple[Tensor, int]:
    """Connected regions (8-connectivity) of binary masks ``(B, 1, H, W)``.

    Returns:
        ``(ids, count)``: per pixel the region id in ``1..count`` across the whole batch (0 for
        background), and the number of regions.

    Examples:
        >>> m = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
        >>> m[0, 0, 0, 0] = m[0, 0, 3, 3] = True
        >>> label_regions(m)[1]
        2
    """
    flat = masks.detach().reshape(-1, *masks.shape[-2:]).cpu().numpy().astype(np.uint8)
    ids = np.zeros(flat.shape, dtype=np.int64)
    count = 0
    for i, mask in enumerate(flat):
        n, labels = cv2.connectedComponents(mask, connectivity=8)
        ids[i] = np.where(labels > 0, labels + count, 0)
        count += n - 1
    return torch.from_numpy(ids).reshape(masks.shape).to(masks.device), count


class PixelMetrics(Metric):
    """Pixel AUROC and AUPRO of anomaly maps ``(B, 1, H, W)`` in ``[0, 1]`` against binary masks.

    Args:
        num_thresholds: thresholds evenly spaced on ``[0, 1]``.
        max_fpr: upper false-positive-rate limit of AUPRO (0.3 is the MVTec AD convention).

    Examples:
        >>> masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
        >>> masks[0, :, 2:4, 2:4] = True
        >>> metric = PixelMetrics()
        >>> metric.update(masks.float() * 0.5, masks)
        >>> {k: round(v, 4) for k, v in metric.compute().items()}
        {'pixel_AUROC': 1.0, 'AUPRO': 1.0}
    """

    full_state_update = False

    def __init__(self, num_thresholds: int = 1001, max_fpr: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_thresholds < 2:
            raise InputError(f"num_thresholds={num_thresholds}: must be >= 2")
        if not 0.0 < max_fpr <= 1.0:
            raise InputError(f"max_fpr={max_fpr}: must be in (0, 1]")
        self.num_thresholds = num_thresholds
        self.max_fpr = max_fpr
        zeros = torch.zeros(num_thresholds, dtype=torch.float64)
        self.add_state("negatives", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("positives", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("overlap", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state(
            "regions", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, maps: Tensor, masks: Tensor) -> None:
        if maps.shape != masks.shape:
            raise InputError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
        t = self.num_thresholds
        bins = _bins(maps, t).flatten()
        truth = masks.flatten().bool()
        self.negatives += torch.bincount(bins[~truth], minlength=t).double()
        self.positives += torch.bincount(bins[truth], minlength=t).double()
        ids, count = label_regions(masks.bool())
        if count:
            ids = ids.flatten()
            inside = ids > 0
            region = ids[inside] - 1
            per_region = torch.bincount(region * t + bins[inside], minlength=count * t)
            per_region = per_region.reshape(count, t).double()
            sizes = per_region.sum(dim=1, keepdim=True)
            self.overlap += (_at_or_above(per_region) / sizes).sum(dim=0)
            self.regions += count

    def compute(self) -> dict[str, float]:
        negatives, positives = self.negatives.sum(), self.positives.sum()
        if negatives == 0 or positives == 0:
            warnings.warn(
                "pixel AUROC and AUPRO need anomalous and normal pixels: NaN",
                SingleClassWarning,
                stacklevel=2,
            )
            return {"pixel_AUROC": math.nan, "AUPRO": math.nan}
        zero = torch.zeros(1, dtype=torch.float64, device=negatives.device)
        # Thresholds from high to low, starting at (0, 0): FPR and TPR/PRO rise together.
        fpr = torch.cat([zero, _at_or_above(self.negatives).flip(0) / negatives])
        tpr = torch.cat([zero, _at_or_above(self.positives).flip(0) / positives])
        pro = torch.cat([zero, self.overlap.flip(0) / self.regions])
        pixel_auroc = torch.trapezoid(tpr, fpr)
        return {"pixel_AUROC": float(pixel_auroc), "AUPRO": _area_up_to(fpr, pro, self.max_fpr)}


def _area_up_to(x: Tensor, y: Tensor, limit: float) -> float:
    """Area under the increasing curve ``y(x)`` from 0 to ``limit``, divided by ``limit``."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    last = int(keep.sum())
    if last < x.numel() and xs[-1] < limit:
        # Close the curve at exactly `limit` by linear interpolation.
        x0, x1, y0, y1 = x[last - 1], x[last], y[last - 1], y[last]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs = torch.cat([xs, xs.new_tensor([limit])])
        ys = torch.cat([ys, y_limit.reshape(1)])
    return float(torch.trapezoid(ys, xs) / limit)


def map_peaks(maps: Tensor, original_sizes: list[tuple[int, int]] | None = None) -> Tensor:
    """Location ``(x, y)`` of each map's maximum, in the original image's pixels.

    A map of ``h x w`` pixels covers an original image of ``H x W``; the peak pixel's centre is
    scaled to that frame (``x = (j + 0.5) * W / w``), which is where a resized map would peak.

    Examples:
        >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 1, 2] = 1.0
        >>> map_peaks(m, [(40, 80)]).tolist()
        [[50.0, 15.0]]
    """
    b, _, h, w = maps.shape
    flat = maps.detach().reshape(b, -1).argmax(dim=1)
    rows, cols = (flat // w).double(), (flat % w).double()
    sizes = torch.tensor(original_sizes or [(h, w)] * b, dtype=torch.float64).to(maps.device)
    return torch.stack([(cols + 0.5) * sizes[:, 1] / w, (rows + 0.5) * sizes[:, 0] / h], dim=1)


def pointing_game_hits(peaks: Tensor, boxes: list[np.ndarray]) -> Tensor:
    """Whether each peak ``(x, y)`` falls inside one of its image's boxes ``(k, 4)``
    (``x0, y0, x1, y1``, edges included). Images without boxes give ``-1`` (not counted).

    Examples:
        >>> pointing_game_hits(torch.tensor([[5.0, 5.0], [9.0, 1.0]]),
        ...                    [np.array([[0, 0, 6, 6]]), np.array([[0, 0, 6, 6]])]).tolist()
        [1, 0]
    """
    hits = []
    for (x, y), image_boxes in zip(peaks.tolist(), boxes, strict=True):
        image_boxes = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
        if len(image_boxes) == 0:
            hits.append(-1)
            continue
        inside = (
            (image_boxes[:, 0] <= x)
            & (x <= image_boxes[:, 2])
            & (image_boxes[:, 1] <= y)
            & (y <= image_boxes[:, 3])
        )
        hits.append(int(inside.any()))
    return torch.tensor(hits, dtype=torch.long)


class PointingGame(Metric):
    """Fraction of images with boxes whose anomaly-map maximum lies inside a box.

    Examples:
        >>> metric = PointingGame()
        >>> metric.update(torch.tensor([1, 0, -1]))
        >>> float(metric.compute())
        0.5
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("hits", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hits: Tensor) -> None:
        counted = hits >= 0
        self.hits += hits[counted].sum().double()
        self.total += counted.sum().double()

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return self.hits / self.total
