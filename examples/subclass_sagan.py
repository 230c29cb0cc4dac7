"""Subclassing SAGAN: change a loss and the score without copying the training step.

Get it:        sagan-ad configs --copy subclass_sagan     (writes ./subclass_sagan.py)
Run it:        python subclass_sagan.py
Or from YAML:  sagan-ad fit --config quickstart --model subclass_sagan.LesionFocusedSAGAN
               (in the folder that holds subclass_sagan.py)

``LesionFocusedSAGAN`` weights the restoration loss inside the pseudo-anomaly mask (the paper's
loss ignores the mask) and scores an image by the mean of its most abnormal pixels, which keeps a
small lesion from being averaged away by the rest of the film.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from sagan_ad import SAGAN, Critic, Generator, SyntheticCXRDataModule


class LesionFocusedSAGAN(SAGAN):
    """SAGAN with a mask-weighted restoration loss and a top-k score.

    Args:
        mask_weight: extra weight of the squared error inside the pseudo-anomaly mask.
        top_fraction: fraction of the most abnormal pixels averaged into the score.
        **kwargs: everything `SAGAN` takes.
    """

    def __init__(self, mask_weight: float = 4.0, top_fraction: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mask_weight = mask_weight
        self.top_fraction = top_fraction

    def restoration_loss(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        weight = 1.0 + self.mask_weight * masks.to(normal.dtype)
        return (weight * (normal - restored_corrupted) ** 2).mean()

    def score(self, images: Tensor) -> Tensor:
        maps = self.anomaly_map(images).flatten(1)
        k = max(1, int(self.top_fraction * maps.shape[1]))
        return maps.topk(k, dim=1).values.mean(dim=1)


def run(max_iterations: int = 300, image_size: int = 32, num_known_normal: int = 200) -> dict:
    """Train and test the subclass on the built-in phantoms; returns the test metrics."""
    L.seed_everything(0)
    model = LesionFocusedSAGAN(
        generator=Generator(image_size=image_size, base_channels=8, num_res_blocks=1),
        critic=Critic(base_channels=16, num_downsamples=5),
        max_iterations=max_iterations,
        optimizer_g=lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999)),
        optimizer_d=lambda params: torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999)),
    )
    data = SyntheticCXRDataModule(
        num_known_normal=num_known_normal, num_test=100, image_size=image_size, batch_size=16
    )
    trainer = L.Trainer(
        max_epochs=-1,
        check_val_every_n_epoch=None,
        val_check_interval=max(1, max_iterations // 2),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]


if __name__ == "__main__":
    print(run())
