"""What a SAGAN checkpoint carries beyond the weights (the iteration, the model's class, every
RNG state, the training data's pre-processing), how a SAGAN takes weights by any route
(`CheckedLoading`), and the checks that decide whether a model may evaluate: trained weights,
and data that match it."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from sagan_ad.errors import DataMismatchError, InputError
from sagan_ad.preprocessing import PREPROCESSING_KEY, Preprocessing
from sagan_ad.training.checkpoint_files import (
    CheckpointError,
    check_model_class,
    model_class_name,
)
from sagan_ad.training.checkpoint_settings import check_weights_fit
from sagan_ad.training.checkpoint_upgrade import (
    FORMAT_KEY,
    FORMAT_VERSION,
    checkpoint_source,
    format_version,
    upgraded,
)
from sagan_ad.training.checkpointing import global_rng_state, set_global_rng_state


def write_run_state(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Add the iteration, the model's class, its pre-processing and the RNG states to
    ``checkpoint``."""
    checkpoint[FORMAT_KEY] = FORMAT_VERSION
    checkpoint["sagan_iteration"] = module.iteration
    checkpoint[PREPROCESSING_KEY] = module.preprocessing.record()
    checkpoint["sagan_model_class"] = model_class_name(type(module))
    checkpoint["sagan_global_rng_state"] = global_rng_state()
    checkpoint["sagan_rng_state"] = (module.rng.device.type, module.rng.get_state())


