"""Detection quality of SAGAN on a Med-AD data set, against trivial baselines, over seeds.

Usage (from the project root; the default data set is the NIH pneumonia split):

    python benchmarks/quality.py --configs full --seeds 0 1 2
    python benchmarks/quality.py --configs full no_unlabeled no_restoration --iterations 600
    python benchmarks/quality.py --configs ratio_0.0 ratio_0.2 ratio_0.4 ratio_0.6 ratio_0.8 \\
        --plot-ratio docs/img/anomaly_ratio.png
    python benchmarks/quality.py --configs full --normalizations none equalize clahe \\
        --augmentations none brightness bcg --balance-val-by view_position

Every configuration starts from ``examples/nih_cpu.yaml`` (model and data arguments) with the
overrides of `CONFIGS`, is trained for ``--iterations`` iterations per seed and scored on the
test set with the last weights. For each it reports, as mean and standard deviation over seeds:

- test AUROC, with the stratified bootstrap 95% interval averaged over seeds, and AP;
- AUROC per view (``view_position`` of ``labels.csv`` when the data set has one);
- AUROC on the **intensity-matched** subset: each abnormal image paired with an unused normal of
  the same view whose mean intensity is within ``--match-tolerance``; brightness alone scores
  about 0.5 there, so what survives is not brightness;
- the Pearson (and Spearman) correlation of the score with the image's mean intensity;
- the training time per run.

``--normalizations`` and ``--augmentations`` run every configuration once per intensity
normalisation (``data.normalization``: none, equalize, clahe, zscore, percentile) and
augmentation preset (`AUGMENTATIONS`, ``data.augment``); settings other than none/none are named
``<config> norm=<n> aug=<a>``. Their rows add the AUROC of the trivial statistics (mean and
standard deviation, better direction) of the *normalised* test inputs: what a brightness or
contrast shortcut could still reach after normalisation. The intensity-matched subset, the
correlation and the darkness floor are always those of the images as decoded, so every setting
is measured on the same pairs. ``--balance-val-by view_position`` balances the labelled
validation carve-out by view (``MedADDataModule(val_balance_by=...)``), so that choosing on
validation cannot choose on view, and ``--group-by nih_patient_id`` keeps every patient of the
validation out of training (``MedADDataModule(group_by=...)``). These two flags, not the base
YAML, decide the validation; ``examples/nih_cpu.yaml`` as shipped is ``--configs full
--normalizations none --augmentations bcg --labelled-val 34 --balance-val-by view_position
--group-by nih_patient_id``.

Score variants (the paper's mean ``|x - G(x)|``, the mean of the top 5% of the Gaussian-smoothed
map, and the mean ``|x - G(x)|`` after standardizing both images, which no global brightness or
contrast change can drive) are evaluated on the same trained models; the default is the variant
with the best *validation* AUROC (held-out normals against pseudo anomalies), never the test's.

The same run trains and scores the baselines from the issue, so every table carries its own
floor: mean image intensity (darker = more abnormal, the direction that separates the NIH
classes), and a plain convolutional autoencoder trained with the same
iteration budget on the known normals (and on known normals plus the unlabeled mixture).

The table goes to standard output and, with ``--output``, to a markdown file; ``--json`` keeps
every per-run number.
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from harness import adam, describe, training_only_trainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from sagan_ad import SAGAN, MedADDataModule, ShortcutWarning
from sagan_ad.data import image_statistics
from sagan_ad.data.intensity import NORMALIZATION_METHODS
from sagan_ad.evaluation.audit import spearman, trivial_auroc
from sagan_ad.evaluation.metrics import auroc, average_precision, bootstrap_auroc_ci
from sagan_ad.evaluation.scoring import anomaly_map, map_to_score, score_and_map, smooth_map

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nih-cxr14-pneumonia"
BASE_CONFIG = REPO / "examples" / "nih_cpu.yaml"


#: Name -> (model overrides, data overrides) relative to ``examples/nih_cpu.yaml``.
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "full": ({}, {}),
    "position_none": ({"position_encoding": "none"}, {}),
    "position_reference": ({"position_encoding": "reference"}, {}),
    "no_attention": ({"attention_gates": False}, {}),
    "no_fusion": ({"multi_level_fusion": False}, {}),
    "no_restoration": ({"lambda_restoration": 0.0}, {}),
    "no_identity": ({"lambda_identity": 0.0}, {}),
    "no_unlabeled": ({}, {}),
    "reference_inference": ({"inference": "reference"}, {}),
    "grid_1": ({"patch_grid": 1}, {}),
    "grid_4": ({"patch_grid": 4}, {}),
    "size_128": ({"image_size": 128}, {"image_size": 128}),
    # Candidates for tuning examples/nih_cpu.yaml (choose on --labelled-val, not on test).
    "lr_2e-4": ({"optimizer_g": adam(2e-4), "optimizer_d": adam(2e-4)}, {}),
    "ttur": ({"optimizer_g": adam(2e-4), "optimizer_d": adam(2e-3)}, {}),
    "n_critic_1": ({"n_critic": 1}, {}),
    "width_16": ({"base_channels": 16, "critic_base_channels": 32}, {}),
    # One unlabeled size for every ratio, the largest the NIH pools allow at ratio 0 (74
    # normals), so that only the mixture changes along the curve.
    **{
        f"ratio_{r:.1f}": ({}, {"anomaly_ratio": r, "unlabeled_size": 74})
        for r in (0.0, 0.2, 0.4, 0.6, 0.8)
    },
}

SCORE_VARIANTS = ("mean", "top5_smoothed", "standardized")

#: Intensity augmentation presets (``data.augment``) of the study. The brightness shift of 0.2
#: (about 50 grey levels) is larger than the mean-intensity difference between the NIH classes,
#: so it drowns that cue; gamma 0.67-1.5 moves the mid-tones and keeps each film's order of grey
#: levels.
AUGMENTATIONS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "brightness": {"brightness": 0.2},
    "gamma": {"gamma": [0.67, 1.5]},
    "bcg": {"brightness": 0.2, "contrast": 0.2, "gamma": [0.67, 1.5]},
}


def setting_name(config: str, normalization: str, augmentation: str) -> str:
    """The row name of a configuration under an intensity setting (the plain name for none/none).

    Examples:
        >>> setting_name("full", "clahe", "none")
        'full norm=clahe aug=none'
    """
    if normalization == "none" and augmentation == "none":
        return config
    return f"{config} norm={normalization} aug={augmentation}"


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


def to_float(images: Tensor) -> Tensor:
    """uint8 images to ``[-1, 1]`` floats, as the LightningModule sees them."""
    return images.float().div(127.5).sub(1.0)


def views(root: Path, names: list[str]) -> list[str] | None:
    """``view_position`` of each image from ``root/labels.csv``, or None without that column."""
    table = root / "labels.csv"
    if not table.is_file():
        return None
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "view_position" not in rows[0]:
        return None
    by_file = {row["file"]: row["view_position"] for row in rows if "file" in row}
    return [by_file.get(Path(name).name, "unknown") for name in names]


def matched_subset(
    intensity: Tensor, labels: Tensor, view: list[str] | None, tolerance: float
) -> Tensor:
    """Indices of abnormal images each paired with an unused normal of the same view whose mean
    intensity is within ``tolerance`` (greedy, closest first; unpaired abnormals are dropped)."""
    view = view or ["all"] * len(labels)
    used: set[int] = set()
    keep: list[int] = []
    normals = [i for i in range(len(labels)) if labels[i] == 0]
    for i in sorted(range(len(labels)), key=lambda k: float(intensity[k])):
        if labels[i] != 1:
            continue
        candidates = [
            j
            for j in normals
            if j not in used
            and view[j] == view[i]
            and abs(float(intensity[j] - intensity[i])) <= tolerance
        ]
        if candidates:
            j = min(candidates, key=lambda k: abs(float(intensity[k] - intensity[i])))
            used.add(j)
            keep += [i, j]
    return torch.tensor(sorted(keep), dtype=torch.long)


def score_variants(images: Tensor, restored: Tensor) -> dict[str, Tensor]:
    """The three image scores compared in this study, each of shape ``(B,)``."""
    maps = anomaly_map(images, restored)

    def standardize(x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)

    return {
        "mean": maps.flatten(1).mean(1),
        "top5_smoothed": map_to_score(smooth_map(maps, 2.0), top_fraction=0.05),
        "standardized": (standardize(images) - standardize(restored)).abs().mean(1) / 2,
    }


def own_score(model: SAGAN, images: Tensor, restored: Tensor) -> Tensor:
    """``model.score`` from already restored images (its ``map_sigma``, ``score_top_fraction``)."""
    return score_and_map(images, restored, model.map_sigma, model.score_top_fraction)[0]


@torch.no_grad()
def restore_all(net: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([net(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def evaluate(
    scores: Tensor,
    labels: Tensor,
    intensity: Tensor,
    view: list[str] | None,
    matched: Tensor,
    resamples: int,
) -> dict[str, float]:
    """All numbers of one run's test scores."""
    low, high = bootstrap_auroc_ci(scores, labels, num_resamples=resamples)
    out = {
        "auroc": auroc(scores, labels),
        "ci_low": low,
        "ci_high": high,
        "ap": average_precision(scores, labels),
        "matched_auroc": auroc(scores[matched], labels[matched]) if len(matched) else math.nan,
        "intensity_corr": float(torch.corrcoef(torch.stack([scores, intensity]))[0, 1]),
        "intensity_spearman": spearman(scores, intensity),
    }
    for name in sorted(set(view or [])):
        index = torch.tensor([v == name for v in view])
        if labels[index].unique().numel() == 2:
            out[f"auroc_{name}"] = auroc(scores[index], labels[index])
    return out


