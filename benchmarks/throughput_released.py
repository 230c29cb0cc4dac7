"""Path (b) of the throughput benchmark: the released code's data path (one pseudo anomaly per
``__getitem__``, a one-worker loader) and generator passes (separate forwards)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sagan_ad import SAGAN, PatchBlendSynthesizer, SyntheticCXRDataModule
from sagan_ad.data.modules.datasets import to_model_range


class ReleasedLikePairs(Dataset):
    """Training items as the released code makes them: one pseudo anomaly per ``__getitem__``.

    Item ``i`` pairs known normal ``i`` with a random unlabeled image and corrupts the normal with
    a patch of another random normal, synthesized for this one image on the CPU, in float.
    """

    def __init__(self, normal: Tensor, unlabeled: Tensor, seed: int = 0) -> None:
        self.normal, self.unlabeled = normal, unlabeled
        self.synthesizer = PatchBlendSynthesizer()
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.normal)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        other = int(torch.randint(len(self.normal), (1,), generator=self.generator))
        unlabeled = int(torch.randint(len(self.unlabeled), (1,), generator=self.generator))
        pair = to_model_range(self.normal[[index, other]])
        corrupted, masks = self.synthesizer(pair, self.generator)
        return {
            "normal": pair[0],
            "unlabeled": to_model_range(self.unlabeled[unlabeled]),
            "corrupted": corrupted[0],
            "masks": masks[0],
        }


class ReleasedLikeData(SyntheticCXRDataModule):
    """The real DataModule's images, served by the released code's one-worker loader."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            ReleasedLikePairs(self.known_normal.images, self.unlabeled.images, self.seed),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=1,
            # Kept alive across epochs, which favours this baseline (the released loop restarts).
            persistent_workers=True,
        )


class ReleasedLikeSAGAN(SAGAN):
    """SAGAN's training step with the released code's generator passes: separate forwards for
    the unlabeled, normal and corrupted images, the pseudo anomalies those of the batch
    (`ReleasedLikePairs`); the optimizer steps, logging and iteration count are SAGAN's own."""

    def generate(self, batch: dict[str, Tensor], update_generator: bool) -> dict[str, Tensor]:
        if not update_generator:
            return super().generate(batch, update_generator)
        return {
            "fake": self.generator(batch["unlabeled"]),
            "restored_normal": self.generator(batch["normal"]),
            "restored_corrupted": self.generator(batch["corrupted"]),
            "masks": batch["masks"],
        }
