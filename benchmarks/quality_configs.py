"""The quality study's configurations (model and data overrides of ``examples/nih_cpu.yaml``),
its intensity settings, and the data each run trains and is scored on (see quality.py)."""

from __future__ import annotations

import csv
import functools
import importlib
import json
from pathlib import Path
from typing import Any

import yaml
from harness import adam
from lightning.pytorch.cli import instantiate_class

from sagan_ad import MedADDataModule

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nih-cxr14-pneumonia"
BASE_CONFIG = REPO / "examples" / "nih_cpu.yaml"


#: Name -> (model overrides, data overrides) relative to ``examples/nih_cpu.yaml``. A model
#: override of a component (`COMPONENTS`) holds some of its arguments; see `model_arguments`.
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "full": ({}, {}),
    "position_none": ({"generator": {"position_encoding": "none"}}, {}),
    "position_reference": ({"generator": {"position_encoding": "reference"}}, {}),
    "no_attention": ({"generator": {"attention_gates": False}}, {}),
    "no_fusion": ({"generator": {"multi_level_fusion": False}}, {}),
    "no_restoration": ({"loss": {"lambda_restoration": 0.0}}, {}),
    "no_identity": ({"loss": {"lambda_identity": 0.0}}, {}),
    "no_unlabeled": ({}, {}),
    "reference_inference": ({"scorer": {"inference": "reference"}}, {}),
    "grid_1": ({"generator": {"patch_grid": 1}}, {}),
    "grid_4": ({"generator": {"patch_grid": 4}}, {}),
    "size_128": ({"generator": {"image_size": 128}}, {"image_size": 128}),
    # Candidates for tuning examples/nih_cpu.yaml (choose on --labelled-val, not on test).
    "lr_2e-4": ({"optimizer_g": adam(2e-4), "optimizer_d": adam(2e-4)}, {}),
    "ttur": ({"optimizer_g": adam(2e-4), "optimizer_d": adam(2e-3)}, {}),
    "n_critic_1": ({"n_critic": 1}, {}),
    "width_16": ({"generator": {"base_channels": 16}, "critic": {"base_channels": 32}}, {}),
    # One unlabeled size for every ratio, the largest the NIH pools allow at ratio 0 (74
    # normals), so that only the mixture changes along the curve.
    **{
        f"ratio_{r:.1f}": ({}, {"split": {"anomaly_ratio": r, "unlabeled_size": 74}})
        for r in (0.0, 0.2, 0.4, 0.6, 0.8)
    },
    # The same on the pediatric films, whose normal pool holds 345 films.
    **{
        f"pediatric_ratio_{r:.1f}": ({}, {"split": {"anomaly_ratio": r, "unlabeled_size": 345}})
        for r in (0.0, 0.3, 0.6, 0.9)
    },
    # The paper's optimizer for both networks, where the base config has another.
    "paper_optimizer": ({"optimizer_g": adam(5e-5), "optimizer_d": adam(5e-5)}, {}),
    # Every unused pneumonia film of the pediatric release in the unlabeled pool (`SPARE_POOL`):
    # 3,000 unlabeled films at ratio 0.9 instead of 800 at 0.6.
    "spare_pool": (
        {},
        {"spare_pool": True, "split": {"anomaly_ratio": 0.9, "unlabeled_size": 3000}},
    ),
}

SPARE_PART = "spare"
"""The ``part`` of ``labels.csv`` that marks the pediatric films ``data.json`` leaves free for
larger pools (its README); ``spare_pool`` adds them to the abnormal pool."""


#: Augmentation presets (``data.augment``) of the study. The brightness shift of 0.2
#: (about 50 grey levels) is larger than the mean-intensity difference between the NIH classes,
#: so it drowns that cue; gamma 0.67-1.5 moves the mid-tones and keeps each film's order of grey
#: levels.
AUGMENTATIONS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "brightness": {"brightness": 0.2},
    "gamma": {"gamma": [0.67, 1.5]},
    "bcg": {"brightness": 0.2, "contrast": 0.2, "gamma": [0.67, 1.5]},
    # Acquisition: each change drawn for half the films, so that neither sharpness, noise, JPEG
    # blocking nor resolution tells the known normals from the unlabeled films.
    "acquisition": {
        "blur": [0.3, 1.5],
        "sharpen": [0.1, 0.6],
        "jpeg": [40, 95],
        "noise": [0.0, 0.03],
        "downscale": [0.4, 1.0],
        "p": 0.5,
    },
    "blur_sharpen": {"blur": [0.3, 1.5], "sharpen": [0.1, 0.6], "p": 0.5},
}


def setting_name(config: str, normalization: str, augmentation: str) -> str:
    """The row name of a configuration under an intensity setting (the plain name for none/none).

    Examples:
        >>> setting_name("full", "clahe", "none")
        'full norm=clahe aug=none'
    """
    if normalization == "none" and augmentation == "none":
        return config
    return f"{config} norm={normalization} aug={augmentation}"


