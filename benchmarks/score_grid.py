"""Choose the scorer of trained runs on their labelled validation set: a grid of residual low-pass
and border, scored on the kept checkpoint of each run.

    python benchmarks/score_grid.py runs/pediatric_cpu/seed0/version_0 \\
        runs/pediatric_cpu/seed1/version_0 runs/pediatric_cpu/seed2/version_0

Each run folder is one `sagan-ad fit` (its ``config.yaml`` and ``checkpoints/best-*.ckpt``). The
generator restores each run's validation and test films once; every setting of the grid then
scores those restorations (`sagan_ad.Scorer` with that ``residual_sigma`` and ``border``, the
run's other scorer settings kept). For each setting it prints the validation AUROC of every run
and their mean, which chooses, and beside it the test AUROC and the matched-subset AUROC
(`sagan_ad.evaluation.matching`, the run's own ``matched_subset`` settings) that the choice is
worth. The test columns never choose anything.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics as stats
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from sagan_ad import MedADDataModule, Scorer, load_checkpoint
from sagan_ad.data import to_model_range
from sagan_ad.evaluation.matching import MatchingSettings, matched_metrics
from sagan_ad.evaluation.metrics import auroc


@dataclass
class Restored:
    """One evaluated set of one run: model-range images, their restorations and labels."""

    images: torch.Tensor
    restored: torch.Tensor
    labels: torch.Tensor
    statistics: torch.Tensor


def best_checkpoint(run: Path) -> Path:
    """The checkpoint `sagan-ad fit` kept as best in ``run`` (refused when there is not one)."""
    found = sorted((run / "checkpoints").glob("best-*.ckpt"))
    if len(found) != 1:
        sys.exit(
            f"error: {run / 'checkpoints'}: expected one best-*.ckpt, found {len(found)}; "
            "pass the folder of one finished `sagan-ad fit` run"
        )
    return found[0]


def restore(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``G(x)`` of uint8 ``images`` as the model's scorer sees it, in batches."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_model_range(images[start : start + batch])
            parts.append(model.inference.restore(x))
    return torch.cat(parts)


def evaluated_sets(run: Path) -> tuple[Scorer, MatchingSettings, dict[str, Restored]]:
    """The run's scorer, matching settings and restored validation and test sets."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = MedADDataModule(**config["data"]["init_args"])
    data.setup("fit")
    data.setup("test")
    model = load_checkpoint(best_checkpoint(run), map_location="cpu").eval()
    matching = model.evaluator.matching
    sets = {}
    for name, images in (("val", data.val), ("test", data.test)):
        sets[name] = Restored(
            to_model_range(images.images),
            restore(model, images.images),
            torch.as_tensor(images.labels),
            images.statistics(),
        )
    return model.scorer, matching, sets


def row(values: list[float]) -> str:
    """One table cell of per-run numbers."""
    return " / ".join(f"{v:.3f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of `sagan-ad fit`")
    parser.add_argument("--residual-sigmas", nargs="+", type=float, default=[0.0, 1.0, 2.0])
    parser.add_argument("--borders", nargs="+", type=float, default=[0.0, 0.1, 0.15, 0.25])
    parser.add_argument(
        "--tie", type=float, default=0.001, help="mean validation AUROCs this close are a tie"
    )
    args = parser.parse_args()

    loaded = [evaluated_sets(run) for run in args.runs]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}; "
        f"runs: {', '.join(str(run) for run in args.runs)}"
    )
    print(
        "| residual_sigma | border | val AUROC per run | **mean val** | test AUROC per run "
        "| matched AUROC per run |"
    )
    print("|---|---|---|---|---|---|")
    rows = []
    for sigma, border in itertools.product(args.residual_sigmas, args.borders):
        val, test, matched = [], [], []
        for scorer, matching, sets in loaded:
            setting = Scorer(
                map_sigma=scorer.map_sigma,
                top_fraction=scorer.top_fraction,
                residual_sigma=sigma,
                border=border,
            )
            scores = {name: setting(s.images, s.restored)[0].float() for name, s in sets.items()}
            val.append(float(auroc(scores["val"], sets["val"].labels)))
            test.append(float(auroc(scores["test"], sets["test"].labels)))
            numbers, _, _ = matched_metrics(
                scores["test"], sets["test"].labels, sets["test"].statistics, matching
            )
            matched.append(numbers["matched/AUROC"])
        rows.append((stats.mean(val), sigma, border))
        print(
            f"| {sigma:g} | {border:g} | {row(val)} | **{stats.mean(val):.3f}** | {row(test)} "
            f"| {row(matched)} |"
        )
    # A tie goes to the simplest setting: the least low-pass, then the smallest border.
    mean, sigma, border = max(rows, key=lambda row: (row[0], -row[1], -row[2]))
    close = [f"{s:g}/{b:g} ({m:.4f})" for m, s, b in rows if m >= mean - args.tie and m != mean]
    print(f"\nchosen on validation: residual_sigma {sigma:g}, border {border:g} ({mean:.4f})")
    if close:
        print(
            f"within {args.tie:g} of it (residual_sigma/border), which validation cannot tell "
            f"apart: {', '.join(close)}"
        )


if __name__ == "__main__":
    main()
