"""What SAGAN logs at each training iteration (and when it reads the device to do so) and after
each validation and test."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from sagan_ad.evaluation.audit import ShortcutWarning
from sagan_ad.evaluation.report import EvaluationReport


class TrainingLogs:
    """Sends a SAGAN's per-iteration losses and its evaluation metrics to the Trainer's loggers.

    Critic losses are logged through Lightning every iteration (converted to numbers, a device
    sync, only every ``log_every_n_steps``). Generator losses exist only on generator iterations;
    Lightning's logger path would re-send a step metric's last value at every logging iteration
    (step-shaped curves from critic-only iterations), so they go to the loggers directly from
    generator iterations only: the first at or after each logging iteration, and the last one.

    Examples:
        >>> TrainingLogs().latest
        {}
    """

    def __init__(self) -> None:
        self.latest: dict[str, Tensor] = {}

    def log_step(self, module: L.LightningModule, logs: dict[str, Tensor]) -> None:
        """Log one iteration's ``train/...`` losses (before ``module.iteration`` advances)."""
        generator = {k: v for k, v in logs.items() if "/generator/" in k}
        if generator:
            self.latest = generator
            module.log_dict(generator, logger=False, on_step=True, on_epoch=False)
        critic = {k: v for k, v in logs.items() if k not in generator}
        module.log_dict(critic, on_step=True, on_epoch=False)
        # A Python number would be copied to the device by `log`, and that blocking copy waits
        # for all queued GPU work at every step; `torch.full` writes it on the device. A metric
        # named "step" sets the loggers' x-axis.
        step = torch.full((), module.iteration, dtype=torch.float32, device=module.device)
        module.log("step", step, on_step=True, on_epoch=False)
        # The progress bar converts these at each refresh: give it a `refresh_rate` of tens.
        bar = {"loss_d": logs["train/critic/loss"]}
        if self.latest:
            bar["loss_g"] = self.latest["train/generator/loss"]
        module.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def send_generator_logs(self, module: L.LightningModule) -> None:
        """After an iteration: send its generator losses if it is a generator iteration due for
        logging (reads the device only then)."""
        done = module.iteration
        every = module.trainer.log_every_n_steps
        if not self.latest or done % module.n_critic or every < 1:
            return
        last = done >= module.max_iterations
        if done // every == max(done - module.n_critic, 0) // every and not last:
            return
        numbers = {k: float(v) for k, v in self.latest.items()}
        for logger in module.loggers:
            logger.log_metrics(numbers, step=done - 1)

    def log_report(self, module: L.LightningModule, stage: str, report: EvaluationReport) -> None:
        """Log a validation's or test's metrics (AUROC and AP on the progress bar too), with the
        iteration as step, raise the report's warnings (the shortcut audit's as
        `ShortcutWarning`) and log its notes."""
        for message in report.warnings:
            audit = message.startswith("shortcut audit")
            rank_zero_warn(message, category=ShortcutWarning if audit else UserWarning)
        for note in report.notes:
            rank_zero_info(note)
        logged = {f"{stage}/{k}": v for k, v in report.metrics.items()}
        main = {k: logged.pop(k) for k in (f"{stage}/AUROC", f"{stage}/AP")}
        module.log_dict(main, prog_bar=True)
        module.log_dict(logged)
        module.log_dict({"iteration": float(module.iteration), "step": float(module.iteration)})
