"""The ``sagan-ad`` command line: Lightning's CLI with sagan_ad's defaults, checks and
subcommands (`sagan_ad.cli.app`), its help (`usage`), its error lines (`errors`), the checks of
settings and output folders (`checks`), ``--ckpt_path`` (`checkpoint`) and the ``export`` and
``configs`` subcommands (`commands`)."""

from sagan_ad.cli.app import SAGANCLI, main

__all__ = ["SAGANCLI", "main"]