def load_base() -> tuple[dict[str, Any], dict[str, Any]]:
    config = yaml.safe_load(BASE_CONFIG.read_text())
    return dict(config["model"]["init_args"]), dict(config["data"]["init_args"])


def best_checkpoint_numbers(
    model: SAGAN,
    best: BestValidationWeights,
    images: Tensor,
    labels: Tensor,
    intensity: Tensor,
    matched: Tensor,
) -> dict[str, float]:
    """Test AUROC, matched AUROC and correlation of the best validation's weights (the
    checkpoint ``sagan-ad fit`` tests), scored with the model's own settings."""
    chosen = copy.deepcopy(model)
    chosen.load_state_dict(best.state)
    chosen.eval()
    scores = own_score(chosen, images, restore_all(chosen.restore, images)).cpu()
    return {
        "best_val_auroc": best.best_auroc,
        "best_iteration": float(best.iteration),
        "best_auroc": auroc(scores, labels),
        "best_matched_auroc": auroc(scores[matched], labels[matched]) if len(matched) else math.nan,
        "best_intensity_corr": float(
            torch.corrcoef(torch.stack([scores.double(), intensity]))[0, 1]
        ),
    }


def input_shortcuts(images: Tensor, labels: Tensor) -> dict[str, float]:
    """AUROC (better direction) of the mean and the standard deviation of the model's inputs."""
    stats = image_statistics(images)
    return {
        "input_mean_auroc": trivial_auroc(stats[:, 0], labels)[0],
        "input_contrast_auroc": trivial_auroc(stats[:, 1], labels)[0],
    }


