"""A checkpoint rebuilds the model that wrote it: every constructor argument, the synthesizer and
the optimizer and scheduler factories included, survives save -> load -> score -> export; what
cannot be recorded warns when saved and when loaded, naming how to pass it."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from conftest import tiny_networks, tiny_trainer

from sagan_ad import (
    SAGAN,
    CutPasteSynthesizer,
    FPISynthesizer,
    PatchBlendSynthesizer,
    PerlinBlobSynthesizer,
    Scorer,
    Synthesizer,
    SyntheticCXRDataModule,
    export_scorer,
    load_checkpoint,
    paper_adam,
)
from sagan_ad.training import hparams
from sagan_ad.training.checkpoint_files import CheckpointError


class StripeSynthesizer(Synthesizer):
    """A user's own synthesizer: a bright vertical stripe of ``width`` pixels."""

    def __init__(self, width: int = 3, brightness: float = 0.5) -> None:
        self.width = width
        self.brightness = brightness

    def __call__(self, images, generator):
        masks = torch.zeros_like(images)
        start = int(torch.randint(0, images.shape[-1] - self.width, (1,), generator=generator))
        masks[..., start : start + self.width] = 1.0
        return (images + self.brightness * masks).clamp(-1, 1), masks


def sgd_factory(params) -> torch.optim.Optimizer:
    """A user's module-level optimizer factory."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def save(model: SAGAN, tmp_path, name: str = "model.ckpt"):
    model.iteration = 3  # as if trained: scoring and export refuse iteration 0
    trainer = tiny_trainer(tmp_path)
    trainer.strategy.connect(model)
    path = tmp_path / name
    trainer.save_checkpoint(path)
    return path


def load_fully_recorded(path) -> SAGAN:
    """Load ``path``, failing on any warning that a setting was not recorded or restored."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = load_checkpoint(path)
    assert not [str(w.message) for w in seen if "record" in str(w.message)]
    return model


def optimizer_settings(model: SAGAN):
    (config_g, config_d) = model.configure_optimizers()
    settings = []
    for config in (config_g, config_d):
        optimizer = config["optimizer"]
        group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        scheduler = config.get("lr_scheduler", {}).get("scheduler")
        settings.append(
            (type(optimizer), group, type(scheduler), getattr(scheduler, "step_size", None))
        )
    return settings


SYNTHESIZERS = {
    "patch_blend": PatchBlendSynthesizer(max_half_width=0.3, blend_min=0.4),
    "perlin": PerlinBlobSynthesizer(min_area=0.05, max_scale=3),
    "cut_paste": CutPasteSynthesizer(max_area=0.2, brightness=0.2),
    "fpi": FPISynthesizer(min_size=0.2, max_size=0.4),
    "users_own": StripeSynthesizer(width=5, brightness=0.25),
}


@pytest.mark.parametrize("name", sorted(SYNTHESIZERS))
def test_each_synthesizer_survives_save_load_and_scoring(name, tmp_path):
    synthesizer = SYNTHESIZERS[name]
    model = SAGAN(**tiny_networks(), synthesizer=synthesizer).eval()
    loaded = load_fully_recorded(save(model, tmp_path))
    assert type(loaded.synthesizer) is type(synthesizer)
    assert vars(loaded.synthesizer) == vars(synthesizer)
    # Its pseudo anomalies are the same draws.
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    ours = synthesizer(images, torch.Generator().manual_seed(1))
    theirs = loaded.synthesizer(images, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    with torch.no_grad():
        assert torch.equal(loaded.score(images), model.score(images))


def test_a_model_of_users_components_survives_save_load_predict_and_export(tmp_path):
    model = SAGAN(
        **tiny_networks(),
        synthesizer=StripeSynthesizer(width=5, brightness=0.25),
        optimizer_g=sgd_factory,
        optimizer_d=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
        scheduler_g=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=7),
        scorer=Scorer(map_sigma=1.0, top_fraction=0.1),
        generator_ema=0.9,
    ).eval()
    with torch.no_grad():
        model.generator_ema.head.weight.mul_(1.5)  # the average differs from the weights
    loaded = load_fully_recorded(save(model, tmp_path))
    assert vars(loaded.synthesizer) == vars(model.synthesizer)
    assert optimizer_settings(loaded) == optimizer_settings(model)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    predicted = loaded.predict_step({"image": images}, 0)
    with torch.no_grad():
        assert torch.equal(predicted["score"], model.score(images))
    scorer = torch.jit.load(export_scorer(loaded, tmp_path / "scorer.pt", format="torchscript"))
    scores, maps = scorer(images)
    assert torch.allclose(scores, predicted["score"], atol=1e-4)
    assert torch.allclose(maps, predicted["anomaly_map"], atol=1e-4)


