"""Changing one part of SAGAN without copying the training step.

Get it:        sagan-ad configs --copy subclass_sagan     (writes ./subclass_sagan.py)
Run it:        python subclass_sagan.py
From the CLI:  sagan-ad fit --config quickstart --model.loss subclass_sagan.MaskWeightedLoss \
                   --model.scorer.top_fraction 0.05
               (in the folder that holds subclass_sagan.py)

The model is built from components, and a part is changed in one of two ways:

- a subclass of the component: ``MaskWeightedLoss`` is a `sagan_ad.SAGANLoss` whose restoration
  term weights the squared error inside the pseudo-anomaly mask (the paper's loss ignores the
  mask), given to the model as its ``loss``;
- the component's settings: ``Scorer(top_fraction=0.05)`` scores an image by the mean of its
  5% most abnormal pixels, which keeps a small lesion from being averaged away by the rest of the
  film (the paper's score is the mean of all of them).

The same ``model.loss`` and ``model.scorer`` in a YAML config::

    model:
      init_args:
        loss:
          class_path: subclass_sagan.MaskWeightedLoss
          init_args: {mask_weight: 4.0}
        scorer:
          class_path: sagan_ad.Scorer
          init_args: {top_fraction: 0.05}

A subclass of `sagan_ad.SAGAN` that overrides a training hook (``restoration_loss``,
``generate``, ...) works too; the score changes on a `sagan_ad.Scorer` subclass only. A component
keeps the change in one small class and lets it travel in checkpoints.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from sagan_ad import SAGAN, Critic, Generator, SAGANLoss, Scorer, SyntheticCXRDataModule


class MaskWeightedLoss(SAGANLoss):
    """The SAGAN objective with the corrupted pixels counted ``1 + mask_weight`` times in the
    restoration loss.

    Args:
        mask_weight: extra weight of the squared error inside the pseudo-anomaly mask.
        lambda_gp: gradient-penalty weight.
        lambda_identity: weight of the identity loss on known normals.
        lambda_restoration: weight of the restoration loss on pseudo anomalies.
    """

    def __init__(
        self,
        mask_weight: float = 4.0,
        lambda_gp: float = 10.0,
        lambda_identity: float = 1.0,
        lambda_restoration: float = 1.0,
    ) -> None:
        super().__init__(lambda_gp, lambda_identity, lambda_restoration)
        # Kept under its own name, so checkpoints record it and rebuild this loss.
        self.mask_weight = mask_weight

    def restoration(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        weight = 1.0 + self.mask_weight * masks.to(normal.dtype)
        return (weight * (normal - restored_corrupted) ** 2).mean()


def lesion_focused_sagan(
    image_size: int = 32, base_channels: int = 8, max_iterations: int = 300
) -> SAGAN:
    """A narrow SAGAN with the mask-weighted loss and the top-5% score."""
    return SAGAN(
        generator=Generator(image_size=image_size, base_channels=base_channels, num_res_blocks=1),
        critic=Critic(base_channels=2 * base_channels, num_downsamples=5),
        loss=MaskWeightedLoss(mask_weight=4.0),
        scorer=Scorer(top_fraction=0.05),
        max_iterations=max_iterations,
        optimizer_g=lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999)),
        optimizer_d=lambda params: torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999)),
    )


def run(max_iterations: int = 300, image_size: int = 32, num_known_normal: int = 200) -> dict:
    """Train and test the model on the built-in phantoms; returns the test metrics."""
    L.seed_everything(0)
    model = lesion_focused_sagan(image_size=image_size, max_iterations=max_iterations)
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
