"""Train a tiny SAGAN on 2 CPU processes (DDP, gloo) and validate it; run as a script.

``PYTHONPATH=.:tests python tests/ddp_fit.py OUT STRATEGY``: rank 0 writes ``OUT/metrics.json``
(validation metrics, whether both ranks ended with the same weights) and ``OUT/weights.pt``.
Lightning's ``ddp`` launcher starts rank 1 by running this file again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from conftest import tiny_networks

from sagan_ad import SAGAN, Evaluator, SyntheticCXRDataModule


def data() -> SyntheticCXRDataModule:
    return SyntheticCXRDataModule(
        num_known_normal=24,
        num_test=8,
        image_size=32,
        batch_size=4,
        seed=0,
        split={"val_fraction": 0.25},
    )


def main(out: Path, strategy: str) -> None:
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=4)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=-1,
        check_val_every_n_epoch=None,
        val_check_interval=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(model, data())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = trainer.strategy.all_gather(flat)
    metrics = trainer.validate(model, data(), verbose=False)[0]
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        same = bool(torch.equal(gathered[0], gathered[1]))
        result = {"iteration": model.iteration, "ranks_agree": same, "metrics": metrics}
        (out / "metrics.json").write_text(json.dumps(result))
        torch.save(model.state_dict(), out / "weights.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
