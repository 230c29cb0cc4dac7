"""The quality study's report: mean ± std over seeds as markdown tables, merged saved runs, the
atomic ``--json`` file, and the AUROC-against-anomaly-ratio plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sagan_ad.atomic import atomic_path


def summarize(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    keys = sorted({k for run in runs for k in run})
    out = {}
    for key in keys:
        values = torch.tensor([run.get(key, math.nan) for run in runs], dtype=torch.float64)
        values = values[~values.isnan()]
        if len(values):
            std = float(values.std()) if len(values) > 1 else 0.0
            out[key] = (float(values.mean()), std)
    return out


def cell(stats: dict[str, tuple[float, float]], key: str) -> str:
    """``mean ± std`` of one summarized number, ``n/a`` where no run has it."""
    if key not in stats:
        return "n/a"
    mean, std = stats[key]
    return f"{mean:.3f} ± {std:.3f}"


def markdown(results: dict[str, list[dict[str, float]]], view_names: list[str]) -> str:
    """One row per configuration: mean ± std over seeds (CI bounds averaged over seeds)."""
    header = ["configuration", "seeds", "test AUROC", "95% CI", "AP"]
    header += [f"AUROC {v}" for v in view_names]
    header += ["matched AUROC", "corr(score, intensity)"]
    # The intensity study's columns, in the tables of runs that have them.
    shortcut_keys = {
        "intensity_spearman": "Spearman(score, intensity)",
        "input_mean_auroc": "trivial AUROC: input mean",
        "input_contrast_auroc": "trivial AUROC: input std",
    }
    shortcuts = [
        key for key in shortcut_keys if any(key in r for runs in results.values() for r in runs)
    ]
    header += [shortcut_keys[key] for key in shortcuts]
    header += ["val AUROC", "train s / run"]
    # With --val-every: the weights of the best validation, which `sagan-ad fit` tests.
    best_keys = {
        "best_val_auroc": "best val AUROC",
        "best_iteration": "its iteration",
        "best_auroc": "test AUROC at best val",
        "best_matched_auroc": "matched AUROC at best val",
        "best_intensity_corr": "corr at best val",
    }
    chosen = [key for key in best_keys if any(key in r for runs in results.values() for r in runs)]
    header += [best_keys[key] for key in chosen]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in results.items():
        stats = summarize(runs)
        ci = f"{stats['ci_low'][0]:.2f}–{stats['ci_high'][0]:.2f}" if "ci_low" in stats else "n/a"
        row = [name, str(len(runs)), cell(stats, "auroc"), ci, cell(stats, "ap")]
        row += [cell(stats, f"auroc_{v}") for v in view_names]
        row += [cell(stats, "matched_auroc"), cell(stats, "intensity_corr")]
        row += [cell(stats, key) for key in shortcuts]
        row.append(cell(stats, "val_auroc"))
        row.append(f"{stats['train_s'][0]:.0f}" if "train_s" in stats else "0")
        row += [
            f"{stats[key][0]:.0f}" if key == "best_iteration" and key in stats else cell(stats, key)
            for key in chosen
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_ratio(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(
        (float(name.split("_")[1]), summarize(runs)["auroc"])
        for name, runs in results.items()
        if name.startswith("ratio_")
    )
    if not points:
        raise SystemExit("--plot-ratio needs ratio_* configurations in --configs")
    matched = sorted(
        (float(name.split("_")[1]), summarize(runs)["matched_auroc"])
        for name, runs in results.items()
        if name.startswith("ratio_")
    )
    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=120)
    for series, label, style in (
        (points, "SAGAN, whole test set", "o-"),
        (matched, "SAGAN, matched subset", "s:"),
    ):
        ax.errorbar(
            [r for r, _ in series],
            [m for _, (m, _) in series],
            yerr=[s for _, (_, s) in series],
            fmt=style,
            capsize=3,
            label=label,
        )
    for name, floor in results.items():
        if name.startswith("baseline: mean intensity"):
            label = name.removeprefix("baseline: ")
            ax.axhline(summarize(floor)["auroc"][0], color="grey", ls="--", label=label)
    ax.axhline(0.5, color="black", lw=0.5)
    ax.set_xlabel("anomaly ratio of the unlabeled set")
    ax.set_ylabel("test AUROC")
    ax.set_ylim(0.3, 1.0)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several saved runs as one: per-run lists of the same configuration are concatenated."""
    merged: dict[str, Any] = {"header": "\n".join(run["header"] for run in runs)}
    for part in ("results", "variants"):
        merged[part] = {}
        for run in runs:
            for name, values in run[part].items():
                merged[part].setdefault(name, []).extend(values)
    return merged


def tables(
    results: dict[str, list[dict[str, float]]], variants: dict[str, list[dict[str, float]]]
) -> str:
    """The configuration table and the score-variant table, in markdown."""
    views = sorted(
        {
            k[len("auroc_") :]
            for runs in results.values()
            for r in runs
            for k in r
            if k.startswith("auroc_")
        }
    )
    text = [
        markdown(results, views),
        "",
        "Score variants (the default is the best on validation):",
        "",
        "| configuration: score | val AUROC | test AUROC | matched AUROC | chosen on val |",
        "|---|---|---|---|---|",
    ]
    for name, runs in variants.items():
        stats = summarize(runs)
        text.append(
            f"| {name} | {cell(stats, 'val_auroc')} | {cell(stats, 'auroc')} | "
            f"{cell(stats, 'matched_auroc')} | "
            f"{int(sum(r['chosen_on_val'] for r in runs))}/{len(runs)} |"
        )
    return "\n".join(text)


def save_json(path: Path, saved: dict[str, Any]) -> None:
    """Write ``saved`` atomically: a stopped study never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(saved, indent=1))
