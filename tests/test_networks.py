"""Generator and critic: sizes, shapes, determinism, position encoding, ablation switches."""

from __future__ import annotations

import pytest
import torch

from sagan_ad import Critic, Generator
from sagan_ad.networks.generator import check_generator_geometry, from_patches, to_patches
from sagan_ad.networks.layers import binary_codes


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts_match_the_released_code():
    generator = Generator(position_encoding="reference")
    assert n_params(generator) == 44_758_979
    assert n_params(Critic()) == 44_719_040


@pytest.mark.parametrize("image_size", [64, 128, 256])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_generator_and_critic_shapes(image_size, in_channels):
    generator = Generator(in_channels, image_size, base_channels=4, num_res_blocks=1).eval()
    critic = Critic(in_channels, base_channels=2)
    x = torch.rand(2, in_channels, image_size, image_size) * 2 - 1
    with torch.no_grad():
        y = generator(x)
        scores = critic(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    assert scores.shape == (2,)


def test_patching_is_row_major_and_invertible():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = to_patches(x, 2)
    assert patches[0].flatten().tolist() == [0, 1, 4, 5]  # top-left
    assert patches[1].flatten().tolist() == [2, 3, 6, 7]  # top-right
    assert patches[2].flatten().tolist() == [8, 9, 12, 13]  # bottom-left
    assert torch.equal(from_patches(patches, 2), x)


def test_binary_codes_are_the_released_three_bit_codes():
    assert binary_codes(4).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_eval_mode_is_deterministic_and_train_mode_masks_the_residual():
    torch.manual_seed(0)
    generator = Generator(image_size=32, base_channels=4, num_res_blocks=1)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    generator.eval()
    with torch.no_grad():
        assert torch.equal(generator(x), generator(x))
        full = generator(x)
        generator.train()
        masked = generator(x)
    replaced = ~torch.isclose(masked, full, atol=1e-6)
    # Masked pixels take tanh(2x), the released code's behaviour.
    assert torch.allclose(masked[replaced], torch.tanh(2 * x[replaced]), atol=1e-6)
    fraction = replaced.float().mean().item()
    assert 0.01 < fraction < 0.1  # about 5 % of the pixels


def test_eval_uses_instance_statistics_not_running_statistics():
    generator = Generator(image_size=32, base_channels=4, num_res_blocks=1)
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        train_out = generator(x, residual_mask=False)
        eval_out = generator.eval()(x)
    assert torch.allclose(train_out, eval_out, atol=1e-6)
    assert not any("running" in name for name, _ in generator.named_buffers())


def _swap_quadrants(x: torch.Tensor) -> torch.Tensor:
    patches = to_patches(x, 2)
    return from_patches(
        patches.reshape(-1, 4, *patches.shape[1:])[:, [1, 0, 3, 2]].flatten(0, 1), 2
    )


@pytest.mark.parametrize(
    ("mode", "matters"), [("film", True), ("reference", False), ("none", False)]
)
def test_position_encoding_changes_output_only_when_it_survives_the_norm(mode, matters):
    """Swapping two patches' positions must change their restoration when position is encoded."""
    torch.manual_seed(0)
    generator = Generator(image_size=32, base_channels=8, num_res_blocks=1, position_encoding=mode)
    generator.eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        direct = generator(x)
        # Move the patches, restore, move them back: identical iff position is ignored.
        swapped_back = _swap_quadrants(generator(_swap_quadrants(x)))
    difference = (direct - swapped_back).abs().max().item()
    if matters:
        assert difference > 1e-3
    else:
        assert difference < 1e-4


def test_ablation_switches_remove_their_modules():
    full = Generator(image_size=32, base_channels=4)
    plain = Generator(
        image_size=32, base_channels=4, attention_gates=False, multi_level_fusion=False
    )
    assert n_params(plain) < n_params(full)
    assert plain.gate1 is None
    assert not hasattr(plain, "fuse_levels")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert plain.eval()(x).shape == x.shape


@pytest.mark.parametrize(("size", "grid"), [(60, 2), (32, 8), (16, 4)])
def test_image_size_the_grid_cannot_divide_is_rejected(size, grid):
    with pytest.raises(ValueError, match="image_size"):
        check_generator_geometry(size, grid)
    with pytest.raises(ValueError, match="multiple of patch_grid"):
        Generator(image_size=size, patch_grid=grid, base_channels=2)


def test_bad_arguments_are_rejected_with_their_names():
    with pytest.raises(ValueError, match="position_encoding"):
        Generator(image_size=32, base_channels=2, position_encoding="sine")
    with pytest.raises(ValueError, match="residual_keep_prob"):
        Generator(image_size=32, base_channels=2, residual_keep_prob=0.0)
    generator = Generator(image_size=32, base_channels=2)
    with pytest.raises(ValueError, match="expects images of shape"):
        generator(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="2 \\*\\* num_downsamples"):
        Critic(num_downsamples=6)(torch.zeros(1, 1, 32, 32))
