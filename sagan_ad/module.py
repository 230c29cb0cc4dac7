"""The SAGAN LightningModule: the WGAN-GP training step of the restoring generator, and the hooks
that hand scoring and evaluation to their components."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from sagan_ad.data.modules.predict import DECODED
from sagan_ad.errors import InputError
from sagan_ad.evaluation.evaluator import Evaluator
from sagan_ad.evaluation.inputs import check_images
from sagan_ad.evaluation.report import EvaluationReport
from sagan_ad.evaluation.scorer import Scorer
from sagan_ad.evaluation.thresholds import apply_threshold
from sagan_ad.inference import AnomalyScorer, refuse_scoring_overrides
from sagan_ad.networks.critic import Critic, check_critic_fits
from sagan_ad.networks.generator import Generator
from sagan_ad.preprocessing import Preprocessing
from sagan_ad.synthesis import PatchBlendSynthesizer, Synthesizer
from sagan_ad.training import hparams, losses, run_state
from sagan_ad.training.ddp import allow_unused_parameters
from sagan_ad.training.divergence import DivergenceGuard
from sagan_ad.training.ema import update_average
from sagan_ad.training.losses import SAGANLoss
from sagan_ad.training.optimizers import (
    OptimizerFactory,
    SchedulerFactory,
    optimizer_configs,
    paper_adam,
    step_scheduler,
)
from sagan_ad.training.performance import Performance
from sagan_ad.training.trainer_checks import check_monitors, check_trainer_for_fit
from sagan_ad.training.training_logs import TrainingLogs

COMPONENTS = ("generator", "critic", "synthesizer", "loss", "scorer", "evaluator", "performance")
"""The constructor arguments recorded as component settings (see `sagan_ad.training.hparams`)."""
FACTORIES = ("optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d")
"""The constructor arguments recorded as factories (a function's name, or a class's settings)."""


class SAGAN(run_state.CheckedLoading, L.LightningModule):
    """SAGAN for semi-supervised anomaly detection (Zhang et al., MICCAI 2024).

    Each *iteration* is a critic step, and every ``n_critic``-th one also a generator step
    (manual optimization); `iteration` counts them and travels in checkpoints. With known normals
    ``x_n``, unlabeled images ``x_u`` and pseudo anomalies ``x~_n`` made by ``synthesizer``, the
    ``loss`` weighs the critic's WGAN-GP objective and the generator's adversarial, identity
    (``|x_n - G(x_n)|``) and restoration (``(x_n - G(x~_n))^2``) terms; the ``scorer`` turns
    ``|x - G(x)| / 2`` into a map and a score; the ``evaluator`` reports each validation and test
    and chooses the operating `threshold` (a buffer, saved in checkpoints). Each component is an
    object (YAML: a nested ``class_path``) recorded in the checkpoint with the optimizer and
    scheduler factories, so a checkpoint rebuilds the model that wrote it (or loading warns).
    Fit records how the training films were decoded and normalised (`preprocessing`), which
    predict applies to new films; every stage and export score through `inference`.

    Train with ``Trainer(max_epochs=-1, check_val_every_n_epoch=None)`` (or `sagan_ad.Engine`)
    and ``max_steps`` left at -1 (fit refuses another value): training stops after
    ``max_iterations`` (the data are an endless stream). A resumed run
    continues bit-identically on CPU; the `DivergenceGuard` stops a run before a non-finite step
    or checkpoint; validate, test and predict refuse an untrained model unless
    ``model.allow_untrained = True``; `score`, `anomaly_map`, `infer` and ``forward`` refuse
    images of another shape or dtype and values outside ``[-1, 1]`` (``docs/reliability.md``).

    Subclass to change one step without copying the training loop: override `generate`,
    `synthesize`, `critic_loss`, `generator_loss`, `identity_loss` or `restoration_loss`. The
    score changes on a `sagan_ad.Scorer` subclass (``scorer=``): a subclass that overrides
    `anomaly_map`, `score` or `infer` here is refused when it is defined.

    Args:
        generator: the restoring generator (default: the paper's `sagan_ad.Generator`, 64 px).
        critic: the critic (default: `sagan_ad.Critic` as wide as the generator).
        synthesizer: pseudo-anomaly synthesizer (default: SAGAN's patch blend).
        loss: the objective's weights and terms (default: `sagan_ad.SAGANLoss`, the paper's).
        n_critic: critic steps per generator step (2).
        max_iterations: training length in iterations (100,000 in the paper).
        optimizer_g: factory of the generator optimizer (default `paper_adam`).
        optimizer_d: factory of the critic optimizer (default `paper_adam`).
        scheduler_g: optional factory of a generator LR scheduler, stepped per generator step.
        scheduler_d: optional factory of a critic LR scheduler, stepped per critic step.
        scorer: the anomaly map and score: smoothing, top fraction, border, inference mode
            (default: `sagan_ad.Scorer`, the paper's mean absolute difference).
        evaluator: thresholds, bootstrap, shortcut audit and subgroups of validation and test
            (default: `sagan_ad.Evaluator`).
        generator_ema: decay of an exponential moving average of the generator's weights,
            updated after every generator step (at most ``(1 + k) / (10 + k)`` after ``k``
            steps). Above 0, evaluation, `predict`, `score` and export use the average; 0
            (default, the paper) the trained weights. 0.99 suits a few thousand iterations.
        performance: channels-last, ``torch.compile`` and the divergence check interval
            (`sagan_ad.training.performance.Performance`); they change speed, not results.
        seed: seed of the synthesizer and gradient-penalty random draws.

    Examples:
        >>> model = SAGAN(Generator(image_size=32, base_channels=8, num_res_blocks=1),
        ...               Critic(base_channels=8, num_downsamples=5), max_iterations=10)
        >>> model.score(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        generator: Generator | None = None,
        critic: Critic | None = None,
        synthesizer: Synthesizer | None = None,
        loss: SAGANLoss | None = None,
        n_critic: int = 2,
        max_iterations: int = 100_000,
        optimizer_g: OptimizerFactory = paper_adam,
        optimizer_d: OptimizerFactory = paper_adam,
        scheduler_g: SchedulerFactory | None = None,
        scheduler_d: SchedulerFactory | None = None,
        scorer: Scorer | None = None,
        evaluator: Evaluator | None = None,
        generator_ema: float = 0.0,
        performance: Performance | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_critic < 1:
            raise InputError(f"n_critic={n_critic}: must be >= 1")
        if max_iterations < 1:
            raise InputError(f"max_iterations={max_iterations}: must be >= 1")
        if not 0.0 <= generator_ema < 1.0:
            raise InputError(f"generator_ema={generator_ema}: must be in [0, 1) (0 turns it off)")
        self.generator = generator if generator is not None else Generator()
        if critic is None:
            critic = Critic(
                self.generator.in_channels, getattr(self.generator, "base_channels", 64)
            )
        self.critic = critic
        check_critic_fits(self.critic, self.generator)
        self.synthesizer = synthesizer if synthesizer is not None else PatchBlendSynthesizer()
        self.loss = loss if loss is not None else SAGANLoss()
        self.scorer = scorer if scorer is not None else Scorer()
        self.evaluator = evaluator if evaluator is not None else Evaluator()
        self.performance = performance if performance is not None else Performance()
        self.preprocessing = Preprocessing()
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.scheduler_g, self.scheduler_d = scheduler_g, scheduler_d
        self.n_critic = n_critic
        self.max_iterations = max_iterations
        self.seed = seed
        self.generator_ema_decay = generator_ema
        # Copied before compilation: the average only runs inference, eagerly.
        self.generator_ema: Generator | None = (
            copy.deepcopy(self.generator).requires_grad_(False) if generator_ema > 0 else None
        )
        self.performance.prepare([self.generator, self.critic], self.generator_ema)
        self.divergence = DivergenceGuard(self.performance.divergence_check_interval)
        self.save_hyperparameters(ignore=[*COMPONENTS, *FACTORIES])
        hparams.record_components(self, COMPONENTS, FACTORIES)
        self.automatic_optimization = False
        self.iteration = 0
        self.logs = TrainingLogs()
        self.randomness = run_state.TrainingRandomness(seed)
        # NaN until a validation chooses it; a buffer, so it travels with the weights.
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.allow_untrained = self._weights_loaded = self._loading_untrained = False
        self._loading_settings: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_scoring_overrides(cls, SAGAN)

    @property
    def reports(self) -> dict[str, EvaluationReport]:
        """The latest `sagan_ad.EvaluationReport` of each stage (``"val"``, ``"test"``)."""
        return self.evaluator.reports

    # ----------------------------------------------------------------------------- inference
    @property
    def inference_generator(self) -> Generator:
        """The generator that scores images: the weight average with ``generator_ema > 0``."""
        return self.generator if self.generator_ema is None else self.generator_ema

    @property
    def inference(self) -> AnomalyScorer:
        """The inference path every stage and export runs: the inference generator, then the
        scorer (a view that shares the model's modules)."""
        return AnomalyScorer(self.inference_generator, self.scorer)

    def infer(self, images: Tensor, with_restored: bool = False) -> dict[str, Tensor]:
        """Scores, anomaly maps and (optionally) restorations of ``images``, float
        ``(B, C, S, S)`` in ``[-1, 1]``, checked first (`sagan_ad.evaluation.inputs`).

        Returns:
            ``{"score": (B,), "anomaly_map": (B, 1, H, W)}``, plus ``"restored"`` on request.
        """
        generator = self.inference_generator
        weights = next(generator.parameters())
        check_images(images, generator.in_channels, generator.image_size, weights)
        return self.inference.infer(images, with_restored)

    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-pixel anomaly map in ``[0, 1]``, shape ``(B, 1, H, W)`` (`sagan_ad.Scorer`)."""
        return self.infer(images)["anomaly_map"]

    def score(self, images: Tensor) -> Tensor:
        """Image anomaly score in ``[0, 1]``, shape ``(B,)``; higher means more abnormal."""
        return self.infer(images)["score"]

    def forward(self, images: Tensor) -> Tensor:
        """Anomaly scores of ``images`` (``(B, C, H, W)`` in ``[-1, 1]``)."""
        return self.score(images)

    # ----------------------------------------------------------------------------- losses
    @property
    def rng(self) -> torch.Generator:
        """Generator of the training-time random draws (pseudo anomalies, GP interpolation)."""
        return self.randomness.generator(self.device)

    def synthesize(self, normal: Tensor) -> tuple[Tensor, Tensor]:
        """Pseudo anomalies of a batch of known normals: ``(corrupted, masks)``."""
        return self.synthesizer(normal, self.rng)

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """WGAN-GP penalty of the critic between ``real`` and ``fake`` (fp32)."""
        # `forward` skips the compiled call: compiled graphs cannot be differentiated twice.
        critic = self.critic.forward if self.performance.compile else self.critic
        return losses.gradient_penalty(critic, real, fake, self.rng)

    def critic_loss(self, normal: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """Critic objective; returns the terms and their weighted sum under ``"loss"``."""
        # The critic has no normalisation, so one pass over both batches is exact.
        real_scores, fake_scores = self.critic(torch.cat([normal, fake])).split(
            [normal.shape[0], fake.shape[0]]
        )
        return self.loss.critic(real_scores, fake_scores, self.gradient_penalty(normal, fake))

    def identity_loss(self, normal: Tensor, restored_normal: Tensor) -> Tensor:
        """Known normals must pass through unchanged (``loss.identity``)."""
        return self.loss.identity(normal, restored_normal)

    def restoration_loss(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        """Pseudo anomalies must be restored to the clean image (``loss.restoration``)."""
        return self.loss.restoration(normal, restored_corrupted, masks)

    def generator_loss(
        self,
        fake: Tensor,
        normal: Tensor,
        restored_normal: Tensor,
        restored_corrupted: Tensor,
        masks: Tensor,
    ) -> dict[str, Tensor]:
        """Generator objective; returns the terms and their weighted sum under ``"loss"``."""
        return self.loss.generator(
            self.critic(fake),
            self.identity_loss(normal, restored_normal),
            self.restoration_loss(normal, restored_corrupted, masks),
        )

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[dict[str, Any]]:
        return optimizer_configs(
            [
                ("g", self.generator, self.optimizer_g, self.scheduler_g),
                ("d", self.critic, self.optimizer_d, self.scheduler_d),
            ]
        )

    def is_generator_iteration(self) -> bool:
        """Whether the current iteration also updates the generator (every ``n_critic``-th)."""
        return (self.iteration + 1) % self.n_critic == 0

    def generate(self, batch: dict[str, Tensor], update_generator: bool) -> dict[str, Tensor]:
        """The generator's outputs of one iteration: ``"fake"`` (``G(x_u)``), and on generator
        iterations ``"restored_normal"`` (``G(x_n)``), ``"restored_corrupted"`` (``G(x~_n)``) and
        the pseudo anomalies' ``"masks"``."""
        normal, unlabeled = batch["normal"], batch["unlabeled"]
        if not update_generator:
            with torch.no_grad():
                return {"fake": self.generator(unlabeled)}
        # One generator pass over all inputs: instance norm keeps samples independent, and the
        # generator is unchanged by the critic step, so G(x_u) is reused for both losses.
        corrupted, masks = self.synthesize(normal)
        b = normal.shape[0]
        restored = self.generator(torch.cat([unlabeled, normal, corrupted]))
        fake, restored_normal, restored_corrupted = restored.split([unlabeled.shape[0], b, b])
        return {
            "fake": fake,
            "restored_normal": restored_normal,
            "restored_corrupted": restored_corrupted,
            "masks": masks,
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.performance.channels_last:
            # Only the two image streams: other entries a subclass's data add may not be 4-D.
            for key in ("normal", "unlabeled"):
                batch = {**batch, key: batch[key].contiguous(memory_format=torch.channels_last)}
        normal = batch["normal"]
        opt_g, opt_d = self.optimizers()
        update_g = self.is_generator_iteration()
        out = self.generate(batch, update_g)
        fake = out["fake"]

        self.critic.requires_grad_(True)
        critic_terms = self.critic_loss(normal, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(critic_terms["loss"])
        self.divergence.check("critic", critic_terms, self.critic, self.iteration, self._trainer)
        opt_d.step()
        step_scheduler(self, (self.scheduler_g, self.scheduler_d), 1)
        logs = {f"train/critic/{k}": v.detach() for k, v in critic_terms.items()}

        if update_g:
            # The critic's weights are not trained by this loss: skip their gradients.
            self.critic.requires_grad_(False)
            generator_terms = self.generator_loss(
                fake, normal, out["restored_normal"], out["restored_corrupted"], out["masks"]
            )
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(generator_terms["loss"])
            self.divergence.check(
                "generator", generator_terms, self.generator, self.iteration, self._trainer
            )
            opt_g.step()
            step_scheduler(self, (self.scheduler_g, self.scheduler_d), 0)
            if self.generator_ema is not None:
                steps = (self.iteration + 1) // self.n_critic
                update_average(self.generator_ema, self.generator, self.generator_ema_decay, steps)
            self.critic.requires_grad_(True)
            logs.update({f"train/generator/{k}": v.detach() for k, v in generator_terms.items()})
        self.logs.log_step(self, logs)
        # Counted here rather than in on_train_batch_end: callbacks' on_train_batch_end hooks
        # (checkpoints among them) run before the module's and must see the finished iteration.
        self.iteration += 1
        if self.divergence.due(self.iteration, last=self.iteration >= self.max_iterations):
            self.divergence.raise_if_diverged(self.iteration)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        self.randomness.restore_global(
            self._trainer is not None and self.trainer.ckpt_path is not None
        )
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.logs.send_generator_logs(self)
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True

    def setup(self, stage: str) -> None:
        if stage == "fit":
            # Here, before any callback's on_fit_start (a batch-size search trains there).
            check_trainer_for_fit(self.trainer, self.max_iterations)
            allow_unused_parameters(self._trainer)

    # ----------------------------------------------------------------------------- stages
    def _start_stage(self, stage: str) -> None:
        run_state.check_trained(self, stage)
        run_state.check_data_matches(self, getattr(self.trainer, "datamodule", None), stage)

    def on_validation_start(self) -> None:
        if self.trainer.state.fn != TrainerFn.FITTING:
            self._start_stage("validate")

    def on_test_start(self) -> None:
        self._start_stage("test")

    def on_predict_start(self) -> None:
        self._start_stage("predict")

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        run_state.check_data_matches(self, datamodule, "fit")
        self.preprocessing.fit(datamodule)
        hparams.record_components(self, COMPONENTS, FACTORIES)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.divergence.check_weights(self, self.iteration)
        run_state.write_run_state(self, checkpoint)
        if self._unrecorded:
            checkpoint[hparams.UNRECORDED_KEY] = dict(self._unrecorded)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_state.read_run_state(self, checkpoint)
        hparams.warn_unrestored(self, checkpoint)
        hparams.record_components(self, COMPONENTS, FACTORIES)

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], stage: str) -> Tensor:
        out = self.infer(batch["image"])
        self.evaluator.update(stage, batch, out["score"], out["anomaly_map"])
        return out["score"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset("val")

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset("test")

    def _finish_evaluation(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            # A few batches of the validation set: no metric or threshold is worth keeping.
            self.evaluator.reset(stage)
            return
        self.logs.log_report(self, stage, self.evaluator.finish(stage, self.threshold))

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            check_monitors(self.trainer)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Score a batch: ``score``, ``prediction`` (1 abnormal, 0 normal, -1 without a
        threshold), ``threshold``, ``anomaly_map``, ``restored``, ``image`` and the batch's
        ``label``, ``index``, ``name``, ``path`` and ``original_size`` entries where present;
        films marked ``"decoded"`` (a predict DataModule's) are prepared by `preprocessing`."""
        images = batch["image"]
        images = self.preprocessing(images) if batch.get(DECODED, False) else images
        out = self.infer(images, with_restored=True)
        out["prediction"] = apply_threshold(out["score"], self.threshold)
        out["threshold"] = self.threshold.expand_as(out["score"]).clone()
        out["image"] = images
        passed = ("label", "index", "name", "path", "original_size")
        out.update({k: v for k, v in batch.items() if k in passed})
        return out