def read_run_state(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Check ``checkpoint``'s format and class against ``module`` and restore the run state
    `write_run_state` saved; every load passes here (a Trainer's ``ckpt_path``,
    ``load_from_checkpoint``, `sagan_ad.load_checkpoint`), and its weights next through
    `CheckedLoading.load_state_dict`."""
    format_version(checkpoint)
    check_model_class(checkpoint, type(module))
    module.iteration = int(checkpoint.get("sagan_iteration", 0))
    # Checked when the weights are in (`CheckedLoading.load_state_dict`); checkpoints from
    # before the iteration was recorded count as trained.
    module._loading_untrained = checkpoint.get("sagan_iteration") == 0
    # For `CheckedLoading.load_state_dict` to name the settings of weights that do not fit.
    module._loading_settings = checkpoint.get("hyper_parameters") or {}
    module.randomness.load(checkpoint)
    module.preprocessing = preprocessing_of(checkpoint)


def preprocessing_of(checkpoint: dict[str, Any]) -> Preprocessing:
    """The pre-processing a checkpoint's model was trained with, in any version's record;
    checkpoints from before normalisation existed were trained on images as decoded.

    Examples:
        >>> preprocessing_of({"hyper_parameters": {"normalization": "equalize"}})
        Preprocessing(normalization='equalize', decode=None)
        >>> preprocessing_of({}).normalization.spec()
        'none'
    """
    # An older checkpoint kept the normalisation among the model's settings: read it where the
    # upgrade puts it.
    record = upgraded(checkpoint).get(PREPROCESSING_KEY)
    try:
        return Preprocessing.from_record(record)
    except InputError as err:
        # No version of sagan-ad writes a record it cannot read back.
        raise CheckpointError(
            f"the checkpoint records a pre-processing that cannot be read ({err}). The file was "
            "edited or damaged after it was written: use an unedited checkpoint of the run"
        ) from err


class CheckedLoading:
    """How a SAGAN takes weights, whatever route brings them (`sagan_ad.load_checkpoint`,
    Lightning's ``load_from_checkpoint``, a Trainer's ``ckpt_path``, a user's own
    ``load_state_dict``): checkpoints of any recorded format, and weights that fit.

    Examples:
        >>> from sagan_ad import SAGAN, Critic, Generator
        >>> model = SAGAN(Generator(image_size=32, base_channels=4), Critic(1, 4, 5))
        >>> model.load_state_dict(model.state_dict())
        <All keys matched successfully>
    """

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, reading the file once, refusing a missing,
        damaged or unsafe one by name, and reading checkpoints of sagan_ad v0.1 too (flat
        settings, `sagan_ad.training.checkpoint_upgrade`). `sagan_ad.load_checkpoint` also
        finds the class the checkpoint records."""
        source = checkpoint_source(checkpoint_path, kwargs.get("weights_only"))
        return super().load_from_checkpoint(source, *args, **kwargs)  # type: ignore[misc]

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``torch.nn.Module.load_state_dict``, refusing before a tensor is copied weights of
        another architecture, or holding NaN, and naming the settings that differ
        (`sagan_ad.training.checkpoint_settings.check_weights_fit`) where torch would list
        every key; weights from before thresholds existed load with no threshold chosen."""
        module: Any = self
        settings, module._loading_settings = module._loading_settings, None
        state_dict = {"threshold": torch.tensor(float("nan")), **state_dict}
        source = "the checkpoint" if settings is not None else "the state dict"
        check_weights_fit(
            {"state_dict": state_dict, "hyper_parameters": settings}, module, source, strict
        )
        keys = super().load_state_dict(state_dict, strict, assign)  # type: ignore[misc]
        # Trained weights now, unless saved before any iteration (the untrained network).
        module._weights_loaded = not module._loading_untrained
        module._loading_untrained = False
        return keys


def check_trained(module: L.LightningModule, stage: str) -> None:
    """Refuse to evaluate a model that never trained nor loaded weights (a random network)."""
    if module.iteration > 0 or module._weights_loaded or module.allow_untrained:
        return
    raise InputError(
        f"{stage} refused: the model is untrained (iteration 0, and no checkpoint of a "
        "later iteration or state dict loaded), so it "
        "would score a random network. Pass the trained weights (sagan-ad: --ckpt_path last, "
        "best or a .ckpt file; Python: ckpt_path= of the Trainer, or "
        "sagan_ad.load_checkpoint(path)), or --allow_untrained true (Python: "
        "model.allow_untrained = True) to evaluate the untrained network on purpose"
    )


class TrainingRandomness:
    """The random draws of training (pseudo anomalies, gradient-penalty interpolation), seeded,
    and the global RNG states a resumed checkpoint carried.

    Examples:
        >>> draws = TrainingRandomness(seed=0)
        >>> a = torch.rand(1, generator=draws.generator(torch.device("cpu")))
        >>> a.equal(torch.rand(1, generator=TrainingRandomness(0).generator(torch.device("cpu"))))
        True
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._saved: tuple[str, torch.Tensor] | None = None
        self._global: dict[str, Any] | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator on ``device``, with a loaded state when it was saved on that device
        type (a state cannot be transplanted to another: the seed is used then)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._saved is not None and self._saved[0] == device.type:
                self._generator.set_state(self._saved[1])
            self._saved = None
        return self._generator

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Take the states of ``checkpoint``; restored lazily, once the module is on its
        device (`generator`) and right before the first resumed iteration (`restore_global`)."""
        self._generator, self._saved = None, checkpoint.get("sagan_rng_state")
        self._global = checkpoint.get("sagan_global_rng_state")

    def restore_global(self, resuming: bool) -> None:
        """Restore the global RNG states of a resumed run now rather than at load time:
        Lightning draws from the global RNG in between (sanity check, DataLoader seeds)."""
        if self._global is not None and resuming:
            set_global_rng_state(self._global)
        self._global = None


def check_data_matches(module: L.LightningModule, datamodule: Any, stage: str) -> None:
    """Refuse data of another size or channel count than the model's, or prepared otherwise than
    its recorded pre-processing (`sagan_ad.Preprocessing.check`)."""
    for name in ("image_size", "in_channels"):
        theirs = getattr(datamodule, name, None)
        ours = getattr(module.generator, name)
        if theirs is not None and theirs != ours:
            raise DataMismatchError(
                f"model.generator.{name}={ours} but data.{name}={theirs}: set both to the same "
                "value"
            )
    module.preprocessing.check(datamodule, stage)