def views(root: Path, names: list[str]) -> list[str] | None:
    """``view_position`` of each image from ``root/labels.csv``, or None without that column."""
    table = root / "labels.csv"
    if not table.is_file():
        return None
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "view_position" not in rows[0]:
        return None
    by_file = {row["file"]: row["view_position"] for row in rows if "file" in row}
    return [by_file.get(Path(name).name, "unknown") for name in names]


def load_base(base: Path = BASE_CONFIG) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and data arguments of the ``base`` YAML."""
    config = yaml.safe_load(Path(base).read_text())
    return dict(config["model"]["init_args"]), dict(config["data"]["init_args"])


#: The components of `sagan_ad.SAGAN` the overrides may set, with their class where the base
#: config gives none.
COMPONENTS = {
    "generator": "sagan_ad.Generator",
    "critic": "sagan_ad.Critic",
    "loss": "sagan_ad.SAGANLoss",
    "scorer": "sagan_ad.Scorer",
    "evaluator": "sagan_ad.Evaluator",
}


def model_arguments(*overrides: dict[str, Any], base: Path = BASE_CONFIG) -> dict[str, Any]:
    """The base config's `sagan_ad.SAGAN` arguments with ``overrides`` applied in order, its
    components built: a component's override updates its ``init_args``, any other override
    replaces the argument.

    Examples:
        >>> arguments = model_arguments({"critic": {"base_channels": 32}}, {"n_critic": 1})
        >>> arguments["critic"].base_channels, arguments["generator"].base_channels
        (32, 8)
        >>> arguments["n_critic"], arguments["max_iterations"]
        (1, 1500)
    """
    arguments, _ = load_base(base)
    for override in overrides:
        for name, value in override.items():
            if name in COMPONENTS:
                spec = arguments.get(name, {"class_path": COMPONENTS[name]})
                value = {**spec, "init_args": {**spec.get("init_args", {}), **value}}
            arguments[name] = value
    return {name: built(name, value) for name, value in arguments.items()}


#: SAGAN's arguments that take a factory (the YAML gives a ``class_path`` mapping for them).
FACTORIES = ("optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d")


def built(name: str, value: Any) -> Any:
    """An argument of `sagan_ad.SAGAN` as the command line builds it from the YAML: a component
    instantiated, an optimizer or scheduler mapping as a factory of its class."""
    if name in COMPONENTS:
        return instantiate_class((), value)
    if name in FACTORIES and isinstance(value, dict):
        module, _, cls = value["class_path"].rpartition(".")
        arguments = {
            key: tuple(v) if isinstance(v, list) else v
            for key, v in value.get("init_args", {}).items()
        }
        return functools.partial(getattr(importlib.import_module(module), cls), **arguments)
    return value


def make_data(
    root: Path,
    overrides: dict[str, Any],
    seed: int,
    val_abnormal: int,
    balance_by: str | None = None,
    group_by: str | None = None,
    base: Path = BASE_CONFIG,
) -> MedADDataModule:
    """The base DataModule with ``overrides`` and ``val_abnormal`` (see `MedADDataModule`); with
    ``balance_by`` the labelled carve-out is balanced by that column of ``root/labels.csv``, with
    ``group_by`` the validation hold-out keeps that column's groups (patients) out of training."""
    _, data_args = load_base(base)
    split = dict(data_args.pop("split", None) or {})
    # The flags, not the YAML, decide balancing and grouping: the table's header records them,
    # and a data set without the YAML's labels.csv columns still runs.
    data_args.pop("metadata_csv", None)
    for key in ("val_balance_by", "group_by"):
        split.pop(key, None)
    overrides = dict(overrides)
    if overrides.pop("spare_pool", False):
        split["file"] = spare_pool_split(root)
    split.update(val_abnormal=val_abnormal, **overrides.pop("split", {}))
    data_args.update(root=str(root), seed=seed, **overrides)
    if balance_by:
        data_args.update(metadata_csv="labels.csv")
        split.update(val_balance_by=balance_by)
    if group_by:
        data_args.update(metadata_csv="labels.csv")
        split.update(group_by=group_by)
    data = MedADDataModule(**data_args, split=split)
    data.setup("fit")
    return data


def spare_pool_split(root: Path) -> Path:
    """``root``'s ``data.json`` with every ``labels.csv`` film of part `SPARE_PART` appended to
    the abnormal pool, written beside the study's outputs (never into the data set)."""
    split = json.loads((root / "data.json").read_text())
    with (root / "labels.csv").open(newline="") as handle:
        spare = [row["file"] for row in csv.DictReader(handle) if row.get("part") == SPARE_PART]
    if not spare:
        raise SystemExit(
            f"error: spare_pool: {root / 'labels.csv'} marks no film part={SPARE_PART}"
        )
    split["train"]["unlabeled"]["1"] = split["train"]["unlabeled"]["1"] + spare
    path = REPO / "runs" / "quality" / f"{root.name}_spare_pool.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split))
    return path
