"""Checkpoints of earlier formats, read as the current one.

Every checkpoint records its format (`FORMAT_KEY`); those written before the record are known by
their contents:

- **1**, sagan_ad v0.1: flat model settings (``image_size``, ``lambda_gp``, ...) instead of
  components, and the training data's ``normalization`` among them;
- **2**, components (until 2026-12-07): the normalisation among the scorer's settings;
- **3** (`FORMAT_VERSION`): the pre-processing record
  (`sagan_ad.preprocessing.PREPROCESSING_KEY`) and the format key.

`upgrade_checkpoint` rewrites formats 1 and 2 as 3 in place, so that both committed fixtures
(``tests/fixtures/``) load and score as they did; a checkpoint of a newer format is refused with
what to do. Only checkpoints are upgraded: the v0.1 command-line flags, config keys and module
paths were dropped (no version was published; see ``docs/changelog.md``).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import torch

from sagan_ad.preprocessing import PREPROCESSING_KEY
from sagan_ad.settings import INSTANTIATOR
from sagan_ad.training.checkpoint_files import CheckpointError, read_checkpoint

FORMAT_KEY = "sagan_format"
"""The checkpoint entry that records its format (`FORMAT_VERSION` when written now)."""
FORMAT_VERSION = 3
"""The checkpoint format this version writes, and the newest it reads."""

_GENERATOR = (
    "in_channels",
    "image_size",
    "base_channels",
    "num_res_blocks",
    "patch_grid",
    "position_encoding",
    "attention_gates",
    "multi_level_fusion",
    "residual_keep_prob",
)
V0_1_SETTINGS: dict[str, tuple[str, str]] = {
    **{name: ("generator", name) for name in _GENERATOR},
    "critic_base_channels": ("critic", "base_channels"),
    "critic_downsamples": ("critic", "num_downsamples"),
    "lambda_gp": ("loss", "lambda_gp"),
    "lambda_identity": ("loss", "lambda_identity"),
    "lambda_restoration": ("loss", "lambda_restoration"),
    "map_sigma": ("scorer", "map_sigma"),
    "score_top_fraction": ("scorer", "top_fraction"),
    "inference": ("scorer", "inference"),
    "threshold_policy": ("evaluator", "threshold_policy"),
    "threshold_percentile": ("evaluator", "threshold_percentile"),
    "bootstrap_resamples": ("evaluator", "bootstrap_resamples"),
    "shortcut_audit": ("evaluator", "shortcut_audit"),
    "subgroup_columns": ("evaluator", "subgroup_columns"),
    "channels_last": ("performance", "channels_last"),
    "compile": ("performance", "compile"),
    "compile_options": ("performance", "compile_options"),
    "divergence_check_interval": ("performance", "divergence_check_interval"),
}
"""Each flat setting of a format-1 checkpoint that belongs to a component now:
``(component, argument)``. ``seed`` stays and also seeds the evaluator's bootstrap, as it did."""

_COMPONENT_CLASSES = {
    "generator": "sagan_ad.Generator",
    "critic": "sagan_ad.Critic",
    "loss": "sagan_ad.SAGANLoss",
    "scorer": "sagan_ad.Scorer",
    "evaluator": "sagan_ad.Evaluator",
}


def format_version(checkpoint: dict[str, Any], source: str = "the checkpoint") -> int:
    """The format of ``checkpoint`` (recorded, or known by its contents); a newer format than
    `FORMAT_VERSION`, or a record that is not a format, is refused naming ``source``.

    Examples:
        >>> format_version({"hyper_parameters": {"image_size": 32}})
        1
        >>> format_version({"hyper_parameters": {"scorer": None}}), format_version({FORMAT_KEY: 3})
        (2, 3)
    """
    recorded = checkpoint.get(FORMAT_KEY)
    if recorded is not None:
        if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 1:
            raise CheckpointError(
                f"{source} records format {recorded!r}, which no version of sagan-ad "
                "writes: the file was edited or damaged"
            )
        if recorded > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format {recorded}, written by a newer version of sagan-ad "
                f"(this one reads formats up to {FORMAT_VERSION}): upgrade sagan-ad "
                "(pip install -U sagan-ad)"
            )
        return recorded
    settings = checkpoint.get("hyper_parameters")
    if isinstance(settings, dict) and _is_flat(settings):
        return 1
    return 3 if PREPROCESSING_KEY in checkpoint else 2


def _is_flat(settings: dict[str, Any]) -> bool:
    # Flat keys beside components were added by hand: they are refused later as settings the
    # model does not take, rather than read as v0.1's.
    flat = any(key in V0_1_SETTINGS for key in settings)
    return flat and all(settings.get(component) is None for component in _COMPONENT_CLASSES)


