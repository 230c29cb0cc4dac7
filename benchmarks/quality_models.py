"""The quality study's models and their training: SAGAN per configuration (with the "unlabeled
data off" ablation), the best validation's weights, and the plain autoencoder baseline."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from harness import training_only_trainer
from lightning.pytorch.callbacks import Callback
from quality_configs import BASE_CONFIG, CONFIGS, model_arguments
from torch import Tensor, nn

from sagan_ad import SAGAN, MedADDataModule, ShortcutWarning


class KnownNormalsOnly(SAGAN):
    """The "unlabeled data off" ablation: the critic's fakes are restored known normals.

    The unlabeled batch is replaced by the normal batch rolled by one, so the critic compares
    known normals with G of other known normals and never sees the unlabeled mixture.
    """

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        normal = batch["normal"]
        return super().training_step({**batch, "unlabeled": normal.roll(1, 0)}, batch_idx)


class AutoEncoder(nn.Module):
    """A plain convolutional autoencoder (4 stride-2 stages each way), the issue's baseline."""

    def __init__(self, channels: int = 1, width: int = 16) -> None:
        super().__init__()
        widths = [channels, width, 2 * width, 4 * width, 8 * width]
        down: list[nn.Module] = []
        up: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            down += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        for a, b in itertools.pairwise(widths[::-1]):
            up += [nn.ConvTranspose2d(a, b, 4, 2, 1)]
            up += [nn.BatchNorm2d(b), nn.ReLU()] if b != channels else [nn.Tanh()]
        self.net = nn.Sequential(*down, *up)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def model_class(name: str) -> type[SAGAN]:
    return KnownNormalsOnly if name == "no_unlabeled" else SAGAN


class BestValidationWeights(Callback):
    """Keep, in memory, the weights of the validation with the best ``val/AUROC``: what
    ``sagan-ad fit`` tests (its best checkpoint), without writing checkpoints."""

    def __init__(self) -> None:
        self.best_auroc = -math.inf
        self.iteration = 0
        self.state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/AUROC")
        if trainer.sanity_checking or value is None or float(value) <= self.best_auroc:
            return
        self.best_auroc = float(value)
        self.iteration = int(pl_module.iteration)
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def train_sagan(
    name: str,
    data: MedADDataModule,
    seed: int,
    iterations: int,
    accelerator: str,
    val_every: int | None = None,
    base: Path = BASE_CONFIG,
) -> tuple[SAGAN, float, BestValidationWeights | None]:
    """Train one configuration; with ``val_every`` also validate every that many iterations
    and keep the best validation's weights (returned beside the last ones)."""
    overrides, _ = CONFIGS[name]
    training = {"max_iterations": iterations, "seed": seed, "evaluator": {"bootstrap_resamples": 0}}
    L.seed_everything(seed, verbose=False)
    model = model_class(name)(**model_arguments(overrides, training, base=base))
    best = BestValidationWeights() if val_every else None
    extra: dict[str, Any] = {}
    if best is not None:
        extra = {
            "limit_val_batches": None,
            "val_check_interval": val_every,
            "check_val_every_n_epoch": None,
            "callbacks": [best],
        }
    trainer = training_only_trainer(accelerator, **extra)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The audit's warnings are this study's subject; its columns report them.
        warnings.simplefilter("ignore", ShortcutWarning)
        trainer.fit(model, datamodule=data)
    return model.eval(), time.perf_counter() - start, best


def train_autoencoder(
    images: Tensor, seed: int, iterations: int, batch_size: int, device: torch.device
) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    net = AutoEncoder(images.shape[1]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(iterations):
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)].to(device)
        loss = (net(batch) - batch).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval(), time.perf_counter() - start
