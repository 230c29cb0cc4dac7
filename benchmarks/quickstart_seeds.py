"""The quickstart's test AUROC and wall time over seeds, and with its settings undone one at a time.

Usage (from the project root; every run is the real command line, ``sagan-ad fit --config
examples/quickstart.yaml``, in a subprocess, so the wall time includes start-up and the test):

    python benchmarks/quickstart_seeds.py                      # the quickstart, seeds 0 1 2
    python benchmarks/quickstart_seeds.py --variants quickstart paper_optimizers mean_score \\
        --seeds 0 1 2 --threads 1

``--seeds`` sets ``seed_everything``, the data seed (new phantoms, new test set) and the model
seed together. Each variant overlays a few settings on ``examples/quickstart.yaml`` (`VARIANTS`);
the table gives, per variant, the test AUROC of the checkpoint chosen on validation (mean, std and
worst seed), the best validation AUROC, and the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from harness import describe

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
PAPER_ADAM = {"class_path": "torch.optim.Adam", "init_args": {"lr": 5e-5, "betas": [0.5, 0.999]}}


#: Name -> overrides of ``model.init_args`` and ``data.init_args`` of the quickstart (a component's
#: settings under its ``init_args``, merged into the quickstart's).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "quickstart": {},
    "paper_optimizers": {"model": {"optimizer_g": PAPER_ADAM, "optimizer_d": PAPER_ADAM}},
    "mean_score": {"model": {"scorer": {"init_args": {"map_sigma": 0.0, "top_fraction": 1.0}}}},
    "no_ema": {"model": {"generator_ema": 0.0}},
    "pseudo_validation": {"data": {"validation": "pseudo"}},
    "subtle_lesions": {"data": {"lesion_radius": [0.04, 0.15], "lesion_contrast": [25.0, 90.0]}},
    "critic_1x1": {"model": {"critic": {"init_args": {"num_downsamples": 5}}}},
    "validation_40": {"data": {"num_known_normal": 400, "split": {"val_fraction": 0.1}}},
    "sigma_2": {"model": {"scorer": {"init_args": {"map_sigma": 2.0, "top_fraction": 0.02}}}},
    # Tried and not kept (docs/quickstart.md, "What to expect").
    "one_critic_step_batch_8": {
        "model": {"n_critic": 1, "max_iterations": 900},
        "data": {"batch_size": 8},
    },
}


def overlay(variant: str) -> dict[str, Any]:
    """The variant as a second config file's content."""
    return {
        part: {"init_args": settings} for part, settings in VARIANTS[variant].items() if settings
    }


def read_metrics(root: Path) -> dict[str, float]:
    """Test AUROC/AP and the best validation AUROC from the run's ``metrics.csv``."""
    (path,) = root.glob("*/version_*/metrics.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/AUROC"]) for r in rows if r.get("val/AUROC")]
    test = next(r for r in rows if r.get("test/AUROC"))
    return {
        "test_auroc": float(test["test/AUROC"]),
        "test_ap": float(test["test/AP"]),
        "best_val_auroc": max(val),
    }


def run(
    variant: str, seed: int, threads: int | None, workdir: Path, iterations: int | None = None
) -> dict[str, float]:
    root = workdir / f"{variant}_seed{seed}"
    extra = root / "overlay.yaml"
    root.mkdir(parents=True)
    extra.write_text(yaml.safe_dump(overlay(variant)))
    command = [
        str(Path(sys.executable).parent / "sagan-ad"),
        "fit",
        f"--config={QUICKSTART}",
        f"--config={extra}",
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--model.init_args.seed={seed}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
    ]
    if iterations:
        command += [
            f"--model.init_args.max_iterations={iterations}",
            f"--trainer.val_check_interval={min(iterations, 50)}",
        ]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{variant} seed {seed} failed:\n{done.stderr[-3000:]}")
    return {**read_metrics(root), "wall_s": seconds}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| variant | seeds | test AUROC | worst seed | best val AUROC | wall s (max) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, runs in results.items():
        aurocs = [r["test_auroc"] for r in runs]
        std = statistics.stdev(aurocs) if len(aurocs) > 1 else 0.0
        val = statistics.mean(r["best_val_auroc"] for r in runs)
        walls = [r["wall_s"] for r in runs]
        lines.append(
            f"| {variant} | {len(runs)} | {statistics.mean(aurocs):.3f} ± {std:.3f} | "
            f"{min(aurocs):.3f} | {val:.3f} | {statistics.mean(walls):.0f} ({max(walls):.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["quickstart"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, help="torch threads per run (default: all)")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--iterations", type=int, help="max_iterations (default: the YAML's)")
    args = parser.parse_args(argv)
    if args.threads:
        # So that the machine line below reports the runs' thread count.
        torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sagan_quickstart_") as workdir:
        for variant in args.variants:
            for seed in args.seeds:
                result = run(variant, seed, args.threads, Path(workdir), args.iterations)
                results.setdefault(variant, []).append(result)
                print(
                    f"{variant} seed {seed}: test AUROC {result['test_auroc']:.3f}, best val "
                    f"{result['best_val_auroc']:.3f}, {result['wall_s']:.0f} s",
                    flush=True,
                )
    threads = f"{args.threads} torch threads per run" if args.threads else "all cores per run"
    report = f"Machine: {describe()} ({threads})\n\n{table(results)}"
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
