"""Ground-truth boxes: checked in the original image's frame, mapped to the model's."""

from __future__ import annotations

import numpy as np


def box_problem(boxes: np.ndarray, original_size: tuple[int, int]) -> str | None:
    """Why ``boxes`` (``(k, 4)`` of ``x0, y0, x1, y1``) do not fit an image of
    ``original_size`` ``(height, width)``, or ``None`` when they all do.

    Examples:
        >>> box_problem(np.array([[10, 10, 50, 40]]), (100, 100)) is None
        True
        >>> box_problem(np.array([[10, 10, 150, 40]]), (100, 100))
        'box [10.0, 10.0, 150.0, 40.0] is outside the 100x100 (width x height) image'
    """
    height, width = original_size
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x0, y0, x1, y1 = box
        shown = [float(v) for v in box]
        if not np.all(np.isfinite(box)):
            return f"box {shown} has a missing or non-numeric coordinate"
        if x1 <= x0 or y1 <= y0:
            return f"box {shown} is empty or inverted (need x0 < x1 and y0 < y1)"
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            return f"box {shown} is outside the {width}x{height} (width x height) image"
    return None


def scale_boxes(
    boxes: np.ndarray, original_size: tuple[int, int], image_size: int | tuple[int, int]
) -> np.ndarray:
    """Map boxes from original pixel coordinates to the resized image the model sees.

    Args:
        boxes: ``(k, 4)`` ``x0, y0, x1, y1`` in the original image.
        original_size: ``(height, width)`` of the original image.
        image_size: side of the square model input, or its ``(height, width)``.

    Returns:
        float32 ``(k, 4)`` in model pixel coordinates (the resize stretches each axis).

    Examples:
        >>> scale_boxes(np.array([[100, 50, 300, 150]]), (200, 400), 64).tolist()
        [[16.0, 16.0, 48.0, 48.0]]
    """
    out_h, out_w = (image_size, image_size) if isinstance(image_size, int) else image_size
    height, width = original_size
    factors = np.array([out_w / width, out_h / height, out_w / width, out_h / height])
    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * factors).astype(np.float32)
