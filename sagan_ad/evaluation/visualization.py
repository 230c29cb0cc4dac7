"""Pictures of results: heat-map overlays on the original film, validation sample grids, and
ROC / PR plots.

Overlays are drawn at the film's own resolution (an overlay of a 2048 px radiograph stays 2048 px
tall) with OpenCV and Pillow; curves are drawn with matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import functools
import math
import os

import cv2
import numpy as np
import torch
from matplotlib import colormaps, font_manager
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from sagan_ad.atomic import atomic_path
from sagan_ad.errors import FileError, InputError
from sagan_ad.evaluation.metrics import auroc, average_precision, curve_counts, roc_points
from sagan_ad.evaluation.report import operating_point


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


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # DejaVu Sans ships with matplotlib and covers accented and non-Latin file names.
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _draw_text(
    canvas: np.ndarray,
    xy: tuple[int, int],
    lines: list[tuple[str, tuple[int, int, int]]],
    size: int,
) -> None:
    """Draw ``(text, rgb)`` lines in place on a ``uint8`` RGB canvas, one line every 1.3 size."""
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    x, y = xy
    for text, colour in lines:
        draw.text((x, y), text, fill=colour, font=_font(size))
        y += round(1.3 * size)
    canvas[...] = np.asarray(picture)


def _fit_text(text: str, width: int, size: int) -> str:
    """``text``, shortened in the middle with an ellipsis until it fits ``width`` pixels."""
    font = _font(size)
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 4 and font.getlength(f"{text[: keep // 2]}…{text[-(keep - keep // 2) :]}") > width:
        keep -= 1
    return f"{text[: keep // 2]}…{text[-(keep - keep // 2) :]}"


def colour_bar(height: int, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """A vertical colour bar ``(height, W, 3)`` from 0 (bottom) to ``vmax`` (top), labelled.

    Examples:
        >>> colour_bar(64, 0.5).shape[0]
        64
    """
    bar_width = max(10, height // 24)
    size = max(10, round(height / 40))
    labels = [f"{vmax * k / 4:.3g}" for k in range(5)]
    text_width = max(int(_font(size).getlength(label)) for label in labels)
    margin = max(4, bar_width // 2)
    panel = np.full((height, bar_width + text_width + 3 * margin, 3), 255, dtype=np.uint8)
    ramp = np.linspace(vmax, 0.0, height)[:, None].repeat(bar_width, axis=1)
    panel[:, margin : margin + bar_width] = colorize(ramp, vmax, cmap)
    for k, label in enumerate(labels):
        y = round((height - 1) * (1 - k / 4))
        top = min(max(y - size // 2 - 2, 0), max(height - size - 4, 0))
        _draw_text(panel, (2 * margin + bar_width, top), [(label, (0, 0, 0))], size)
    return panel


def film_to_rgb(array: np.ndarray) -> np.ndarray:
    """A decoded image file (`sagan_ad.data.decode_image`) as ``uint8`` RGB ``(H, W, 3)``.

    8-bit values are kept; 16-bit values are scaled by the bit depth they use (a 12-bit film
    stored in 16 bits by 4095, not 65535, so it is not drawn nearly black); floats (DICOM after
    its display pipeline) are in ``[0, 1]``.

    Examples:
        >>> film_to_rgb(np.full((2, 3), 4095, np.uint16))[0, 0].tolist()
        [255, 255, 255]
    """
    if array.dtype == np.uint8:
        out = array
    elif np.issubdtype(array.dtype, np.integer):
        top = max(int(array.max()), 1)
        depth = max(8, math.ceil(math.log2(top + 1)))
        out = np.round(array.astype(np.float64) * 255.0 / (2**depth - 1)).astype(np.uint8)
    else:
        out = np.round(np.clip(np.nan_to_num(array.astype(np.float64)), 0, 1) * 255).astype(
            np.uint8
        )
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out[..., :3])


OPERATING_POINT_COLOUR = "crimson"
"""Colour of the operating-point marker on the ROC and PR plots."""

OVERLAY_STYLES = ("blend", "panels")
"""Overlay layouts: the heat map blended on the film, or film | restored | heat map panels."""

MIN_OVERLAY_SIDE = 512
"""Films whose longer side is shorter are enlarged by a whole factor (nearest neighbour, every
film pixel stays a block of identical pixels) so that the text on the overlay stays legible."""


def overlay_picture(
    film: np.ndarray,
    amap: Tensor | np.ndarray,
    title: str,
    score: float,
    threshold: float,
    vmax: float | None = None,
    style: str = "blend",
    restored: Tensor | None = None,
    alpha: float = 0.6,
    cmap: str = "inferno",
) -> np.ndarray:
    """The heat map of one image drawn on its film at the film's own resolution, as ``uint8`` RGB.

    The map (model resolution) is resized up to the film, never the film down. A header above
    the picture states the file (``title``), the score, the prediction against the threshold,
    and the colour scale; a labelled colour bar stands on the right.

    Args:
        film: the original image, ``uint8`` RGB ``(H, W, 3)`` (see `film_to_rgb`).
        amap: the anomaly map ``(1, h, w)`` or ``(h, w)`` in ``[0, 1]``.
        title: the image's name (its path relative to the predicted folder).
        score: the image's anomaly score.
        threshold: the operating threshold (NaN: the model was never validated).
        vmax: top of the colour scale, the same for every image; ``None``: this map's maximum.
        style: ``"blend"`` (the map over the film, more opaque where it is higher) or
            ``"panels"`` (film | restored | heat map side by side).
        restored: the generator output ``(C, h, w)`` in ``[-1, 1]``; needed for ``"panels"``.
        alpha: opacity of the map where it reaches the top of the scale (``"blend"``).
        cmap: a matplotlib colour map name.

    Examples:
        >>> film = np.zeros((600, 500, 3), np.uint8)
        >>> picture = overlay_picture(film, torch.rand(1, 32, 32), "a.png", 0.4, 0.3)
        >>> picture.shape[1] > 500 and picture.shape[0] > 600
        True
    """
    if style not in OVERLAY_STYLES:
        raise InputError(f"overlay style {style!r}: choose one of {OVERLAY_STYLES}")
    if style == "panels" and restored is None:
        raise InputError("the 'panels' overlay style needs the restored image")
    factor = max(1, math.ceil(MIN_OVERLAY_SIDE / max(film.shape[:2])))
    if factor > 1:
        film = np.repeat(np.repeat(film, factor, axis=0), factor, axis=1)
    size = (film.shape[0], film.shape[1])
    values = resize_map(amap, size)
    top = float(vmax) if vmax is not None else max(float(values.max()), 1e-6)
    heat = colorize(values, top, cmap)
    if style == "blend":
        weight = alpha * np.clip(values / top, 0.0, 1.0)[..., None]
        picture = np.round(film * (1.0 - weight) + heat * weight).astype(np.uint8)
        how = f"heat map |x - G(x)|/2 blended on the film (opacity up to {alpha:g} at the top)"
    else:
        restored_rgb = cv2.resize(
            to_uint8_image(restored), (size[1], size[0]), interpolation=cv2.INTER_LINEAR
        )
        picture = np.concatenate([film, restored_rgb, heat], axis=1)
        how = "film | restored (model resolution, enlarged) | heat map |x - G(x)|/2"
    picture = np.concatenate([picture, colour_bar(size[0], top, cmap)], axis=1)

    scale = "per-image maximum" if vmax is None else "fixed"
    if math.isnan(threshold):
        verdict = (f"score {score:.4f}: no threshold (model never validated)", (90, 90, 90))
    elif score >= threshold:
        verdict = (f"score {score:.4f} ≥ threshold {threshold:.4f}: ABNORMAL", (190, 0, 0))
    else:
        verdict = (f"score {score:.4f} < threshold {threshold:.4f}: normal", (0, 110, 0))
    width = picture.shape[1]
    text_size = max(12, round(width / 55))
    margin = text_size // 2
    lines = [
        (_fit_text(title, width - 2 * margin, text_size), (0, 0, 0)),
        (_fit_text(verdict[0], width - 2 * margin, text_size), verdict[1]),
        (_fit_text(how, width - 2 * margin, text_size), (0, 0, 0)),
        (f"colour scale 0 to {top:.3g} ({scale})", (0, 0, 0)),
    ]
    header = np.full((2 * margin + round(1.3 * text_size) * len(lines), width, 3), 255, np.uint8)
    _draw_text(header, (margin, margin), lines, text_size)
    return np.concatenate([header, picture], axis=0)


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
            raise FileError(f"could not write {path}")


def _operating_point(scores: Tensor, labels: Tensor, threshold: float | None) -> dict | None:
    if threshold is None or not math.isfinite(threshold):
        return None
    return operating_point(scores, labels, threshold)


def roc_figure(
    scores: Tensor, labels: Tensor, title: str = "", threshold: float | None = None
) -> Figure:
    """The ROC curve, the chance line and, with a finite ``threshold``, the operating point
    (``score >= threshold`` predicted abnormal); the legend sits below the axes.

    Examples:
        >>> figure = roc_figure(torch.rand(10), torch.arange(10) % 2, threshold=0.5)
        >>> len(figure.axes[0].lines)
        3
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    labels = torch.as_tensor(labels).long()
    fpr, tpr, _ = roc_points(scores, labels)
    figure = Figure(figsize=(4.5, 5.2), dpi=120, layout="constrained")
    axes = figure.subplots()
    axes.plot(fpr.numpy(), tpr.numpy(), label=f"ROC, AUROC = {auroc(scores, labels):.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    point = _operating_point(scores, labels, threshold)
    if point is not None:
        sensitivity, specificity = point["sensitivity@threshold"], point["specificity@threshold"]
        axes.plot(
            1 - specificity,
            sensitivity,
            "o",
            color=OPERATING_POINT_COLOUR,
            label=f"threshold {threshold:.4g}: sensitivity {sensitivity:.2f}, "
            f"specificity {specificity:.2f}",
        )
    axes.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=f"ROC {title}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    figure.legend(loc="outside lower center", fontsize="small")
    return figure


def pr_figure(
    scores: Tensor, labels: Tensor, title: str = "", threshold: float | None = None
) -> Figure:
    """The precision-recall curve, the prevalence line and, with a finite ``threshold``, the
    operating point; the legend sits below the axes.

    Examples:
        >>> figure = pr_figure(torch.rand(10), torch.arange(10) % 2)
        >>> len(figure.axes[0].lines)
        2
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    labels = torch.as_tensor(labels).long()
    _, tps, fps = curve_counts(scores, labels)
    precision = torch.cat([torch.ones(1, dtype=torch.float64), tps / (tps + fps)])
    recall = torch.cat([torch.zeros(1, dtype=torch.float64), tps / tps[-1]])
    figure = Figure(figsize=(4.5, 5.2), dpi=120, layout="constrained")
    axes = figure.subplots()
    axes.step(
        recall.numpy(),
        precision.numpy(),
        where="post",
        label=f"precision-recall, AP = {average_precision(scores, labels):.3f}",
    )
    axes.axhline(
        float(labels.double().mean()),
        linestyle="--",
        color="grey",
        linewidth=0.8,
        label="chance (prevalence)",
    )
    point = _operating_point(scores, labels, threshold)
    if point is not None:
        recall_t, precision_t = point["sensitivity@threshold"], point["precision@threshold"]
        axes.plot(
            recall_t,
            precision_t,
            "o",
            color=OPERATING_POINT_COLOUR,
            label=f"threshold {threshold:.4g}: recall {recall_t:.2f}, precision {precision_t:.2f}",
        )
    axes.set(xlabel="recall (sensitivity)", ylabel="precision", title=f"Precision-recall {title}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    figure.legend(loc="outside lower center", fontsize="small")
    return figure


def plot_roc_pr(
    scores: Tensor,
    labels: Tensor,
    roc_path: str | os.PathLike,
    pr_path: str | os.PathLike,
    title: str = "",
    threshold: float | None = None,
) -> None:
    """Write `roc_figure` and `pr_figure` of ``scores`` as two PNG files.

    Examples:
        >>> plot_roc_pr(torch.rand(10), torch.arange(10) % 2, "roc.png", "pr.png")  # doctest: +SKIP
    """
    for figure, path in (
        (roc_figure(scores, labels, title, threshold), roc_path),
        (pr_figure(scores, labels, title, threshold), pr_path),
    ):
        with atomic_path(path) as tmp:
            figure.savefig(tmp)