def make_data(
    root: Path,
    overrides: dict[str, Any],
    seed: int,
    val_abnormal: int,
    balance_by: str | None = None,
    group_by: str | None = None,
) -> MedADDataModule:
    """The base DataModule with ``overrides`` and ``val_abnormal`` (see `MedADDataModule`); with
    ``balance_by`` the labelled carve-out is balanced by that column of ``root/labels.csv``, with
    ``group_by`` the validation hold-out keeps that column's groups (patients) out of training."""
    _, data_args = load_base()
    # The flags, not the YAML, decide balancing and grouping: the table's header records them,
    # and a data set without the YAML's labels.csv columns still runs.
    for key in ("metadata_csv", "val_balance_by", "group_by"):
        data_args.pop(key, None)
    data_args.update(root=str(root), seed=seed, val_abnormal=val_abnormal, **overrides)
    if balance_by:
        data_args.update(metadata_csv="labels.csv", val_balance_by=balance_by)
    if group_by:
        data_args.update(metadata_csv="labels.csv", group_by=group_by)
    data = MedADDataModule(**data_args)
    data.setup("fit")
    return data


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
) -> tuple[SAGAN, float, BestValidationWeights | None]:
    """Train one configuration; with ``val_every`` also validate every that many iterations
    and keep the best validation's weights (returned beside the last ones)."""
    model_args, _ = load_base()
    overrides, _ = CONFIGS[name]
    model_args.update(max_iterations=iterations, seed=seed, bootstrap_resamples=0, **overrides)
    L.seed_everything(seed, verbose=False)
    model = model_class(name)(**model_args)
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
        (matched, "SAGAN, intensity-matched subset", "s:"),
    ):
        ax.errorbar(
            [r for r, _ in series],
            [m for _, (m, _) in series],
            yerr=[s for _, (_, s) in series],
            fmt=style,
            capsize=3,
            label=label,
        )
    floor = results.get("baseline: darkness (1 - mean intensity)")
    if floor:
        ax.axhline(summarize(floor)["auroc"][0], color="grey", ls="--", label="darkness baseline")
    ax.axhline(0.5, color="black", lw=0.5)
    ax.set_xlabel("anomaly ratio of the unlabeled set")
    ax.set_ylabel("test AUROC")
    ax.set_ylim(0.3, 1.0)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="Med-AD style data set")
    parser.add_argument("--configs", nargs="+", default=["full"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=None, help="default: the YAML's")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--match-tolerance", type=float, default=0.01)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--labelled-val",
        type=int,
        metavar="N",
        help="validate on held-out known normals and N unused pool abnormals (real labels from "
        "the training data; 0: pseudo anomalies instead); default: the YAML's data.val_abnormal. "
        "Choose settings on this, never on test",
    )
    parser.add_argument(
        "--normalizations",
        nargs="+",
        default=["none"],
        choices=NORMALIZATION_METHODS,
        help="data.normalization of each setting (default: none, the paper)",
    )
    parser.add_argument(
        "--augmentations",
        nargs="+",
        default=["none"],
        choices=sorted(AUGMENTATIONS),
        help="data.augment preset of each setting (see AUGMENTATIONS)",
    )
    parser.add_argument(
        "--balance-val-by",
        metavar="COLUMN",
        help="balance the labelled validation carve-out by this column of <root>/labels.csv "
        "(view_position on NIH)",
    )
    parser.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="hold out whole groups of this column of <root>/labels.csv for validation "
        "(nih_patient_id on NIH: no patient in training and validation)",
    )
    parser.add_argument(
        "--val-every",
        type=int,
        metavar="N",
        help="also validate every N iterations and report the test numbers of the best "
        "validation's weights, the checkpoint that `sagan-ad fit` tests",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write every per-run number here")
    parser.add_argument("--plot-ratio", type=Path, help="PNG of AUROC against anomaly ratio")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="rebuild the tables and plot from earlier --json runs (merged in order)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = merge([json.loads(path.read_text()) for path in args.from_json])
        report = saved["header"] + "\n\n" + tables(saved["results"], saved["variants"])
        finish(args, report, saved)
        return
    if not (args.root / "data.json").is_file():
        raise SystemExit(f"error: no data.json under --root {args.root}")
    warnings.filterwarnings("ignore", module="lightning")
    model_args, data_args = load_base()
    iterations = args.iterations or int(model_args["max_iterations"])
    val_abnormal = (
        data_args.get("val_abnormal", 0) if args.labelled_val is None else args.labelled_val
    )
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    if args.balance_val_by and not val_abnormal:
        raise SystemExit("error: --balance-val-by needs a labelled validation (--labelled-val N)")
    settings = [
        (config, normalization, augmentation)
        for config in args.configs
        for normalization in args.normalizations
        for augmentation in args.augmentations
    ]

    gpu_name = torch.cuda.get_device_name() if device.type == "cuda" else None

    def header(pairs: int) -> str:
        return "\n".join(
            [
                f"Machine: {describe(gpu_name)}",
                f"Data: {args.root.name}; {iterations} iterations; seeds {args.seeds}; "
                f"intensity-matched subset: {pairs} abnormal/normal pairs "
                f"(tolerance {args.match_tolerance})",
                "Validation: "
                + (
                    f"labelled, held-out known normals and {val_abnormal} unused pool abnormals"
                    if val_abnormal
                    else "held-out known normals and their pseudo anomalies"
                )
                + (f", balanced by {args.balance_val_by}" if args.balance_val_by else "")
                + (f", grouped by {args.group_by}" if args.group_by else ""),
            ]
            + (
                [
                    "Intensity settings: normalisations "
                    f"{' '.join(args.normalizations)}; augmentations "
                    + "; ".join(f"{a} = {AUGMENTATIONS[a]}" for a in args.augmentations)
                ]
                if args.normalizations != ["none"] or args.augmentations != ["none"]
                else []
            )
        )

    results: dict[str, list[dict[str, float]]] = {}
    variants: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        data_cache: dict[str, MedADDataModule] = {}
        trained: dict[str, tuple[SAGAN, float]] = {}
        for config, normalization, augmentation in settings:
            name = setting_name(config, normalization, augmentation)
            data_overrides = dict(CONFIGS[config][1])
            # Explicit even for "none": the base YAML may ship a normalisation or augmentation.
            data_overrides["normalization"] = normalization
            data_overrides["augment"] = AUGMENTATIONS[augmentation]
            key = json.dumps(data_overrides, sort_keys=True)
            if key not in data_cache:
                data_cache[key] = make_data(
                    args.root,
                    data_overrides,
                    seed,
                    val_abnormal,
                    args.balance_val_by,
                    args.group_by,
                )
            data = data_cache[key]
            test_images = to_float(data.test.images).to(device)
            labels = torch.tensor(data.test.labels)
            # Intensity in [0, 1] of the images as decoded at the evaluation size, as in the
            # issue's matching rule: the same pairs for every normalisation.
            intensity = data.test.decoded_stats[:, 0].double()
            view = views(args.root, data.test.names)
            matched = matched_subset(intensity, labels, view, args.match_tolerance)

            # Inference mode does not change training: configurations that differ only in it
            # share one trained model (same seed, same data), and its training time.
            model_overrides, _ = CONFIGS[config]
            training = {k: v for k, v in model_overrides.items() if k != "inference"}
            trained_key = (
                f"{model_class(config).__name__} "
                f"{json.dumps(training, sort_keys=True, default=repr)} {key}"
            )
            if trained_key not in trained:
                trained[trained_key] = train_sagan(
                    config, data, seed, iterations, args.accelerator, args.val_every
                )
            model, seconds, best_weights = trained[trained_key]
            model = model.to(device)
            model.inference = model_overrides.get("inference", "deterministic")
            restored = restore_all(model.restore, test_images)
            test = score_variants(test_images, restored)
            val_images = to_float(data.val.images).to(device)
            val_labels = torch.tensor(data.val.labels)
            val_restored = restore_all(model.restore, val_images)
            val = score_variants(val_images, val_restored)
            best = max(SCORE_VARIANTS, key=lambda v: auroc(val[v].cpu(), val_labels))
            # The main table scores with the model's own settings (the paper's mean unless the
            # configuration sets map_sigma / score_top_fraction).
            own = own_score(model, test_images, restored).cpu()
            run = evaluate(own, labels, intensity, view, matched, args.resamples)
            run.update(input_shortcuts(data.test.images, labels))
            run["train_s"] = seconds
            run["val_auroc"] = auroc(own_score(model, val_images, val_restored).cpu(), val_labels)
            if best_weights is not None and best_weights.state is not None:
                run.update(
                    best_checkpoint_numbers(
                        model, best_weights, test_images, labels, intensity, matched
                    )
                )
            results.setdefault(name, []).append(run)
            for variant in SCORE_VARIANTS:
                variants.setdefault(f"{name}: {variant}", []).append(
                    {
                        "val_auroc": auroc(val[variant].cpu(), val_labels),
                        "auroc": auroc(test[variant].cpu(), labels),
                        "matched_auroc": (
                            auroc(test[variant].cpu()[matched], labels[matched])
                            if len(matched)
                            else math.nan
                        ),
                        "chosen_on_val": float(variant == best),
                    }
                )
            print(
                f"seed {seed} {name}: AUROC {run['auroc']:.3f} matched "
                f"{run['matched_auroc']:.3f} val {run['val_auroc']:.3f} ({seconds:.0f} s, "
                f"{seconds / iterations:.3f} s/it; best score on val: {best})",
                flush=True,
            )
            if args.json:
                # A study runs for hours: keep what is done if it is stopped.
                save_json(
                    args.json,
                    {"header": header(len(matched) // 2), "results": results, "variants": variants},
                )

        if not args.no_baselines:
            # Baselines see the base split (the ratio and size overrides are SAGAN's ablations)
            # and the films as decoded.
            plain = {"normalization": "none", "augment": None}
            base_key = json.dumps(plain, sort_keys=True)
            if base_key not in data_cache:
                data_cache[base_key] = make_data(
                    args.root, plain, seed, val_abnormal, args.balance_val_by, args.group_by
                )
            data = data_cache[base_key]
            labels = torch.tensor(data.test.labels)
            intensity = data.test.decoded_stats[:, 0].double()
            view = views(args.root, data.test.names)
            matched = matched_subset(intensity, labels, view, args.match_tolerance)
            # Abnormal films are darker in the NIH release: darkness is the 0.78 floor.
            run = evaluate(1.0 - intensity, labels, intensity, view, matched, args.resamples)
            results.setdefault("baseline: darkness (1 - mean intensity)", []).append(run)
            test_images = to_float(data.test.images)
            pools = {
                "baseline: autoencoder, known normals": data.known_normal.images,
                "baseline: autoencoder, + unlabeled": torch.cat(
                    [data.known_normal.images, data.unlabeled.images]
                ),
            }
            for label, pool in pools.items():
                net, seconds = train_autoencoder(
                    to_float(pool), seed, iterations, int(data_args["batch_size"]), device
                )
                restored = restore_all(net, test_images.to(device)).cpu()
                scores = score_variants(test_images, restored)["mean"]
                run = evaluate(scores, labels, intensity, view, matched, args.resamples)
                run["train_s"] = seconds
                results.setdefault(label, []).append(run)

    saved = {"header": header(len(matched) // 2), "results": results, "variants": variants}
    finish(args, saved["header"] + "\n\n" + tables(results, variants), saved)


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
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(saved, indent=1))
    partial.replace(path)


def finish(args: argparse.Namespace, report: str, saved: dict[str, Any]) -> None:
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n")
    if args.json and not args.from_json:
        save_json(args.json, saved)
    if args.plot_ratio:
        plot_ratio(saved["results"], args.plot_ratio)


if __name__ == "__main__":
    sys.exit(main())
