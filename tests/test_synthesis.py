"""SAGAN's patch-blend pseudo-anomaly synthesizer."""

from __future__ import annotations

import pytest
import torch

from sagan_ad import PatchBlendSynthesizer


def constant_batch(b: int = 64, size: int = 64) -> torch.Tensor:
    # Image i is constant with value i / b, so the blended-in source can be identified.
    values = torch.arange(b, dtype=torch.float32) / b
    return values[:, None, None, None].expand(b, 1, size, size).clone()


def square_boxes(masks: torch.Tensor) -> list[tuple[int, int, int, int]]:
    boxes = []
    for m in masks[:, 0]:
        rows = torch.nonzero(m.any(dim=1)).flatten()
        cols = torch.nonzero(m.any(dim=0)).flatten()
        boxes.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    return boxes


def test_patch_size_centre_and_mask_shape_follow_the_paper():
    synth = PatchBlendSynthesizer()
    assert synth.half_width_range(64) == (3, 13)  # 3..12 px at 64
    assert synth.center_range(64) == (13, 51)  # central 60 %
    images = constant_batch(256)
    _, masks = synth(images, torch.Generator().manual_seed(0))
    for (r0, r1, c0, c1), m in zip(square_boxes(masks), masks[:, 0], strict=True):
        # A filled rectangle: the mask is exactly its bounding box.
        assert m.sum() == (r1 - r0) * (c1 - c0)
        side_r, side_c = r1 - r0, c1 - c0
        # Not clipped by the border at 64 px: centre <= 50, half-width <= 12.
        assert side_r == side_c and side_r % 2 == 0
        assert 6 <= side_r <= 24
        assert 13 <= (r0 + r1) // 2 < 51 and 13 <= (c0 + c1) // 2 < 51
    sides = {b[1] - b[0] for b in square_boxes(masks)}
    assert min(sides) == 6 and max(sides) == 24  # both ends of the range are drawn


def test_blend_is_convex_with_another_image_and_outside_untouched():
    b = 64
    images = constant_batch(b)
    out, masks = PatchBlendSynthesizer()(images, torch.Generator().manual_seed(1))
    others = torch.arange(b, dtype=torch.float32) / b
    for i in range(b):
        m = masks[i, 0]
        assert torch.equal(out[i, 0][~m], images[i, 0][~m])
        inside = out[i, 0][m]
        assert torch.allclose(inside, inside[0].expand_as(inside))  # one weight per sample
        # x' = (1 - a) x_i + a x_j lies between x_i and x_j for some j != i.
        own, value = i / b, float(inside[0])
        lo, hi = torch.minimum(others, torch.tensor(own)), torch.maximum(others, torch.tensor(own))
        between = (lo - 1e-6 <= value) & (value <= hi + 1e-6)
        between[i] = abs(value - own) < 1e-6
        assert between.any()


def test_source_is_another_image_and_blend_weight_is_uniform_on_0_1():
    # With two images of value 0 and 1, image 0's square holds exactly the blend weight a.
    images = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32)])
    synth = PatchBlendSynthesizer()
    generator = torch.Generator().manual_seed(2)
    weights = []
    for _ in range(300):
        out, masks = synth(images, generator)
        weights.append(float(out[0, 0][masks[0, 0]][0]))
        # Image 1's square blends towards image 0: 1 - a.
        assert 0.0 <= float(out[1, 0][masks[1, 0]][0]) <= 1.0
    weights_t = torch.tensor(weights)
    assert weights_t.min() >= 0 and weights_t.max() <= 1
    assert weights_t.min() < 0.05 and weights_t.max() > 0.95
    assert abs(weights_t.mean().item() - 0.5) < 0.06


def test_seeded_and_device_agnostic():
    images = torch.rand(8, 1, 32, 32) * 2 - 1
    synth = PatchBlendSynthesizer()
    a = synth(images, torch.Generator().manual_seed(3))
    b = synth(images, torch.Generator().manual_seed(3))
    c = synth(images, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].dtype == images.dtype and a[1].dtype == torch.bool


def test_three_channel_images_get_one_mask():
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    out, masks = PatchBlendSynthesizer()(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and masks.shape == (4, 1, 32, 32)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="at least 2 images"):
        PatchBlendSynthesizer()(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="min_half_width"):
        PatchBlendSynthesizer(min_half_width=0.3, max_half_width=0.2)
    with pytest.raises(ValueError, match="blend_min"):
        PatchBlendSynthesizer(blend_min=0.8, blend_max=0.5)