FACTORIES = {
    "partial_of_a_class": dict(
        optimizer_g=functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.9)),
        optimizer_d=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
        scheduler_g=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=7, gamma=0.5),
    ),
    "module_level_functions": dict(optimizer_g=sgd_factory, optimizer_d=paper_adam),
    "users_scheduler_only": dict(
        scheduler_d=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3)
    ),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_optimizer_and_scheduler_factories_survive_a_checkpoint(name, tmp_path):
    model = SAGAN(**tiny_networks(), **FACTORIES[name])
    loaded = load_fully_recorded(save(model, tmp_path))
    assert optimizer_settings(loaded) == optimizer_settings(model)


def test_factories_from_yaml_are_recorded_as_the_config_wrote_them():
    from lightning.pytorch.cli import instantiate_module

    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002, "betas": [0.5, 0.9]}}
    model = instantiate_module(SAGAN, {**networks_config(), "optimizer_d": adam})
    recorded = model.hparams["optimizer_d"]
    assert recorded["class_path"] == "torch.optim.Adam"
    assert recorded["init_args"]["lr"] == 0.002 and recorded["init_args"]["betas"] == [0.5, 0.9]
    assert model.hparams["optimizer_g"] == "sagan_ad.paper_adam"


def networks_config() -> dict:
    return {
        "generator": {
            "class_path": "sagan_ad.Generator",
            "init_args": {"image_size": 32, "base_channels": 4, "num_res_blocks": 1},
        },
        "critic": {
            "class_path": "sagan_ad.Critic",
            "init_args": {"base_channels": 4, "num_downsamples": 5},
        },
    }


def test_an_unrecordable_factory_warns_at_save_and_at_load_naming_how_to_pass_it(tmp_path):
    def local_factory(params):
        return torch.optim.SGD(params, lr=0.3)

    with pytest.warns(UserWarning, match=r"optimizer_g \(.*local_factory\) cannot be recorded"):
        model = SAGAN(**tiny_networks(), optimizer_g=local_factory)
    path = save(model, tmp_path)
    with pytest.warns(UserWarning, match=r"could not record the model's optimizer_g") as caught:
        loaded = load_checkpoint(path)
    message = str(caught[0].message)
    assert "this model has paper_adam instead" in message
    assert "load_checkpoint(path, optimizer_g=...)" in message
    assert loaded.optimizer_g is paper_adam
    # Passing it again restores it, without the warning about the checkpoint.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = load_checkpoint(path, optimizer_g=local_factory)
    assert again.optimizer_g is local_factory
    assert not [w for w in seen if "could not record" in str(w.message)]


def test_an_unrecordable_synthesizer_warns_when_loaded_without_it(tmp_path):
    class Hidden(Synthesizer):
        def __init__(self, strength: float = 0.5) -> None:
            self._strength = strength

        def __call__(self, images, generator):
            return images, torch.zeros_like(images)

    with pytest.warns(UserWarning, match="synthesizer"):
        path = save(SAGAN(**tiny_networks(), synthesizer=Hidden()), tmp_path)
    with pytest.warns(
        UserWarning, match=r"could not record the model's synthesizer \(a .*Hidden\)"
    ):
        loaded = load_checkpoint(path)
    assert isinstance(loaded.synthesizer, PatchBlendSynthesizer)


def test_loading_the_default_optimizers_warns_of_nothing_even_the_first_time(tmp_path, monkeypatch):
    # The warnings of unrecordable settings are given once per process: as in a fresh one.
    monkeypatch.setattr(hparams, "_warned", {})
    path = save(SAGAN(**tiny_networks()).eval(), tmp_path)
    loaded = load_fully_recorded(path)
    assert loaded.optimizer_g is paper_adam and loaded.optimizer_d is paper_adam


