"""Which exceptions the ``sagan-ad`` command line reports as one ``error: <message>`` line: the
library's verdicts on the user's data, configuration, run or environment, as opposed to bugs
(which keep their traceback)."""

from __future__ import annotations

from lightning.fabric.utilities.exceptions import MisconfigurationException

from sagan_ad.errors import UserError

_GPU_MISSING = "No supported gpu backend found"
"""Lightning's whole message for ``accelerator: gpu`` on a machine without one."""


def user_error(error: BaseException) -> BaseException | None:
    """The library's message about the user's input or run behind ``error``, if any (not a bug):
    a `sagan_ad.errors.UserError`, or Lightning's verdict on a Trainer setting.

    jsonargparse re-raises a model's or DataModule's error wrapped in its own, so the chain of
    causes is searched.
    """
    cause: BaseException | None = error
    while cause is not None:
        # Lightning's MisconfigurationException is its verdict on a Trainer setting the user
        # chose (max_steps=-5, devices=0, a GPU accelerator without a GPU).
        if isinstance(cause, MisconfigurationException) and _GPU_MISSING in str(cause):
            return RuntimeError(
                f"{cause} The config asks for a GPU (trainer.accelerator: gpu): on a machine "
                "without one, add --trainer.accelerator cpu"
            )
        if isinstance(cause, UserError | MisconfigurationException):
            return cause
        # W&B's own errors (no API key, no network) are about the user's environment; wandb is
        # optional, so they are known by their module rather than imported.
        if type(cause).__module__.startswith("wandb.errors"):
            return RuntimeError(
                f"W&B: {cause} To log without an account, set WANDB_MODE=offline (the run "
                "stays on disk for `wandb sync`), or choose another logger with --trainer.logger"
            )
        cause = cause.__cause__
    return None
