"""What ``sagan-ad`` answers before any subcommand runs: ``--help`` (the overview of every
subcommand), ``--version``, and the error line for a missing or unknown subcommand."""

from __future__ import annotations

import sys

import sagan_ad

SUBCOMMANDS = {
    "fit": "train from a config, validating as it goes, then test the best checkpoint",
    "validate": "evaluate a checkpoint on the validation data",
    "test": "evaluate a checkpoint on the test set: metrics, per-image CSV, ROC / PR curves",
    "predict": "score a folder of images: per-image CSV and heat maps on the original films",
    "export": "write a checkpoint's scorer as ONNX or TorchScript",
    "configs": "list the example configs shipped with sagan-ad, or copy one out to edit",
}
"""Every ``sagan-ad`` subcommand with its one-line description (``sagan-ad --help``)."""


def overview() -> str:
    """What ``sagan-ad --help`` prints: what the tool is, every subcommand, where to start.

    Examples:
        >>> "export" in overview() and "configs" in overview()
        True
    """
    commands = "\n".join(f"  {name:<10} {text}" for name, text in SUBCOMMANDS.items())
    return f"""sagan-ad {sagan_ad.__version__}: SAGAN (Spatial-aware Attention GAN, MICCAI 2024) for
semi-supervised anomaly detection in medical images. It trains on known normal images plus an
unlabeled mix, scores new images, and draws heat maps of where they look abnormal.

usage: sagan-ad <subcommand> [options]    (sagan-ad <subcommand> --help lists its options)

subcommands:
{commands}

start here:
  sagan-ad fit --config quickstart    train and test on synthetic chest phantoms (minutes, CPU)
  sagan-ad configs                    the other shipped configs: real data, GPUs, W&B logging

options:
  -h, --help    show this overview and exit
  --version     show the version and exit
"""


def front_door(argv: list[str]) -> bool:
    """Answer ``--help``, ``--version``, no subcommand and an unknown subcommand; whether done."""
    first = argv[0] if argv else None
    if first in ("-h", "--help"):
        print(overview(), end="")
        return True
    if first == "--version":
        print(f"sagan-ad {sagan_ad.__version__}")
        return True
    if first is None:
        print(overview(), end="", file=sys.stderr)
        print(
            f"error: no subcommand given: choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    if not first.startswith("-") and first not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {first!r}: choose one of {', '.join(SUBCOMMANDS)} "
            "(sagan-ad --help describes them)",
            file=sys.stderr,
        )
        sys.exit(2)
    return False