def test_load_checkpoint_reads_the_file_once(tmp_path, monkeypatch):
    path = save(SAGAN(**tiny_networks()).eval(), tmp_path)
    read = []
    original = torch.load

    def counting(source, *args, **kwargs):
        if not hasattr(source, "read"):
            read.append(str(source))
        return original(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    load_checkpoint(path)
    assert read == [str(path)]
    read.clear()
    SAGAN.load_from_checkpoint(path)
    assert read == [str(path)]


def test_lightnings_own_load_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*gone\.ckpt' does not exist"):
        SAGAN.load_from_checkpoint(tmp_path / "gone.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(save(SAGAN(**tiny_networks()).eval(), tmp_path).read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt' is truncated or corrupt"):
        SAGAN.load_from_checkpoint(cut)


def wide_networks() -> dict:
    """Networks of another width than `tiny_networks`: its weights do not fit them."""
    return tiny_networks(base_channels=8)


def test_lightnings_own_load_refuses_weights_of_another_architecture_naming_the_setting(tmp_path):
    """Every route that loads weights goes through the model's load_state_dict check: Lightning's
    load_from_checkpoint (as a Trainer's ckpt_path does) says which setting differs instead of
    torch listing every key of every tensor."""
    path = save(SAGAN(**tiny_networks()).eval(), tmp_path)
    with pytest.raises(CheckpointError) as refused:
        SAGAN.load_from_checkpoint(path, **wide_networks())
    message = str(refused.value)
    assert message.startswith("the checkpoint does not fit the model: generator."), message
    assert "in the checkpoint, (" in message
    assert "Build the model with the settings the checkpoint was trained with" in message
    assert "Error(s) in loading state_dict" not in message


def test_a_trainer_given_a_checkpoint_of_another_architecture_refuses_it_by_name(tmp_path):
    path = save(SAGAN(**tiny_networks()).eval(), tmp_path)
    data = SyntheticCXRDataModule(
        num_known_normal=8, num_test=4, image_size=32, batch_size=4, split={"val_fraction": 0.5}
    )
    with pytest.raises(CheckpointError, match=r"does not fit the model: .*base_channels=4 \(mod"):
        tiny_trainer(tmp_path).test(SAGAN(**wide_networks()), datamodule=data, ckpt_path=path)


def test_a_state_dict_is_checked_as_a_checkpoint_is():
    """A user's own load_state_dict: another architecture and NaN weights are refused by name;
    strict=False still takes a partial state dict; one from before thresholds loads without."""
    model = SAGAN(**tiny_networks())
    with pytest.raises(CheckpointError, match=r"^the state dict does not fit the model: gen"):
        model.load_state_dict(SAGAN(**wide_networks()).state_dict())

    poisoned = SAGAN(**tiny_networks()).state_dict()
    name = next(key for key, _ in model.named_parameters())
    poisoned[name] = poisoned[name].clone().fill_(float("nan"))
    with pytest.raises(CheckpointError, match=f"non-finite weights .*first {name}"):
        model.load_state_dict(poisoned)

    generator_only = {
        key: value
        for key, value in SAGAN(**tiny_networks()).state_dict().items()
        if key.startswith("generator.")
    }
    missing = model.load_state_dict(generator_only, strict=False).missing_keys
    assert missing and all(not key.startswith("generator.") for key in missing)
    assert torch.equal(model.generator.head.weight, generator_only["generator.head.weight"])
    with pytest.raises(CheckpointError, match="in the checkpoint|in the state"):
        model.load_state_dict(
            {k: v for k, v in SAGAN(**wide_networks()).state_dict().items()}, strict=False
        )

    old = SAGAN(**tiny_networks()).state_dict()
    del old["threshold"]
    model.load_state_dict(old)
    assert torch.isnan(model.threshold).all()


def test_no_weight_mismatch_is_recognised_by_torchs_message_text():
    """A torch release that rewords its load_state_dict error must not change what we say."""
    import pathlib

    import sagan_ad

    package = pathlib.Path(sagan_ad.__file__).parent
    sources = [p.read_text() for p in package.rglob("*.py")]
    assert not [s for s in sources if "Error(s) in loading state_dict" in s]
