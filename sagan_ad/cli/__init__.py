"""The ``sagan-ad`` command line: Lightning's CLI with sagan_ad's defaults, checks and
subcommands (`sagan_ad.cli.app`), its help (`usage`), its error lines (`errors`), the checks of
settings and output folders (`checks`), ``--ckpt_path`` (`checkpoint`) and the ``export`` and
``configs`` subcommands (`commands`).

``--help``, ``--version`` and ``configs`` answer from here without importing torch or Lightning
(a second or more of start-up); every other subcommand loads them through `sagan_ad.cli.app`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from sagan_ad.cli.usage import front_door

if TYPE_CHECKING:
    from sagan_ad.cli.app import SAGANCLI

__all__ = ["SAGANCLI", "main"]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sagan-ad`` console script (see `sagan_ad.cli.app.main`).

    Examples:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        sagan-ad ...
    """
    argv = sys.argv[1:] if args is None else list(args)
    if front_door(argv):
        return
    if argv[:1] == ["configs"]:
        from sagan_ad.cli.commands import configs_main

        try:
            configs_main(argv[1:])
        except Exception as error:
            from sagan_ad.cli.app import report

            report(error)
        return
    from sagan_ad.cli.app import main as run

    run(argv)


def __getattr__(name: str) -> Any:
    if name == "SAGANCLI":
        from sagan_ad.cli.app import SAGANCLI

        return SAGANCLI
    raise AttributeError(f"module 'sagan_ad.cli' has no attribute {name!r}")
