"""Acquisition augmentation (blur, sharpening, JPEG, noise, resolution): each change does what it
says, the same seed draws the same films, bad ranges are refused by name, and YAML reaches it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sagan_ad import MedADDataModule
from sagan_ad.data import Augmentation, IntensityAugmentation
from sagan_ad.image_statistics import STATISTICS, image_statistics


def films(count: int = 8, size: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(0)
    base = rng.normal(128, 40, (count, 1, size, size))
    return torch.from_numpy(np.clip(base, 0, 255).astype(np.uint8))


def statistic(images: torch.Tensor, name: str) -> torch.Tensor:
    return image_statistics(images)[:, STATISTICS.index(name)]


def test_blur_and_downscale_lower_sharpness_sharpen_and_noise_raise_fine_detail():
    images = films()
    sharpness = statistic(images, "sharpness_vertical")
    blurred = Augmentation(blur=(1.0, 1.5))(images, seed=0)
    downscaled = Augmentation(downscale=(0.4, 0.5))(images, seed=0)
    assert (statistic(blurred, "sharpness_vertical") < 0.8 * sharpness).all()
    assert (statistic(downscaled, "sharpness_vertical") < 0.9 * sharpness).all()
    smooth = Augmentation(blur=(1.5, 1.5))(images, seed=0)
    detail = statistic(smooth, "high_frequency")
    sharpened = Augmentation(sharpen=(0.8, 1.0))(smooth, seed=0)
    noisy = Augmentation(noise=(0.05, 0.05))(smooth, seed=0)
    assert (statistic(sharpened, "high_frequency") > detail).all()
    assert (statistic(noisy, "high_frequency") > detail).all()


def test_jpeg_changes_the_pixels_and_keeps_the_shape_and_type():
    images = films()
    compressed = Augmentation(jpeg=(10, 20))(images, seed=0)
    assert compressed.shape == images.shape and compressed.dtype == torch.uint8
    assert (compressed.float() - images.float()).abs().mean() > 2


def test_the_same_seed_draws_the_same_changes_and_p_zero_draws_none():
    augment = Augmentation(
        blur=(0.3, 1.5), sharpen=(0.1, 0.6), jpeg=(40, 95), noise=(0, 0.03), downscale=(0.4, 1)
    )
    images = films()
    assert torch.equal(augment(images, seed=5), augment(images, seed=5))
    assert not torch.equal(augment(images, seed=5), augment(images, seed=6))
    assert Augmentation.parse({"blur": [0.3, 1.5], "p": 0.0}) is None
    assert Augmentation.parse({"jpeg": [40, 95]}).describe() == "jpeg=40-95"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"blur": [2.0, 1.0]}, r"data\.augment\.blur=\[2\.0, 1\.0\]: need 0\.1 <= low <= high"),
        ({"sharpen": [0.0, 1.5]}, r"data\.augment\.sharpen=\[0\.0, 1\.5\]: need 0 <= low"),
        ({"jpeg": [0, 90]}, r"data\.augment\.jpeg=\[0\.0, 90\.0\]: need 1 <= low"),
        ({"noise": 0.1}, r"data\.augment\.noise=0\.1: give a range \[low, high\]"),
        ({"downscale": [0.0, 1.0]}, r"data\.augment\.downscale=\[0\.0, 1\.0\]: need 0\.1"),
        ({"blurr": [0.3, 1.0]}, r"unknown field\(s\) blurr: .*did you mean blur"),
    ],
)
def test_bad_ranges_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        Augmentation.parse(spec)


def test_the_old_name_is_the_same_class():
    assert IntensityAugmentation is Augmentation


def test_a_datamodule_takes_acquisition_augmentation_from_a_mapping(medad_root):
    data = MedADDataModule(
        medad_root,
        image_size=32,
        augment={"blur": [0.3, 1.0], "jpeg": [50, 90], "p": 0.5},
        split={"val_fraction": 0.25},
    )
    assert data.augment == Augmentation(blur=(0.3, 1.0), jpeg=(50, 90), p=0.5)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    plain = MedADDataModule(medad_root, image_size=32, split={"val_fraction": 0.25})
    plain.setup()
    same = next(iter(plain.train_dataloader()))
    assert batch["normal"].shape == same["normal"].shape
    assert not torch.equal(batch["normal"], same["normal"])
