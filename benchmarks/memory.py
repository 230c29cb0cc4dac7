"""Memory (RSS) over a few thousand tiny training iterations: does anything leak?

Usage (from the project root):

    python benchmarks/memory.py [--iterations 3000] [--every 250]

Trains the 32 px test-size SAGAN on synthetic chest films on the CPU with everything a real run
does (validation with the metric suite every ``--every`` iterations, a CSV logger, ``best`` and
``last`` checkpoints written atomically, the divergence guard) and prints the process's resident
set size every ``--every`` iterations, then the growth from the first print to the last. Flat
means no leak: allocator noise is a few MiB; a leak grows with the iteration count.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagan_ad import (
    SAGAN,
    AtomicCheckpointIO,
    Critic,
    Evaluator,
    Generator,
    SyntheticCXRDataModule,
    best_and_last_checkpoints,
)


def tiny_networks() -> dict[str, Any]:
    """The generator and critic of the test suite's tiny SAGAN (32 px), as `SAGAN` takes them."""
    return {
        "generator": Generator(image_size=32, base_channels=4, num_res_blocks=1),
        "critic": Critic(base_channels=4, num_downsamples=5),
    }


def rss_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc``; elsewhere the peak from getrusage)."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        pages = int(statm.read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RSSMonitor(Callback):
    """Print the RSS every ``every`` iterations and keep the readings."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.readings: list[tuple[int, float]] = []
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: SAGAN, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.iteration % self.every == 0:
            rss = rss_mib()
            self.readings.append((pl_module.iteration, rss))
            elapsed = time.perf_counter() - self.start
            print(f"iteration {pl_module.iteration:6d}  RSS {rss:8.1f} MiB  ({elapsed:6.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    options = parser.parse_args()
    L.seed_everything(0)
    monitor = RSSMonitor(options.every)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=-1,
            check_val_every_n_epoch=None,
            val_check_interval=options.every,
            logger=CSVLogger(root),
            callbacks=[*best_and_last_checkpoints(root), monitor],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )
        model = SAGAN(
            **tiny_networks(),
            max_iterations=options.iterations,
            evaluator=Evaluator(bootstrap_resamples=100),
        )
        data = SyntheticCXRDataModule(
            num_known_normal=64,
            num_test=16,
            image_size=32,
            batch_size=8,
            split={"val_fraction": 0.25},
        )
        trainer.fit(model, data)
    (first_it, first), (last_it, last) = monitor.readings[0], monitor.readings[-1]
    peak = max(rss for _, rss in monitor.readings)
    print(
        f"RSS growth from iteration {first_it} to {last_it}: {last - first:+.1f} MiB "
        f"(first {first:.1f} MiB, last {last:.1f} MiB, peak {peak:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
