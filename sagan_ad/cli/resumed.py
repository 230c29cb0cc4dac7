"""A resumed ``fit`` is the run it continues: the settings it is restarted with are compared with
the run's own ``config.yaml``. Data settings that decide which images train and validate may
not change (the best checkpoint would be chosen across two validation sets); other changes are
named in a warning, and ``config.yaml`` keeps the settings the run started with. The scorer's
settings count with the data's: they make the validation AUROC checkpoints are chosen by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_warn

from sagan_ad.errors import InputError

# Data settings that change how images are delivered, not which: a resumed run may change them
# (every setting of the cache group: where and how decoded images are kept).
DELIVERY = frozenset(
    {"batch_size", "eval_batch_size", "num_workers", "data_on_device", "cache", "split.leakage"}
)
# The data's settings groups: None is the group's defaults, as an empty mapping is.
GROUPS = frozenset({"cache", "split", "decode"})
# Command options that say what this command does, not what the run is.
COMMAND = frozenset({"ckpt_path", "config", "weights_only", "allow_untrained"})


def flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys, ``init_args`` left out of the names.

    Examples:
        >>> flat({"data": {"class_path": "D", "init_args": {"seed": 1}}})
        {'data': 'D', 'data.seed': 1}
    """
    out: dict[str, Any] = {}
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config} if prefix else {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "class_path" in value:
            out[name] = value["class_path"]
            out.update(flat(value.get("init_args") or {}, f"{name}."))
            out.update(flat(value.get("dict_kwargs") or {}, f"{name}."))
        elif isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def resumed_differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
    """The settings of ``current`` that differ from the run's ``saved`` config, as
    ``{key: (run's value, this command's value)}``; command options are no difference.

    Examples:
        >>> run = {"data": {"class_path": "D", "init_args": {"seed": 0}}}
        >>> now = {"data": {"class_path": "D", "init_args": {"seed": 1}}, "ckpt_path": "last"}
        >>> resumed_differences(run, now)
        {'data.seed': (0, 1)}
    """
    old, new = flat(_groups_given(saved)), flat(_groups_given(current))
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if key.split(".")[0] not in COMMAND and old.get(key) != new.get(key)
    }


def _groups_given(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the data's settings groups given as None or empty (the group's
    defaults), so that a group's fields compare one by one."""
    data = config.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("init_args"), dict):
        return config
    init = {k: v for k, v in data["init_args"].items() if not (k in GROUPS and not v)}
    return {**config, "data": {**data, "init_args": init}}


def _delivery(setting: str) -> bool:
    """Whether a data setting (``cache.dir``, ``batch_size``) only changes how images are
    delivered."""
    return setting in DELIVERY or setting.split(".")[0] in DELIVERY


def check_resumed_settings(run_folder: Path, current: dict[str, Any], checkpoint: str) -> None:
    """Refuse a resume whose data settings would change which images train or validate, and
    warn of every other setting that differs from the run's ``config.yaml`` (in
    ``run_folder``); nothing to compare when the run kept no config.

    Raises:
        ValueError: naming each data setting, the run's value and what to do.
    """
    saved_file = run_folder / "config.yaml"
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return
    if not isinstance(saved, dict):
        return
    differences = resumed_differences(saved, current)
    if not differences:
        return
    shown = {k: f"{k}={new!r} (the run: {old!r})" for k, (old, new) in differences.items()}
    data = [
        shown[k]
        for k in differences
        if (k.split(".")[0] == "data" and not _delivery(k.split(".", 1)[-1]))
        # The scorer makes the validation AUROC that the best checkpoint is chosen by.
        or k.startswith("model.scorer")
    ]
    if data:
        raise InputError(
            f"--ckpt_path {checkpoint} resumes a run whose data settings were others: "
            f"{', '.join(data)}; the images it trains and validates on (or how validation scores "
            "them) would change mid-run and the best checkpoint be chosen across two validation "
            f"sets. Resume with the run's "
            f"settings ({saved_file}), or start a new run (without --ckpt_path last, or from a "
            "copy of the checkpoint outside the run folder)"
        )
    rank_zero_warn(
        f"--ckpt_path {checkpoint}: resuming with settings that differ from the run's: "
        f"{', '.join(shown.values())}. They apply from the resumed iteration on; "
        f"{saved_file} keeps the settings the run started with, and this command's are saved "
        "beside it as config-resumed-N.yaml"
    )
