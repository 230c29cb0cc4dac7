"""Path (b) of the throughput benchmark: the released code's data path (one pseudo anomaly per
``__getitem__``, a one-worker loader) and training step (separate generator forwards)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sagan_ad import SAGAN, PatchBlendSynthesizer, SyntheticCXRDataModule
from sagan_ad.data.datasets import to_model_range


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
    """SAGAN's losses with the released code's data path and separate generator forwards."""

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        normal, unlabeled = batch["normal"], batch["unlabeled"]
        opt_g, opt_d = self.optimizers()
        update_g = self.is_generator_iteration()
        if update_g:
            fake = self.generator(unlabeled)
        else:
            with torch.no_grad():
                fake = self.generator(unlabeled)
        critic_terms = self.critic_loss(normal, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(critic_terms["loss"])
        opt_d.step()
        logs = {f"train/critic/{k}": v.detach() for k, v in critic_terms.items()}
        if update_g:
            self.critic.requires_grad_(False)
            terms = self.generator_loss(
                fake,
                normal,
                self.generator(normal),
                self.generator(batch["corrupted"]),
                batch["masks"],
            )
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(terms["loss"])
            opt_g.step()
            self.critic.requires_grad_(True)
            logs.update({f"train/generator/{k}": v.detach() for k, v in terms.items()})
        self._log_training(logs)
        self.iteration += 1