def upgrade_checkpoint(checkpoint: dict[str, Any], source: str = "the checkpoint") -> bool:
    """Rewrite ``checkpoint`` (in place) in the current format; True when anything changed (a
    newer format is refused naming ``source``, `format_version`).

    Examples:
        >>> checkpoint = {"hyper_parameters": {"image_size": 32, "seed": 3}}
        >>> upgrade_checkpoint(checkpoint), checkpoint["hyper_parameters"]["evaluator"]
        (True, {'class_path': 'sagan_ad.Evaluator', 'init_args': {'seed': 3}})
        >>> checkpoint[PREPROCESSING_KEY], upgrade_checkpoint(checkpoint)
        ({'normalization': 'none', 'decode': None}, False)
    """
    version = format_version(checkpoint, source)
    if version == FORMAT_VERSION:
        return False
    settings = checkpoint.get("hyper_parameters")
    if not isinstance(settings, dict):
        settings = {}
    if version == 1:
        settings = _components_of_flat(settings)
        checkpoint["hyper_parameters"] = settings
    if PREPROCESSING_KEY not in checkpoint:
        checkpoint[PREPROCESSING_KEY] = {"normalization": _pop_normalization(settings)}
        checkpoint[PREPROCESSING_KEY]["decode"] = None
    checkpoint[FORMAT_KEY] = FORMAT_VERSION
    return True


def upgraded(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The entries an upgrade of ``checkpoint`` would give, leaving it as it is (the weights are
    shared, not copied; a checkpoint in the current format is returned as it is).

    Examples:
        >>> upgraded({"hyper_parameters": {"normalization": "equalize", "lambda_gp": 5.0}})[
        ...     PREPROCESSING_KEY]["normalization"]
        'equalize'
    """
    if format_version(checkpoint) == FORMAT_VERSION:
        return checkpoint
    copied = {key: value for key, value in checkpoint.items() if key != "hyper_parameters"}
    copied["hyper_parameters"] = copy.deepcopy(checkpoint.get("hyper_parameters"))
    upgrade_checkpoint(copied)
    return copied


def _pop_normalization(settings: dict[str, Any]) -> str:
    """Take the normalisation out of format 1 or 2 settings (none recorded: images as decoded)."""
    scorer = settings.get("scorer")
    arguments = scorer.get("init_args") if isinstance(scorer, dict) else None
    found = [
        place.pop("normalization")
        for place in (settings, arguments)
        if isinstance(place, dict) and "normalization" in place
    ]
    return (found[-1] if found else None) or "none"


def _components_of_flat(settings: dict[str, Any]) -> dict[str, Any]:
    """Format 1's flat settings as the component settings that mean the same model.

    Components get a ``class_path`` mapping; the critic keeps v0.1's rule that its width and
    channels follow the generator's unless set. Settings that did not move are kept.
    """
    kept = {k: v for k, v in settings.items() if k not in V0_1_SETTINGS}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if key in V0_1_SETTINGS:
            component, argument = V0_1_SETTINGS[key]
            parts.setdefault(component, {})[argument] = value
    critic = parts.get("critic")
    if critic is not None:
        generator = parts.get("generator", {})
        if critic.get("base_channels") is None:
            critic.pop("base_channels", None)
            if "base_channels" in generator:
                critic["base_channels"] = generator["base_channels"]
        if "in_channels" in generator:
            critic.setdefault("in_channels", generator["in_channels"])
    if "seed" in settings:
        parts.setdefault("evaluator", {}).setdefault("seed", settings["seed"])
    for component, arguments in parts.items():
        if component in _COMPONENT_CLASSES:
            kept[component] = {"class_path": _COMPONENT_CLASSES[component], "init_args": arguments}
        else:
            kept[component] = arguments
    # Only Lightning's own instantiator turns the class_path mappings back into components.
    kept["_instantiator"] = INSTANTIATOR
    return kept


class CurrentCheckpoint(io.BytesIO):
    """A checkpoint read into memory and already in the current format (by `load_checkpoint`
    or `checkpoint_source`), which `checkpoint_source` hands on without reading it again."""


def checkpoint_source(path: Any, weights_only: bool | None = None) -> Any:
    """What to hand Lightning's ``load_from_checkpoint`` for ``path``: a local file or a file
    object read once (`read_checkpoint` for a file, which names a missing, damaged or unsafe
    one) and handed on in memory, in the current format (`upgrade_checkpoint`); a remote path
    is passed on as it is, for Lightning to read.

    Args:
        path: a checkpoint file, a file object, or a remote address (``s3://...``).
        weights_only: as ``load_from_checkpoint``'s: only ``False`` allows pickled code.

    Examples:
        >>> checkpoint_source("s3://bucket/last.ckpt")
        's3://bucket/last.ckpt'
    """
    if isinstance(path, CurrentCheckpoint):
        return path
    safe = weights_only is not False
    if hasattr(path, "read"):
        checkpoint = torch.load(io.BytesIO(path.read()), map_location="cpu", weights_only=safe)
    elif isinstance(path, (str, Path)) and "://" not in str(path):
        checkpoint = read_checkpoint(path, weights_only=safe)
    else:
        return path
    upgrade_checkpoint(checkpoint, f"checkpoint {str(path)!r}")
    buffer = CurrentCheckpoint()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer
