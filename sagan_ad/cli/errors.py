"""Which exceptions the ``sagan-ad`` command line reports as one ``error: <message>`` line: the
library's verdicts on the user's data, configuration, run or environment, as opposed to bugs
(which keep their traceback)."""

from __future__ import annotations

import traceback
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException

import sagan_ad
from sagan_ad.training.checkpoint_files import CheckpointError
from sagan_ad.training.divergence import DivergenceError

_GPU_MISSING = "No supported gpu backend found"
"""Lightning's whole message for ``accelerator: gpu`` on a machine without one."""


def _user_error(error: BaseException) -> BaseException | None:
    """The library's message about the user's input or run behind ``error``, if any (not a bug).

    jsonargparse re-raises a model's or DataModule's ``ValueError`` wrapped in its own, so the
    chain of causes is searched.
    """
    package = str(Path(sagan_ad.__file__).parent)
    cause: BaseException | None = error
    while cause is not None:
        # Lightning's MisconfigurationException is its verdict on a Trainer setting the user
        # chose (max_steps=-5, devices=0, a GPU accelerator without a GPU).
        if isinstance(cause, MisconfigurationException) and _GPU_MISSING in str(cause):
            return RuntimeError(
                f"{cause} The config asks for a GPU (trainer.accelerator: gpu): on a machine "
                "without one, add --trainer.accelerator cpu"
            )
        if isinstance(
            cause,
            DivergenceError | sagan_ad.ImageReadError | CheckpointError | MisconfigurationException,
        ):
            return cause
        # W&B's own errors (no API key, no network) are about the user's environment; wandb is
        # optional, so they are known by their module rather than imported.
        if type(cause).__module__.startswith("wandb.errors"):
            return RuntimeError(
                f"W&B: {cause} To log without an account, set WANDB_MODE=offline (the run "
                "stays on disk for `wandb sync`), or choose another logger with --trainer.logger"
            )
        frames = traceback.extract_tb(cause.__traceback__)
        # Raised by sagan_ad's own argument and data checks, not deep inside a dependency (an
        # ImportError from sagan_ad names the missing optional extra).
        if (
            isinstance(cause, ValueError | OSError | ImportError)
            and frames
            and frames[-1].filename.startswith(package)
        ):
            return cause
        cause = cause.__cause__
    return None
