"""The resolved command-line config, kept with the run and handed to its loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from sagan_ad.atomic import atomic_path
from sagan_ad.protected import input_role, mark_output_folder
from sagan_ad.training.resume import continued_checkpoint
from sagan_ad.training.runs import RUN_FOLDER_SETTING, run_dir
from sagan_ad.training.tracking import save_run_files


def plain_config(parser: Any, config: Any) -> dict[str, Any]:
    dumped = yaml.safe_load(parser.dump(config, skip_none=False, skip_link_targets=False))
    subcommand = dumped.get("subcommand")
    return dumped[subcommand] if subcommand else dumped


def config_hyperparameters(config: dict[str, Any], logged: dict[str, Any]) -> dict[str, Any]:
    """What a run's loggers get beside the model's own hyper-parameters (``logged``): the model
    class, the model arguments the model does not record itself (a subclass's own), and the
    data, trainer and seed settings.

    Examples:
        >>> config = {"model": {"class_path": "sagan_ad.SAGAN", "init_args": {"image_size": 32,
        ...           "optimizer_g": {"class_path": "torch.optim.Adam"}}},
        ...           "data": {"class_path": "sagan_ad.SyntheticCXRDataModule"},
        ...           "seed_everything": 0}
        >>> sorted(config_hyperparameters(config, {"image_size": 32}))
        ['data', 'model_class', 'optimizer_g', 'seed_everything']
    """
    model = config.get("model") or {}
    extra: dict[str, Any] = {}
    if isinstance(model, dict) and "class_path" in model:
        extra["model_class"] = model["class_path"]
        arguments = {**(model.get("init_args") or {}), **(model.get("dict_kwargs") or {})}
        extra.update({k: v for k, v in arguments.items() if k not in logged})
    extra.update({k: config[k] for k in ("data", "trainer", "seed_everything") if k in config})
    return extra


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run's own folder (`run_dir`) and log
    the whole configuration to every logger (`config_hyperparameters`); a W&B run also gets the
    file, as ``sagan_ad_config.yaml``.

    The CLI uses it in place of Lightning's `SaveConfigCallback`, which writes into
    ``trainer.log_dir``: the folder every W&B run of a ``save_dir`` shares.

    Examples:
        >>> SAGANCLI(SAGAN, save_config_callback=RunConfigSaver)  # doctest: +SKIP
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_dir(trainer)
        if trainer.is_global_zero:
            mark_output_folder(folder, RUN_FOLDER_SETTING)
            resumed = stage == "fit" and continued_checkpoint(trainer) is not None
            self._write(folder / self.config_filename, resumed)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _write(self, target: Path, resumed: bool) -> None:
        """Write the config to ``target`` atomically; a resumed run's (or an input's) own
        ``config.yaml`` is kept, and a config that differs goes beside it as
        ``config-resumed-N.yaml``: the file says what the run started with."""
        if self.multifile:
            self.parser.save(self.config, target, skip_none=False, overwrite=True, multifile=True)
            return
        text = self.parser.dump(self.config, skip_none=False)
        if target.is_file() and (resumed or input_role(target) is not None):
            if target.read_text(encoding="utf-8") == text:
                return
            number = 1
            while target.with_name(f"{target.stem}-resumed-{number}{target.suffix}").exists():
                number += 1
            target = target.with_name(f"{target.stem}-resumed-{number}{target.suffix}")
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = plain_config(self.parser, self.config)
        extra = config_hyperparameters(config, dict(getattr(pl_module, "hparams", {})))
        for logger in trainer.loggers:
            logger.log_hyperparams(extra)
        save_run_files(trainer, [run_dir(trainer) / self.config_filename])
