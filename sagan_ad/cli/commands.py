"""``sagan-ad export`` and ``sagan-ad configs``: the two subcommands that are plain argparse
programs rather than LightningCLI's."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from sagan_ad.cli.checks import check_output_folder
from sagan_ad.cli.usage import SUBCOMMANDS
from sagan_ad.configs import copy_example, describe, needs_gpu, shipped_file, shipped_files
from sagan_ad.errors import InputError


def _import(dotted: str) -> type:
    import lightning as L

    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(
            f"--model {dotted!r} cannot be imported ({type(err).__name__}: {err}): pass the "
            "dotted path of the checkpoint's model class (for example mypackage.MySAGAN), or "
            "leave --model out to use the class the checkpoint records"
        ) from None
    if not (isinstance(found, type) and issubclass(found, L.LightningModule)):
        raise InputError(f"--model {dotted!r} is not a LightningModule class")
    return found


def _flag(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: pass true or false")


def export_main(args: list[str]) -> None:
    """``sagan-ad export``: write a checkpoint's scorer as ONNX or TorchScript.

    Examples:
        >>> export_main(["--ckpt_path", "best.ckpt", "--output", "sagan.onnx"])  # doctest: +SKIP
    """
    # Imported here, not at the top: `sagan-ad configs` shares this module and answers without
    # loading torch.
    from sagan_ad.export import check_export_target, export_scorer
    from sagan_ad.protected import protect
    from sagan_ad.training.checkpoint_files import CheckpointError
    from sagan_ad.training.checkpointing import load_checkpoint
    from sagan_ad.training.resume import SPECIAL_PATHS

    parser = argparse.ArgumentParser(
        prog="sagan-ad export",
        description="Export a checkpoint's scorer (generator, anomaly map and score).",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by sagan-ad fit")
    parser.add_argument("--output", required=True, help="output file (.onnx or .pt)")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default=None,
        help="default: from the output's extension (.onnx, else torchscript)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="the checkpoint's model class (default: the class it records; sagan_ad.SAGAN for "
        "checkpoints written before classes were recorded)",
    )
    parser.add_argument("--batch_size", type=int, default=2, help="batch of the tracing example")
    parser.add_argument(
        "--input_normalized",
        action="store_true",
        help="leave the model's intensity normalisation out of the graph: the caller applies it "
        "(needed for CLAHE, see sagan_ad.data.normalize_images)",
    )
    parser.add_argument(
        "--allow_untrained",
        type=_flag,
        nargs="?",
        const=True,
        default=False,
        help="export a checkpoint of an untrained model (iteration 0) on purpose",
    )
    options = parser.parse_args(args)
    if options.ckpt_path in SPECIAL_PATHS:
        # Only the run subcommands know the logger settings that say where a run's
        # checkpoints are.
        example = "last.ckpt" if options.ckpt_path == "last" else "best-iteration=N.ckpt"
        raise CheckpointError(
            f"sagan-ad export --ckpt_path {options.ckpt_path}: export takes a checkpoint file "
            "(only fit, validate, test and predict resolve last / best, from the run's logger "
            f"settings): pass the file, for example lightning_logs/version_0/checkpoints/{example}"
        )
    model_class = _import(options.model) if options.model else None
    protect(options.ckpt_path, "the checkpoint given by --ckpt_path")
    # Before the checkpoint is loaded and traced: `--output` naming it (by any path, a link)
    # would replace the trained weights with the scorer.
    if not Path(options.output).is_dir():  # a folder is named by export, with a file to give
        check_export_target(options.output, "--output")
    model = load_checkpoint(options.ckpt_path, model_class)
    if getattr(model, "iteration", None) == 0 and not options.allow_untrained:
        raise CheckpointError(
            f"checkpoint {options.ckpt_path!r} holds an untrained model (iteration 0): export a "
            "trained checkpoint, or pass --allow_untrained true to export it on purpose"
        )
    # Any case: scorer.ONNX written as TorchScript would only fail later, in ONNX Runtime.
    fmt = options.format or ("onnx" if options.output.lower().endswith(".onnx") else "torchscript")
    path = export_scorer(
        model,
        options.output,
        format=fmt,
        batch_size=options.batch_size,
        input_normalized=options.input_normalized,
    )
    print(f"wrote {fmt} scorer to {path}")
    sidecar = path.with_name(path.name + ".data")
    if fmt == "onnx" and sidecar.is_file():
        print(
            f"its weights exceed the 2 GB protobuf limit and are in {sidecar}: keep the two files "
            "together (see docs/evaluation.md)"
        )


def configs_main(args: list[str]) -> None:
    """``sagan-ad configs``: list the shipped example configs, or copy one out to edit.

    Examples:
        >>> configs_main(["--copy", "quickstart"])  # doctest: +SKIP
        wrote quickstart.yaml: edit it, then run sagan-ad fit --config quickstart.yaml
    """
    parser = argparse.ArgumentParser(prog="sagan-ad configs", description=SUBCOMMANDS["configs"])
    parser.add_argument("--copy", metavar="NAME", help="copy this config (or example) out")
    parser.add_argument("--to", default=".", metavar="FOLDER", help="where --copy writes")
    parser.add_argument("--force", action="store_true", help="let --copy overwrite a file")
    parser.add_argument("--show", metavar="NAME", help="print this config")
    options = parser.parse_args(args)
    files = shipped_files()
    if options.copy:
        check_output_folder(options.to, "--to")
        target = copy_example(options.copy, options.to, overwrite=options.force)
        run = f"sagan-ad fit --config {target}" if target.suffix != ".py" else f"python {target}"
        print(f"wrote {target}: edit it, then run {run}")
        return
    if options.show:
        print(shipped_file(options.show).read_text(encoding="utf-8"), end="")
        return
    width = max(len(name) for name in files) + 2
    print("Configs shipped with sagan-ad (pass the name: sagan-ad fit --config quickstart):")
    for name, path in files.items():
        if path.suffix != ".py":
            gpu = " Needs a GPU (without one: --trainer.accelerator cpu)." * needs_gpu(path)
            print(f"  {name:<{width}}{describe(path)}{gpu}")
    print("\nPython examples:")
    for name, path in files.items():
        if path.suffix == ".py":
            print(f"  {name:<{width}}{describe(path)}")
    print(
        "\nCopy one out to edit: sagan-ad configs --copy quickstart (writes ./quickstart.yaml); "
        "print one: sagan-ad configs --show quickstart"
    )
