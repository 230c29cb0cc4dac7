"""Whether two checkouts of sagan_ad train and score bit-identically: the check of a refactor.

Usage (from the project root):

    git worktree add /tmp/base <commit>
    python benchmarks/same_training.py --base /tmp/base          # this checkout against it

Each checkout runs the same tiny fit in its own process (6 iterations of a 32 px model on the
built-in synthetic data, validation every 3, then the test and the scores of four fixed images)
with the package imported from that checkout. The script prints which of the weights, the test
metrics and the scores differ (NaN equals NaN), and exits 1 when any does.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from harness import describe

ROOT = Path(__file__).resolve().parents[1]

FIT = """
import pickle, sys
import lightning as L
import torch
import sagan_ad
from sagan_ad import SAGAN, Critic, Evaluator, Generator, SyntheticCXRDataModule

L.seed_everything(0)
model = SAGAN(Generator(image_size=32, base_channels=4, num_res_blocks=1),
              Critic(base_channels=4, num_downsamples=5), max_iterations=6,
              evaluator=Evaluator(bootstrap_resamples=0))
options = dict(num_known_normal=16, num_test=8, image_size=32, batch_size=4)
try:
    data = SyntheticCXRDataModule(**options, split={"val_fraction": 0.25})
except TypeError:  # a checkout from before the split settings (f247dda and older)
    data = SyntheticCXRDataModule(**options, val_fraction=0.25)
trainer = L.Trainer(max_epochs=-1, check_val_every_n_epoch=None, val_check_interval=3,
                    accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
test = trainer.test(model, data, verbose=False)[0]
images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
model.eval()
with torch.no_grad():
    scores = model.score(images)
with open(sys.argv[1], "wb") as f:
    pickle.dump({"package": sagan_ad.__file__, "state": model.state_dict(), "test": test,
                 "scores": scores}, f)
"""


def run(checkout: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run(
        [sys.executable, "-c", FIT, str(out)],
        check=True,
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with out.open("rb") as f:
        return pickle.load(f)


def same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--new", type=Path, default=ROOT, help="this checkout (default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = run(args.base.resolve(), Path(tmp) / "base.pkl")
        new = run(args.new.resolve(), Path(tmp) / "new.pkl")
    print(f"machine: {describe()}")
    print(f"base: {base['package']}\nnew:  {new['package']}")
    weights = sorted(set(base["state"]) ^ set(new["state"]))
    weights += [
        k
        for k in sorted(set(base["state"]) & set(new["state"]))
        if not torch.equal(base["state"][k], new["state"][k])
    ]
    metrics = [
        k
        for k in sorted(set(base["test"]) | set(new["test"]))
        if not same_number(base["test"].get(k, math.nan), new["test"].get(k, 0.0))
    ]
    scores = not torch.equal(base["scores"], new["scores"])
    print(f"weights: {len(base['state'])} tensors, differing: {weights or 'none'}")
    print(f"test metrics: {len(base['test'])}, differing: {metrics or 'none'}")
    print(f"scores of 4 fixed images: {'differ' if scores else 'identical'}")
    sys.exit(1 if weights or metrics or scores else 0)


if __name__ == "__main__":
    main()
