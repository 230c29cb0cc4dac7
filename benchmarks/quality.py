"""Detection quality of SAGAN on a Med-AD data set, against trivial baselines, over seeds.

Usage (from the project root; the default data set is the NIH pneumonia split):

    python benchmarks/quality.py --configs full --seeds 0 1 2
    python benchmarks/quality.py --configs full no_unlabeled no_restoration --iterations 600
    python benchmarks/quality.py --configs ratio_0.0 ratio_0.2 ratio_0.4 ratio_0.6 ratio_0.8 \\
        --plot-ratio docs/img/anomaly_ratio.png
    python benchmarks/quality.py --configs full --normalizations none equalize clahe \\
        --augmentations none brightness bcg --balance-val-by view_position
    python benchmarks/quality.py --base examples/pediatric_cpu.yaml \\
        --root ../shared/data/pediatric-cxr-pneumonia --group-by patient_id \\
        --configs full --augmentations acquisition none --seeds 0 1 2

Every configuration starts from ``--base`` (default ``examples/nih_cpu.yaml``: its model and
data arguments) with the overrides of `CONFIGS`, is trained for ``--iterations`` iterations per
seed and scored on the test set with the last weights. For each it reports, as mean and standard
deviation over seeds:

- test AUROC, with the stratified bootstrap 95% interval averaged over seeds, and AP;
- AUROC per view (``view_position`` of ``labels.csv`` when the data set has one);
- AUROC on the **matched** subset (`sagan_ad.evaluation.matching`): each abnormal image paired
  with an unused normal whose every trivial statistic (mean intensity, contrast, centre-crop
  contrast, vertical and horizontal sharpness, high-frequency energy; z-scored over the test
  set) lies within ``--match-tolerance`` (with ``--match-view``, of the same view too); every
  statistic scores about 0.5 there, so what survives is neither brightness nor sharpness;
- the Pearson (and Spearman) correlation of the score with the image's mean intensity;
- the training time per run.

``--normalizations`` and ``--augmentations`` run every configuration once per intensity
normalisation (``data.normalization``: none, equalize, clahe, zscore, percentile) and
augmentation preset (`AUGMENTATIONS`, ``data.augment``: intensity and acquisition changes);
settings other than none/none are named ``<config> norm=<n> aug=<a>``. Their rows add the AUROC
of the trivial statistics (mean and standard deviation, better direction) of the *normalised*
test inputs: what a brightness or contrast shortcut could still reach after normalisation. The
matched subset, the correlation and the floors are always those of the images as decoded, so
every setting is measured on the same pairs. ``--balance-val-by view_position`` balances the
labelled validation carve-out by view (the DataModule's ``split.val_balance_by``), so that
choosing on validation cannot choose on view, and ``--group-by nih_patient_id`` keeps every
patient of the validation out of training (``split.group_by``). These two flags, not the base
YAML, decide the validation; ``examples/nih_cpu.yaml`` as shipped is ``--configs
full --normalizations none --augmentations bcg --labelled-val 34 --balance-val-by view_position
--group-by nih_patient_id``, ``examples/pediatric_cpu.yaml`` is ``--base
examples/pediatric_cpu.yaml --configs full --augmentations acquisition --group-by patient_id``.

Score variants are evaluated on the same trained models: the paper's mean ``|x - G(x)|``, the
mean of the top 5% of the Gaussian-smoothed map, the mean ``|x - G(x)|`` after standardizing
both images (which no global brightness or contrast change can drive), ``lung_lowpass`` (the
residual low-passed by 1 px and scored without the outer 10% of each side,
``Scorer(residual_sigma=1, border=0.1)``), ``critic`` (minus the critic's value of the film
itself) and ``critic_features`` (f-AnoGAN's residual in the critic's feature space). The
default is the variant with the best *validation* AUROC, never the test's.

The same run trains and scores the baselines, so every table carries its own floors: each
trivial statistic of the decoded films in the direction that separates the classes better on
the test labels (optimistic), and a plain convolutional autoencoder trained with the same
iteration budget on the known normals (and on known normals plus the unlabeled mixture).

The table goes to standard output and, with ``--output``, to a markdown file; ``--json`` keeps
every per-run number.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from harness import describe
from quality_configs import (
    AUGMENTATIONS,
    BASE_CONFIG,
    CONFIGS,
    DEFAULT_ROOT,
    load_base,
    make_data,
    setting_name,
    views,
)
from quality_models import model_class, train_autoencoder, train_sagan
from quality_scores import (
    SCORE_VARIANTS,
    best_checkpoint_numbers,
    evaluate,
    input_shortcuts,
    matched_subset,
    own_score,
    restore_all,
    score_variants,
    to_float,
    trivial_floors,
    variants_of,
)
from quality_tables import merge, plot_ratio, save_json, tables

from sagan_ad import SAGAN, MedADDataModule
from sagan_ad.data.images.intensity import NORMALIZATION_METHODS
from sagan_ad.evaluation.metrics import auroc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="Med-AD style data set")
    parser.add_argument("--configs", nargs="+", default=["full"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=None, help="default: the YAML's")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument(
        "--base",
        type=Path,
        default=BASE_CONFIG,
        help="the YAML whose model and data arguments every configuration starts from",
    )
    parser.add_argument(
        "--match-tolerance",
        type=float,
        default=0.5,
        help="matched subset: largest difference of every z-scored trivial statistic in a pair",
    )
    parser.add_argument(
        "--match-view",
        action="store_true",
        help="matched subset: pairs also share view_position of <root>/labels.csv",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--labelled-val",
        type=int,
        metavar="N",
        help="validate on held-out known normals and N unused pool abnormals (real labels from "
        "the training data; 0: pseudo anomalies instead); default: the YAML's "
        "data.split.val_abnormal. Choose settings on this, never on test",
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
    model_args, data_args = load_base(args.base)
    iterations = args.iterations or int(model_args["max_iterations"])
    val_abnormal = (
        (data_args.get("split") or {}).get("val_abnormal", 0)
        if args.labelled_val is None
        else args.labelled_val
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
                f"Data: {args.root.name}; base {args.base.name}; {iterations} iterations; "
                f"seeds {args.seeds}; "
                f"matched subset: {pairs} abnormal/normal pairs within "
                f"{args.match_tolerance} SD of every trivial statistic"
                + (", same view" if args.match_view else ""),
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
                    args.base,
                )
            data = data_cache[key]
            test_images = to_float(data.test.images).to(device)
            labels = torch.tensor(data.test.labels)
            # Statistics of the images as decoded at the evaluation size: the same pairs for
            # every normalisation.
            intensity = data.test.decoded_stats[:, 0].double()
            view = views(args.root, data.test.names) if args.match_view else None
            matched = matched_subset(data.test.decoded_stats, labels, view, args.match_tolerance)

            # Inference mode does not change training: configurations that differ only in it
            # share one trained model (same seed, same data), and its training time.
            model_overrides, _ = CONFIGS[config]
            scorer = dict(model_overrides.get("scorer", {}))
            inference = scorer.pop("inference", "deterministic")
            training = {**model_overrides, "scorer": scorer}
            trained_key = (
                f"{model_class(config).__name__} "
                f"{json.dumps(training, sort_keys=True, default=repr)} {key}"
            )
            if trained_key not in trained:
                trained[trained_key] = train_sagan(
                    config, data, seed, iterations, args.accelerator, args.val_every, args.base
                )
            model, seconds, best_weights = trained[trained_key]
            model = model.to(device)
            model.scorer.inference = inference
            restored = restore_all(model.inference.restore, test_images)
            test = variants_of(model, test_images, restored)
            val_images = to_float(data.val.images).to(device)
            val_labels = torch.tensor(data.val.labels)
            val_restored = restore_all(model.inference.restore, val_images)
            val = variants_of(model, val_images, val_restored)
            best = max(SCORE_VARIANTS, key=lambda v: auroc(val[v].cpu(), val_labels))
            # The main table scores with the model's own settings (the paper's mean unless the
            # configuration sets the scorer's map_sigma / top_fraction).
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
                    args.root,
                    plain,
                    seed,
                    val_abnormal,
                    args.balance_val_by,
                    args.group_by,
                    args.base,
                )
            data = data_cache[base_key]
            labels = torch.tensor(data.test.labels)
            intensity = data.test.decoded_stats[:, 0].double()
            view = views(args.root, data.test.names)
            paired_view = view if args.match_view else None
            matched = matched_subset(
                data.test.decoded_stats, labels, paired_view, args.match_tolerance
            )
            # Every trivial statistic of the same films, in its better direction: the floors.
            for label, scores in trivial_floors(data.test.decoded_stats, labels).items():
                run = evaluate(scores, labels, intensity, view, matched, args.resamples)
                results.setdefault(label, []).append(run)
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
