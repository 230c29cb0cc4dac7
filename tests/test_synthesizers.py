"""CutPaste, FPI and Perlin-blob synthesizers behind the `Synthesizer` interface."""

from __future__ import annotations

import pytest
import torch
from test_synthesis import constant_batch

from sagan_ad import CutPasteSynthesizer, FPISynthesizer, PerlinBlobSynthesizer, Synthesizer
from sagan_ad.synthesis import perlin_noise

ALL = [CutPasteSynthesizer(), FPISynthesizer(), PerlinBlobSynthesizer()]


@pytest.mark.parametrize("synth", ALL, ids=lambda s: type(s).__name__)
def test_seeded_masked_in_range_and_grayscale(synth: Synthesizer):
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    images[:, 1:] = images[:, :1]  # a grayscale image stored in 3 channels
    out, masks = synth(images, torch.Generator().manual_seed(0))
    again, again_masks = synth(images, torch.Generator().manual_seed(0))
    other_masks = synth(images, torch.Generator().manual_seed(1))[1]
    assert torch.equal(out, again) and torch.equal(masks, again_masks)
    assert not torch.equal(masks, other_masks)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert masks.shape == (8, 1, 32, 32) and masks.dtype == torch.bool
    assert masks.flatten(1).any(1).all()  # every image gets an anomaly
    changed = (out != images).any(1, keepdim=True)
    assert not (changed & ~masks).any()  # nothing changes outside the mask
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_cutpaste_copies_a_patch_of_the_same_image():
    # Image i has a horizontal ramp plus 10 * i: pasted pixels must come from image i itself.
    ramp = torch.linspace(-0.05, 0.05, 32)
    images = (torch.arange(4.0)[:, None, None, None] * 0.2 - 0.5) + ramp.expand(4, 1, 32, 32)
    out, masks = CutPasteSynthesizer(brightness=0.0)(images, torch.Generator().manual_seed(0))
    for i in range(4):
        inside = out[i, 0][masks[i, 0]]
        assert (inside - (i * 0.2 - 0.5)).abs().max() <= 0.05 + 1e-6


def test_cutpaste_patch_area_follows_the_setting():
    synth = CutPasteSynthesizer(min_area=0.05, max_area=0.1)
    _, masks = synth(torch.zeros(64, 1, 64, 64), torch.Generator().manual_seed(0))
    areas = masks.flatten(1).float().mean(1)
    assert areas.min() >= 0.035 and areas.max() <= 0.12


def test_fpi_blends_another_image_with_one_weight_per_sample():
    images = constant_batch(16, 32)
    out, masks = FPISynthesizer()(images, torch.Generator().manual_seed(0))
    for i in range(16):
        inside = out[i, 0][masks[i, 0]]
        assert torch.allclose(inside, inside[0].expand_as(inside))
    assert masks.flatten(1).float().mean(1).max() <= 0.25 + 1e-6  # at most half of each side


def test_perlin_noise_is_smooth_and_blob_area_is_controlled():
    noise = perlin_noise(64, 64, (4, 4), torch.Generator().manual_seed(0))
    assert noise.abs().max() <= 1.0
    assert (noise[1:] - noise[:-1]).abs().max() < 0.2  # smooth, not white noise
    synth = PerlinBlobSynthesizer(min_area=0.1, max_area=0.1)
    _, masks = synth(torch.zeros(4, 1, 64, 64), torch.Generator().manual_seed(0))
    assert torch.allclose(masks.flatten(1).float().mean(1), torch.full((4,), 0.1), atol=0.01)


def test_bad_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="min_area"):
        CutPasteSynthesizer(min_area=0.5, max_area=0.1)
    with pytest.raises(ValueError, match="min_size"):
        FPISynthesizer(min_size=0.0)
    with pytest.raises(ValueError, match="min_scale"):
        PerlinBlobSynthesizer(min_scale=3, max_scale=2)
    with pytest.raises(ValueError, match="at least 2 images"):
        FPISynthesizer()(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        CutPasteSynthesizer()(torch.zeros(1, 8, 8))
