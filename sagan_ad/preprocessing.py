"""What happens to a film before the generator sees it, recorded with the model that learnt it.

`Preprocessing` holds how files were decoded (`DecodeSettings`: DICOM windowing, forced DICOM,
bit depth) and the intensity normalisation of the training images. Fit takes both from the
DataModule; every checkpoint records them (`PREPROCESSING_KEY`), so predict decodes and prepares
new films the way the training films were, without the user repeating a setting, and validate,
test and predict refuse data prepared otherwise. No DataModule reads the model: the command line
(and `sagan_ad.Engine`) hand a predict DataModule the checkpoint's `DecodeSettings`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sagan_ad.data.images.intensity import IntensityNormalization, IntensityNormalizer
from sagan_ad.data.modules.datasets import to_model_range
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.errors import DataMismatchError, InputError

PREPROCESSING_KEY = "sagan_preprocessing"
"""The checkpoint entry that records a model's `Preprocessing` (`Preprocessing.record`)."""


class Preprocessing:
    """A model's pre-processing: how its films were decoded and intensity-normalised.

    `sagan_ad.SAGAN` holds one (``model.preprocessing``), filled at fit from the DataModule
    (`fit`) and saved in every checkpoint (`record`); it is not a constructor setting, because it
    describes the data a model was trained on rather than a choice of the model. Calling it turns
    uint8 images as decoded into the model's input (normalised, then mapped to ``[-1, 1]``), which
    is what predict does with the films of a folder.

    Args:
        normalization: the training images' intensity normalisation (None: not known yet; a
            model that never saw data treats images as decoded).
        decode: the training files' decode settings (None: not recorded, such as a model fitted
            on generated images or written by an older version).

    Examples:
        >>> import torch
        >>> prep = Preprocessing("equalize")
        >>> prep(torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)).flatten()[:2].tolist()
        [-1.0, -0.8666666746139526]
        >>> Preprocessing.from_record(prep.record()).normalization.spec()
        'equalize'
    """

    def __init__(
        self,
        normalization: str | IntensityNormalization | None = None,
        decode: DecodeSettings | None = None,
    ) -> None:
        self.normalization = (
            None if normalization is None else IntensityNormalization.parse(normalization)
        )
        self.decode = decode

    @property
    def applied(self) -> IntensityNormalization:
        """The normalisation images get: the recorded one, or none."""
        return self.normalization or IntensityNormalization("none")

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 images ``(B, C, H, W)`` as decoded -> float model input in ``[-1, 1]``."""
        if self.applied.method != "none":
            images = self.applied.apply(images)
        return to_model_range(images)

    def graph(self) -> IntensityNormalizer | None:
        """The normalisation as a module on model-range images, for an exported graph (None
        without one); CLAHE, which has no graph expression, is refused with what to do."""
        applied = self.applied
        if applied.method == "none":
            return None
        if not applied.graph_expressible:
            raise InputError(
                f"the model was trained on {applied.spec()}-normalised images, which the "
                "exported graph cannot compute: export with input_normalized=True (command "
                "line: --input_normalized) and apply sagan_ad.data.normalize_images(images, "
                f"{applied.spec()!r}) to the uint8 images before scoring"
            )
        return IntensityNormalizer(applied)

    def fit(self, datamodule: object) -> None:
        """Take the normalisation and decode settings of the DataModule a model is fitted on
        (`check` them first: a model that records other ones, resumed or fitted before, is
        refused such data)."""
        theirs = getattr(datamodule, "normalization", None)
        if isinstance(theirs, IntensityNormalization):
            self.normalization = theirs
        decode = DecodeSettings.of(datamodule)
        if decode is not None:
            self.decode = decode

    def check(self, datamodule: object, stage: str) -> None:
        """Refuse a DataModule that prepares images otherwise than the model's record: another
        normalisation (a model without one was trained on images as decoded), or other decode
        settings. DataModules that do not say pass."""
        theirs = getattr(datamodule, "normalization", None)
        ours = self.applied
        # A model that never saw data takes the normalisation of its first fit.
        known = self.normalization is not None or stage != "fit"
        if known and isinstance(theirs, IntensityNormalization) and theirs.spec() != ours.spec():
            raise DataMismatchError(
                f"the model was trained on images with intensity normalisation {ours.spec()} (as "
                f"its checkpoint records), but data.normalization is {theirs.spec()}: set "
                f"data.normalization to {ours.spec()!r} so that {stage} sees images prepared "
                "like the training images"
            )
        decode = DecodeSettings.of(datamodule)
        if decode is not None and self.decode is not None and decode != self.decode:
            raise DataMismatchError(
                f"the model was trained on files decoded with {self.decode.describe()} (as its "
                f"checkpoint records), but the data of {stage} decode them with "
                f"{decode.describe()}: set data.decode to the recorded settings (a predict "
                "DataModule left at decode=None gets them from sagan-ad predict and "
                "sagan_ad.Engine.predict; with a plain Trainer, pass "
                "decode=model.preprocessing.decode of the loaded model, "
                "sagan_ad.load_checkpoint(path))"
            )

    def record(self) -> dict[str, Any]:
        """The pre-processing as plain values, the checkpoint entry `PREPROCESSING_KEY`."""
        return {
            "normalization": None if self.normalization is None else self.normalization.spec(),
            "decode": None if self.decode is None else self.decode.record(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Preprocessing:
        """The pre-processing a checkpoint records (`record`)."""
        if not isinstance(record, dict):
            raise InputError(f"recorded pre-processing {record!r} is not readable: not a mapping")
        decode = record.get("decode")
        return cls(
            record.get("normalization"),
            None if decode is None else DecodeSettings.from_record(decode),
        )

    def __repr__(self) -> str:
        normalization = None if self.normalization is None else self.normalization.spec()
        decode = None if self.decode is None else self.decode.describe()
        return f"Preprocessing(normalization={normalization!r}, decode={decode})"


def adopt_decode(datamodule: object, preprocessing: Preprocessing) -> None:
    """Give a predict DataModule that was built without decode settings (``decode=None``) the
    ones ``preprocessing`` records, so that new films are decoded as the training films were."""
    unset = getattr(datamodule, "decode", False) is None
    if unset and preprocessing.decode is not None:
        datamodule.decode = preprocessing.decode  # type: ignore[attr-defined]
