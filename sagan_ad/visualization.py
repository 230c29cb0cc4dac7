"""Pictures of results: input | restored | heat map panels with a colour bar, and ROC / PR plots.

Panels are drawn with OpenCV at any size (an overlay of a 2048 px radiograph stays 2048 px tall);
curves are drawn with matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor

from sagan_ad.atomic import atomic_path
from sagan_ad.metrics import auroc, average_precision, curve_counts, roc_points


def to_uint8_image(image: Tensor | np.ndarray) -> np.ndarray:
    """A model-range image ``(C, H, W)`` in ``[-1, 1]`` as ``uint8`` RGB ``(H, W, 3)``.

    Examples:
        >>> to_uint8_image(torch.zeros(1, 2, 2)).shape
        (2, 2, 3)
    """
    array = torch.as_tensor(image).detach().float().cpu()
    array = ((array + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array)


def colorize(values: Tensor | np.ndarray, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """A map ``(H, W)`` (or ``(1, H, W)``) coloured on ``[0, vmax]`` as ``uint8`` RGB ``(H, W, 3)``.

    Examples:
        >>> colorize(np.array([[0.0, 0.5], [1.0, 2.0]]), vmax=1.0).shape
        (2, 2, 3)
    """
    array = torch.as_tensor(values).detach().double().cpu().numpy()
    array = array[0] if array.ndim == 3 else array
    scaled = np.clip(array / max(vmax, 1e-12), 0.0, 1.0)
    return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_map(amap: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An anomaly map ``(H, W)`` or ``(1, H, W)`` resized (bilinear) to ``size = (height, width)``.

    Examples:
        >>> resize_map(np.ones((4, 4)), (8, 6)).shape
        (8, 6)
    """
    array = torch.as_tensor(amap).detach().float().cpu().numpy()
    array = array[0] if array.ndim == 3 else array
    return _resize(np.ascontiguousarray(array, dtype=np.float32), size)


def colour_bar(height: int, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """A vertical colour bar ``(height, W, 3)`` from 0 (bottom) to ``vmax`` (top), labelled.

    Examples:
        >>> colour_bar(64, 0.5).shape[0]
        64
    """
    bar_width = max(10, height // 24)
    font_scale = max(0.3, height / 700)
    thickness = max(1, round(height / 500))
    labels = [f"{vmax * k / 4:.3g}" for k in range(5)]
    (text_width, text_height), _ = cv2.getTextSize(
        max(labels, key=len), cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness
    )
    margin = max(4, bar_width // 2)
    panel = np.full((height, bar_width + text_width + 3 * margin, 3), 255, dtype=np.uint8)
    ramp = np.linspace(vmax, 0.0, height)[:, None].repeat(bar_width, axis=1)
    panel[:, margin : margin + bar_width] = colorize(ramp, vmax, cmap)
    for k, label in enumerate(labels):
        y = round((height - 1) * (1 - k / 4))
        y_text = min(max(y + text_height // 2, text_height), height - 1)
        cv2.putText(
            panel,
            label,
            (2 * margin + bar_width, y_text),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return panel


def comparison_panel(
    image: Tensor,
    restored: Tensor,
    amap: Tensor,
    size: tuple[int, int] | None = None,
    vmax: float | None = None,
    cmap: str = "inferno",
) -> np.ndarray:
    """``input | restored | heat map | colour bar`` side by side, as ``uint8`` RGB.

    Args:
        image: the model input ``(C, h, w)`` in ``[-1, 1]``.
        restored: the generator output, same shape.
        amap: the anomaly map ``(1, h, w)`` in ``[0, 1]``.
        size: ``(height, width)`` of each panel (the original image size); default ``(h, w)``.
        vmax: top of the colour scale; default the map's maximum (the bar shows the values).
        cmap: a matplotlib colour map name.

    Examples:
        >>> x = torch.zeros(1, 8, 8)
        >>> panel = comparison_panel(x, x, torch.zeros(1, 8, 8), size=(16, 12))
        >>> panel.shape[0], panel.shape[1] > 3 * 12
        (16, True)
    """
    size = size or tuple(image.shape[-2:])
    full_map = resize_map(amap, size)
    top = float(vmax) if vmax is not None else max(float(full_map.max()), 1e-6)
    panels = [
        _resize(to_uint8_image(image), size),
        _resize(to_uint8_image(restored), size),
        colorize(full_map, top, cmap),
        colour_bar(size[0], top, cmap),
    ]
    return np.concatenate(panels, axis=1)


def sample_grid(
    images: Tensor,
    restored: Tensor,
    maps: Tensor,
    vmax: float | None = None,
    cmap: str = "inferno",
) -> np.ndarray:
    """One row per sample (``input | restored | heat map``) sharing one colour scale and bar.

    Examples:
        >>> x = torch.zeros(3, 1, 8, 8)
        >>> sample_grid(x, x, torch.zeros(3, 1, 8, 8)).shape[0]  # 3 rows of 8 px, drawn x11
        264
    """
    top = float(vmax) if vmax is not None else max(float(maps.max()), 1e-6)
    rows = [
        np.concatenate(
            [to_uint8_image(x), to_uint8_image(r), colorize(m, top, cmap)],
            axis=1,
        )
        for x, r, m in zip(images, restored, maps, strict=True)
    ]
    grid = np.concatenate(rows, axis=0)
    # Tiny maps (32 px) get a readable bar: draw the grid at least 256 px tall.
    scale = max(1, math.ceil(256 / grid.shape[0]))
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return np.concatenate([grid, colour_bar(grid.shape[0], top, cmap)], axis=1)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a ``uint8`` RGB array as a PNG file."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def plot_roc_pr(
    scores: Tensor,
    labels: Tensor,
    roc_path: str | os.PathLike,
    pr_path: str | os.PathLike,
    title: str = "",
) -> None:
    """Write the ROC curve and the precision-recall curve of ``scores`` as two PNG files.

    Examples:
        >>> plot_roc_pr(torch.rand(10), torch.arange(10) % 2, "roc.png", "pr.png")  # doctest: +SKIP
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    labels = torch.as_tensor(labels).long()
    fpr, tpr, _ = roc_points(scores, labels)
    _, tps, fps = curve_counts(scores, labels)
    precision = torch.cat([torch.ones(1, dtype=torch.float64), tps / (tps + fps)])
    recall = torch.cat([torch.zeros(1, dtype=torch.float64), tps / tps[-1]])
    prevalence = float(labels.double().mean())

    figure = Figure(figsize=(4.5, 4.5), dpi=120)
    axes = figure.subplots()
    axes.plot(fpr.numpy(), tpr.numpy(), label=f"AUROC = {auroc(scores, labels):.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    axes.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=f"ROC {title}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    figure.tight_layout()
    with atomic_path(roc_path) as tmp:
        figure.savefig(tmp)

    figure = Figure(figsize=(4.5, 4.5), dpi=120)
    axes = figure.subplots()
    axes.step(
        recall.numpy(),
        precision.numpy(),
        where="post",
        label=f"AP = {average_precision(scores, labels):.3f}",
    )
    axes.axhline(prevalence, linestyle="--", color="grey", linewidth=0.8, label="chance")
    axes.set(xlabel="recall (sensitivity)", ylabel="precision", title=f"Precision-recall {title}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower left")
    figure.tight_layout()
    with atomic_path(pr_path) as tmp:
        figure.savefig(tmp)
