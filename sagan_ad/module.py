"""The SAGAN LightningModule: WGAN-GP training of the restoring generator, scoring, metrics."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from sagan_ad.data.base import ImageSet
from sagan_ad.data.intensity import check_normalization, fitted_normalization
from sagan_ad.evaluation.audit import AuditThresholds, ShortcutWarning
from sagan_ad.evaluation.inputs import check_images
from sagan_ad.evaluation.localization import (
    PixelMetrics,
    PointingGame,
    map_peaks,
    pointing_game_hits,
)
from sagan_ad.evaluation.metrics import ImageMetrics
from sagan_ad.evaluation.report import EvaluationReport, build_report
from sagan_ad.evaluation.scoring import anomaly_map, map_to_score, score_and_map, smooth_map
from sagan_ad.evaluation.thresholds import (
    THRESHOLD_POLICIES,
    ThresholdPolicy,
    apply_threshold,
    choose_threshold,
)
from sagan_ad.networks.critic import Critic
from sagan_ad.networks.generator import Generator
from sagan_ad.networks.layers import PositionEncoding
from sagan_ad.synthesis import PatchBlendSynthesizer, Synthesizer
from sagan_ad.training import losses
from sagan_ad.training.checkpoint_files import (
    check_finite_weights,
    check_model_class,
    model_class_name,
)
from sagan_ad.training.checkpointing import global_rng_state, set_global_rng_state

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

PAPER_LR = 5e-5
PAPER_BETAS = (0.5, 0.999)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight; the message names which and at
    which iteration.

    Raised before the poisoned optimizer step (or checkpoint), so every checkpoint on disk holds
    finite weights and ``--ckpt_path last`` resumes from the last good state.

    Examples:
        >>> str(DivergenceError("critic loss 'wasserstein' is nan at iteration 7"))
        "critic loss 'wasserstein' is nan at iteration 7"
    """


def _build(setting: str, factory: Callable[[Any], Any], argument: Any) -> Any:
    """Call an optimizer or scheduler factory; its own refusal (a negative learning rate, betas
    outside [0, 1), ...) names the model setting that holds it."""
    try:
        return factory(argument)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"model.{setting}: {err}; fix the init_args of model.init_args.{setting} in the config"
        ) from err


def paper_adam(params: Iterable) -> Optimizer:
    """The paper's optimizer for both networks: ``Adam(lr=5e-5, betas=(0.5, 0.999))``.

    Parameters on the CPU get PyTorch's fused implementation (the same update in one pass over
    each parameter; the default runs one operation at a time over each); elsewhere, and for
    parameter groups, Adam's default implementation.

    Examples:
        >>> paper_adam(torch.nn.Linear(2, 1).parameters()).defaults["fused"]
        True
    """
    params = list(params)
    on_cpu = bool(params) and all(
        isinstance(p, Tensor) and p.device.type == "cpu" and p.is_floating_point() for p in params
    )
    if on_cpu:
        try:
            return Adam(params, lr=PAPER_LR, betas=PAPER_BETAS, fused=True)
        except RuntimeError:
            pass  # PyTorch before 2.4 fuses CUDA parameters only
    return Adam(params, lr=PAPER_LR, betas=PAPER_BETAS)


_DIVERGENCE_ADVICE = (
    "no checkpoint holds weights from after it: resume from the last good one (--ckpt_path "
    "last) with a lower learning rate, see docs/reliability.md"
)


class SAGAN(L.LightningModule):
    """SAGAN for semi-supervised anomaly detection (Zhang et al., MICCAI 2024).

    Training alternates a critic step every iteration with a generator step every ``n_critic``-th
    iteration (manual optimization). With ``x_n`` known normals, ``x_u`` unlabeled images and
    ``x~_n`` pseudo anomalies made from ``x_n`` by ``synthesizer``:

    - critic: ``-E[D(x_n)] + E[D(G(x_u))] + lambda_gp * GP``;
    - generator: ``-E[D(G(x_u))] + lambda_identity * mean|x_n - G(x_n)|``
      ``+ lambda_restoration * mean (x_n - G(x~_n))^2``.

    The score of an image is ``mean |x - G(x)| / 2``; the anomaly map is ``|x - G(x)| / 2``.

    One *iteration* is one critic step (and, every ``n_critic`` iterations, one generator step);
    `iteration` counts them (advanced at the end of `training_step`) and is saved in
    checkpoints, because Lightning's ``global_step`` counts the steps of both optimizers.
    Training stops after
    ``max_iterations``; leave the Trainer's ``max_steps`` at -1 and set ``max_epochs=-1`` (the
    training data are an endless stream). Validation runs every ``val_check_interval``
    iterations (set ``check_val_every_n_epoch=None`` on the Trainer). Metrics are logged to the
    Trainer's loggers with the iteration as step (logged as the metric ``"step"``).

    Reliability (see ``docs/reliability.md``): checkpoints carry the iteration, the synthesizer /
    GP generator and the global torch, numpy and Python RNG states, restored before the first
    resumed iteration, so a resumed run continues bit-identically on CPU. The losses and
    gradients of every optimizer step are checked for finiteness; by default before the step is
    applied (one device sync per step), or, with ``divergence_check_interval=N``, accumulated on
    the device and read every N iterations (no sync in between). Checkpoints are refused for
    non-finite weights: a diverging run stops with a `DivergenceError` naming the first bad
    iteration and leaves the last good checkpoint untouched.

    Validation and test log the metric suite of `sagan_ad.evaluation.metrics` (``val/AUROC``,
    ``val/AUROC_CI_low``, ``val/AP``, ...), per metadata subgroup and, where the data know masks or
    boxes, pixel AUROC, AUPRO and the pointing game (`sagan_ad.evaluation.localization`). Each
    validation
    chooses the operating threshold by ``threshold_policy`` and stores it in the `threshold`
    buffer (saved in checkpoints); predictions carry the score, the thresholded label and the
    threshold. The latest `sagan_ad.EvaluationReport` of each stage is kept in ``reports``.

    Validation, test and predict refuse an untrained model (no finished iteration and no weights
    loaded from a checkpoint or state dict), which would score a random network: load a
    checkpoint (``ckpt_path=`` of the Trainer, `sagan_ad.load_checkpoint`), or set
    ``model.allow_untrained = True`` to evaluate it on purpose. `score`, `anomaly_map`, `infer` and
    ``forward`` refuse images of another shape, integer images and values outside ``[-1, 1]``
    (`sagan_ad.evaluation.inputs.check_images`). Checkpoints record the model's class
    (``sagan_model_class``)
    and refuse to load into another class.

    Subclass to change a part without copying the training step: override
    `synthesize`, `critic_loss`, `generator_loss` (or the single terms
    `identity_loss`, `restoration_loss`), `anomaly_map` or `score`.

    Args:
        in_channels: image channels (must match the data).
        image_size: image side (must match the data).
        base_channels: generator width (64 in the paper).
        num_res_blocks: generator bottleneck blocks (6).
        patch_grid: generator patches per side (2).
        position_encoding: ``"film"`` (default, position matters), ``"reference"`` (the released
            no-op codes) or ``"none"``.
        attention_gates: use the decoder attention gates.
        multi_level_fusion: fuse the three decoder levels before the head.
        residual_keep_prob: training-time keep probability of the generator residual (0.95).
        critic_base_channels: critic width (default: ``base_channels``).
        critic_downsamples: critic stride-2 stages (6; images must be at least ``2**6`` px).
        n_critic: critic steps per generator step (2).
        lambda_gp: gradient-penalty weight (10).
        lambda_identity: weight of the identity L1 on known normals (1).
        lambda_restoration: weight of the restoration MSE on pseudo anomalies (1).
        max_iterations: training length in iterations (100,000 in the paper).
        synthesizer: pseudo-anomaly synthesizer (default: SAGAN's patch blend).
        optimizer_g: factory of the generator optimizer (default `paper_adam`).
        optimizer_d: factory of the critic optimizer (default `paper_adam`).
        scheduler_g: optional factory of a generator LR scheduler, stepped per generator step.
        scheduler_d: optional factory of a critic LR scheduler, stepped per critic step.
        inference: ``"deterministic"`` (default) or ``"reference"``: the released code's random
            inference, which keeps the training-time residual mask on while scoring.
        seed: seed of the synthesizer and gradient-penalty random draws (and of the AUROC
            bootstrap).
        threshold_policy: how the operating threshold is chosen on each validation (see
            `sagan_ad.evaluation.thresholds`): ``"balanced"`` (sensitivity = specificity, the
            paper's code), ``"youden"``, ``"f1"`` or ``"percentile"`` (of the normal validation
            scores; the only one that works when validation has no abnormal images). The threshold
            is stored in the `threshold` buffer, hence in checkpoints.
        threshold_percentile: the percentile of ``"percentile"``.
        map_sigma: Gaussian smoothing (pixels) of the anomaly map, 0 for none; the score
        is
            computed from the smoothed map.
        score_top_fraction: the score is the mean of this fraction of the largest map values
            (`sagan_ad.evaluation.scoring.map_to_score`); 1 (default) is the paper's mean over all
            pixels.
            Choose it on a labelled validation set, never on the test set.
        bootstrap_resamples: resamples of the 95% AUROC confidence interval (0 skips it).
        channels_last: keep both networks' weights and the training batches in channels-last
            memory format, which GPU convolutions (cuDNN, bf16 tensor cores) run faster.
        compile: ``torch.compile`` the generator and the critic in place (parameter names and
            checkpoints are unchanged). The gradient penalty calls the critic eagerly, because
            compiled graphs do not support the double backward it needs.
        compile_options: keyword arguments of ``torch.compile`` (default ``{"dynamic": False}``:
            one specialised graph per batch shape; the training step uses two).
        generator_ema: decay of an exponential moving average of the generator's weights,
            updated after every generator step (with the usual warm-up: the decay is at most
            ``(1 + k) / (10 + k)`` after ``k`` steps). When above 0, validation, test,
            `predict`, `score` and export use the averaged generator, which smooths out the
            oscillation of adversarial training; 0 (default, the paper) uses the trained
            weights. 0.99 suits runs of a few thousand iterations, 0.999 longer ones.
        divergence_check_interval: iterations between host-side reads of the finiteness checks.
            1 (default) stops before a non-finite step is applied, at the cost of one
            host-device sync per optimizer step; on a GPU, tens keep the step sync-free, and a
            bad step is still named exactly (its weights may then be non-finite, but they are
            never checkpointed).
        normalization: the intensity normalisation of the images the model is trained on (the
            `sagan_ad.data.IntensityNormalization.spec` string, such as ``"equalize"``).
            Leave
            it None: fit records the DataModule's ``normalization`` here, so it is saved in every
            checkpoint, and validate, test and predict refuse data normalised otherwise.
        shortcut_audit: thresholds of the shortcut audit of every validation and test (the
            fields of `sagan_ad.evaluation.audit.AuditThresholds`, for example
            ``{"margin": 0.05}``).
        subgroup_columns: the metadata columns that make subgroup metrics; default: those that
            `sagan_ad.evaluation.report.subgroups` picks (categorical, binned numbers; never
            identifiers, paths or label-like columns).

    Examples:
        >>> model = SAGAN(image_size=32, base_channels=8, num_res_blocks=1,
        ...               critic_downsamples=5, max_iterations=10)
        >>> model.score(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        num_res_blocks: int = 6,
        patch_grid: int = 2,
        position_encoding: PositionEncoding = "film",
        attention_gates: bool = True,
        multi_level_fusion: bool = True,
        residual_keep_prob: float = 0.95,
        critic_base_channels: int | None = None,
        critic_downsamples: int = 6,
        n_critic: int = 2,
        lambda_gp: float = 10.0,
        lambda_identity: float = 1.0,
        lambda_restoration: float = 1.0,
        max_iterations: int = 100_000,
        synthesizer: Synthesizer | None = None,
        optimizer_g: OptimizerFactory = paper_adam,
        optimizer_d: OptimizerFactory = paper_adam,
        scheduler_g: SchedulerFactory | None = None,
        scheduler_d: SchedulerFactory | None = None,
        inference: Literal["deterministic", "reference"] = "deterministic",
        seed: int = 0,
        threshold_policy: ThresholdPolicy = "balanced",
        threshold_percentile: float = 95.0,
        map_sigma: float = 0.0,
        score_top_fraction: float = 1.0,
        bootstrap_resamples: int = 1000,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        divergence_check_interval: int = 1,
        generator_ema: float = 0.0,
        normalization: str | None = None,
        shortcut_audit: dict[str, float] | None = None,
        subgroup_columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"n_critic={n_critic}: must be >= 1")
        if max_iterations < 1:
            raise ValueError(f"max_iterations={max_iterations}: must be >= 1")
        if min(lambda_gp, lambda_identity, lambda_restoration) < 0:
            raise ValueError("lambda_gp, lambda_identity and lambda_restoration must be >= 0")
        if inference not in ("deterministic", "reference"):
            raise ValueError(f"inference={inference!r}: choose 'deterministic' or 'reference'")
        if threshold_policy not in THRESHOLD_POLICIES:
            raise ValueError(
                f"threshold_policy={threshold_policy!r}: choose one of {THRESHOLD_POLICIES}"
            )
        if not 0.0 < threshold_percentile < 100.0:
            raise ValueError(f"threshold_percentile={threshold_percentile}: must be in (0, 100)")
        if map_sigma < 0 or bootstrap_resamples < 0:
            raise ValueError("map_sigma and bootstrap_resamples must be >= 0")
        if not 0.0 < score_top_fraction <= 1.0:
            raise ValueError(f"score_top_fraction={score_top_fraction}: must be in (0, 1]")
        if not 0.0 <= generator_ema < 1.0:
            raise ValueError(f"generator_ema={generator_ema}: must be in [0, 1) (0 turns it off)")
        if isinstance(divergence_check_interval, bool) or divergence_check_interval < 1:
            raise ValueError(
                f"divergence_check_interval={divergence_check_interval!r}: must be an integer >= 1"
            )
        if image_size < 2**critic_downsamples:
            raise ValueError(
                f"image_size={image_size} is smaller than the critic's 2**critic_downsamples = "
                f"{2**critic_downsamples}: lower critic_downsamples"
            )
        self.save_hyperparameters(
            ignore=["synthesizer", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d"]
        )
        self.automatic_optimization = False
        self.generator = Generator(
            in_channels=in_channels,
            image_size=image_size,
            base_channels=base_channels,
            num_res_blocks=num_res_blocks,
            patch_grid=patch_grid,
            position_encoding=position_encoding,
            attention_gates=attention_gates,
            multi_level_fusion=multi_level_fusion,
            residual_keep_prob=residual_keep_prob,
        )
        self.critic = Critic(
            in_channels=in_channels,
            base_channels=critic_base_channels or base_channels,
            num_downsamples=critic_downsamples,
        )
        self.generator_ema_decay = generator_ema
        # Copied before compilation: the average only runs inference, eagerly.
        self.generator_ema: Generator | None = (
            copy.deepcopy(self.generator).requires_grad_(False) if generator_ema > 0 else None
        )
        self.channels_last = channels_last
        if channels_last:
            # Later `.to(device)` calls preserve the format, and checkpoints load into it.
            for network in (self.generator, self.critic, self.generator_ema):
                if network is not None:
                    network.to(memory_format=torch.channels_last)
        self.compiled = compile
        if compile:
            options = {"dynamic": False, **(compile_options or {})}
            self.generator.compile(**options)
            self.critic.compile(**options)
        self.synthesizer = synthesizer or PatchBlendSynthesizer()
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        self.scheduler_g = scheduler_g
        self.scheduler_d = scheduler_d
        self.n_critic = n_critic
        self.lambda_gp = lambda_gp
        self.lambda_identity = lambda_identity
        self.lambda_restoration = lambda_restoration
        self.max_iterations = max_iterations
        self.inference = inference
        self.seed = seed
        self.iteration = 0
        self.divergence_check_interval = int(divergence_check_interval)
        # First iteration with a non-finite value per network, -1 while none; device tensors so
        # that recording costs no sync (see `_check_finite`).
        self._first_bad: dict[str, Tensor] = {}
        self._rng: torch.Generator | None = None
        self._rng_state: tuple[str, Tensor] | None = None
        self._global_rng_state: dict[str, Any] | None = None
        self._generator_logs: dict[str, Tensor] = {}
        self.threshold_policy = threshold_policy
        self.threshold_percentile = threshold_percentile
        self.map_sigma = map_sigma
        self.score_top_fraction = score_top_fraction
        self.bootstrap_resamples = bootstrap_resamples
        self.audit_thresholds = AuditThresholds.parse(shortcut_audit)
        self.subgroup_columns = subgroup_columns
        # NaN until a validation chooses it; a buffer, so it travels with the weights.
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.allow_untrained = False
        self._weights_loaded = False
        self._loading_untrained = False
        self.register_load_state_dict_post_hook(SAGAN._mark_weights_loaded)
        self.image_metrics = torch.nn.ModuleDict({s: ImageMetrics() for s in ("val", "test")})
        self.pixel_metrics = torch.nn.ModuleDict({s: PixelMetrics() for s in ("val", "test")})
        self.pointing_game = torch.nn.ModuleDict({s: PointingGame() for s in ("val", "test")})
        self.reports: dict[str, EvaluationReport] = {}
        self._names: dict[int, str] = {}

    # ----------------------------------------------------------------------------- inference
    @property
    def inference_generator(self) -> Generator:
        """The generator that scores images: the weight average with ``generator_ema > 0``."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def restore(self, images: Tensor) -> Tensor:
        """``G(images)``: the normal-looking restoration, deterministic unless ``inference`` is
        ``"reference"``; ``images`` must be float ``(B, C, S, S)`` in ``[-1, 1]``."""
        generator = self.inference_generator
        weights = next(generator.parameters())
        check_images(images, generator.in_channels, generator.image_size, weights)
        return generator(images, residual_mask=self.inference == "reference")

    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-pixel anomaly map ``|x - G(x)| / 2`` in ``[0, 1]``, shape ``(B, 1, H, W)``,
        smoothed when ``map_sigma > 0``.

        Examples:
            >>> model = SAGAN(image_size=32, base_channels=4, critic_downsamples=5)
            >>> model.anomaly_map(torch.zeros(1, 1, 32, 32)).shape
            torch.Size([1, 1, 32, 32])
        """
        return smooth_map(anomaly_map(images, self.restore(images)), self.map_sigma)

    def score(self, images: Tensor) -> Tensor:
        """Image anomaly score in ``[0, 1]``, shape ``(B,)``; higher means more abnormal."""
        return map_to_score(self.anomaly_map(images), self.score_top_fraction)

    def forward(self, images: Tensor) -> Tensor:
        """Anomaly scores of ``images`` (``(B, C, H, W)`` in ``[-1, 1]``)."""
        return self.score(images)

    # ----------------------------------------------------------------------------- losses
    @property
    def rng(self) -> torch.Generator:
        """Generator of the training-time random draws (pseudo anomalies, GP interpolation)."""
        if self._rng is None or self._rng.device != self.device:
            self._rng = torch.Generator(device=self.device).manual_seed(self.seed)
            if self._rng_state is not None and self._rng_state[0] == self.device.type:
                self._rng.set_state(self._rng_state[1])
            self._rng_state = None
        return self._rng

    def synthesize(self, normal: Tensor) -> tuple[Tensor, Tensor]:
        """Pseudo anomalies of a batch of known normals: ``(corrupted, masks)``."""
        return self.synthesizer(normal, self.rng)

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """WGAN-GP penalty of the critic between ``real`` and ``fake`` (fp32)."""
        # `forward` skips the compiled call: compiled graphs cannot be differentiated twice.
        critic = self.critic.forward if self.compiled else self.critic
        return losses.gradient_penalty(critic, real, fake, self.rng)

    def critic_loss(self, normal: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """Critic objective; returns the terms and their weighted sum under ``"loss"``."""
        # The critic has no normalisation, so one pass over both batches is exact.
        real_scores, fake_scores = self.critic(torch.cat([normal, fake])).split(
            [normal.shape[0], fake.shape[0]]
        )
        wasserstein = losses.critic_wasserstein_loss(real_scores, fake_scores)
        penalty = self.gradient_penalty(normal, fake)
        return {
            "loss": wasserstein + self.lambda_gp * penalty,
            "wasserstein": wasserstein,
            "gradient_penalty": penalty,
        }

    def identity_loss(self, normal: Tensor, restored_normal: Tensor) -> Tensor:
        """Known normals must pass through unchanged (L1)."""
        return losses.identity_loss(normal, restored_normal)

    def restoration_loss(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        """Pseudo anomalies must be restored to the clean image (MSE; ``masks`` unused here)."""
        return losses.restoration_loss(normal, restored_corrupted)

    def generator_loss(
        self,
        fake: Tensor,
        normal: Tensor,
        restored_normal: Tensor,
        restored_corrupted: Tensor,
        masks: Tensor,
    ) -> dict[str, Tensor]:
        """Generator objective; returns the terms and their weighted sum under ``"loss"``."""
        adversarial = losses.generator_adversarial_loss(self.critic(fake))
        identity = self.identity_loss(normal, restored_normal)
        restoration = self.restoration_loss(normal, restored_corrupted, masks)
        return {
            "loss": adversarial
            + self.lambda_identity * identity
            + self.lambda_restoration * restoration,
            "adversarial": adversarial,
            "identity": identity,
            "restoration": restoration,
        }

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[dict[str, Any]]:
        configs = []
        for setting, factory, scheduler, params in (
            ("optimizer_g", self.optimizer_g, self.scheduler_g, self.generator.parameters()),
            ("optimizer_d", self.optimizer_d, self.scheduler_d, self.critic.parameters()),
        ):
            optimizer = _build(setting, factory, params)
            config: dict[str, Any] = {"optimizer": optimizer}
            if scheduler is not None:
                config["lr_scheduler"] = {
                    "scheduler": _build(f"scheduler_{setting[-1]}", scheduler, optimizer),
                    "interval": "step",
                }
            configs.append(config)
        return configs

    def _step_scheduler(self, index: int) -> None:
        factories = (self.scheduler_g, self.scheduler_d)
        if factories[index] is None:
            return
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        # Schedulers are listed in optimizer order, skipping optimizers without one.
        schedulers[sum(f is not None for f in factories[:index])].step()

    def is_generator_iteration(self) -> bool:
        """Whether the current iteration also updates the generator (every ``n_critic``-th)."""
        return (self.iteration + 1) % self.n_critic == 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        normal, unlabeled = batch["normal"], batch["unlabeled"]
        if self.channels_last:
            normal = normal.contiguous(memory_format=torch.channels_last)
            unlabeled = unlabeled.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        update_g = self.is_generator_iteration()

        if update_g:
            # One generator pass over all inputs: instance norm keeps samples independent, and
            # the generator is unchanged by the critic step, so G(x_u) is reused for both losses.
            corrupted, masks = self.synthesize(normal)
            b = normal.shape[0]
            restored = self.generator(torch.cat([unlabeled, normal, corrupted]))
            fake, restored_normal, restored_corrupted = restored.split([unlabeled.shape[0], b, b])
        else:
            with torch.no_grad():
                fake = self.generator(unlabeled)

        self.critic.requires_grad_(True)
        critic_terms = self.critic_loss(normal, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(critic_terms["loss"])
        self._check_finite("critic", critic_terms, self.critic)
        opt_d.step()
        self._step_scheduler(1)
        logs = {f"train/critic/{k}": v.detach() for k, v in critic_terms.items()}

        if update_g:
            # The critic's weights are not trained by this loss: skip their gradients.
            self.critic.requires_grad_(False)
            generator_terms = self.generator_loss(
                fake, normal, restored_normal, restored_corrupted, masks
            )
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(generator_terms["loss"])
            self._check_finite("generator", generator_terms, self.generator)
            opt_g.step()
            self._step_scheduler(0)
            if self.generator_ema is not None:
                self._update_generator_ema()
            self.critic.requires_grad_(True)
            logs.update({f"train/generator/{k}": v.detach() for k, v in generator_terms.items()})
        self._log_training(logs)
        # Counted here rather than in on_train_batch_end: callbacks' on_train_batch_end hooks
        # (checkpoints among them) run before the module's and must see the finished iteration.
        self.iteration += 1
        if self.divergence_check_interval > 1 and (
            self.iteration % self.divergence_check_interval == 0
            or self.iteration >= self.max_iterations
        ):
            self._raise_if_diverged()

    @torch.no_grad()
    def _update_generator_ema(self) -> None:
        """Move the averaged generator towards the trained one (after a generator step)."""
        steps = (self.iteration + 1) // self.n_critic
        decay = min(self.generator_ema_decay, (1 + steps) / (10 + steps))
        averaged = list(self.generator_ema.parameters())
        torch._foreach_lerp_(averaged, list(self.generator.parameters()), 1.0 - decay)
        for mine, theirs in zip(
            self.generator_ema.buffers(), self.generator.buffers(), strict=True
        ):
            mine.copy_(theirs)

    def _check_finite(
        self, network: str, terms: dict[str, Tensor], module: torch.nn.Module
    ) -> None:
        """Check a step's losses and ``module``'s gradients for finiteness.

        With ``divergence_check_interval == 1`` a failure raises `DivergenceError` at once, before
        the optimizer step; otherwise it is recorded on the device and raised by
        `_raise_if_diverged` at the next scheduled read.
        """
        values = [t.detach().float().reshape(1) for t in terms.values()]
        # A gradient scaler (fp16 training) makes inf gradients on purpose and skips those
        # steps itself; only the losses are checked then.
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads and scaler is None:
            norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
            values.append(torch.linalg.vector_norm(norms).reshape(1))
        finite = torch.isfinite(torch.cat(values)).all()
        if self.divergence_check_interval > 1:
            first = self._first_bad.get(network)
            if first is None:
                first = torch.full((), -1, dtype=torch.long, device=finite.device)
            self._first_bad[network] = torch.where(
                finite | (first >= 0), first, torch.full_like(first, self.iteration)
            )
            return
        if bool(finite):
            return
        # Name the culprit term before the weighted sum it poisons.
        for name, value in sorted(terms.items(), key=lambda item: item[0] == "loss"):
            if not bool(torch.isfinite(value.detach()).all()):
                raise DivergenceError(
                    f"{network} loss {name!r} is {value.detach().float().item()} at iteration "
                    f"{self.iteration}: {_DIVERGENCE_ADVICE}"
                )
        raise DivergenceError(
            f"non-finite {network} gradients at iteration {self.iteration} (all {network} "
            f"losses finite): {_DIVERGENCE_ADVICE}"
        )

    def _raise_if_diverged(self) -> None:
        """Read the device-side records of `_check_finite` (one sync) and raise on a failure."""
        bad = {name: int(first) for name, first in self._first_bad.items()}
        bad = {name: first for name, first in bad.items() if first >= 0}
        if bad:
            network, first = min(bad.items(), key=lambda item: item[1])
            raise DivergenceError(
                f"non-finite {network} loss or gradients first at iteration {first} (found at "
                f"the check after iteration {self.iteration - 1}, divergence_check_interval="
                f"{self.divergence_check_interval}): {_DIVERGENCE_ADVICE}"
            )

    def _log_training(self, logs: dict[str, Tensor]) -> None:
        generator = {k: v for k, v in logs.items() if "/generator/" in k}
        if generator:
            self._generator_logs = generator
            # Kept from Lightning's logger path, which re-sends a step metric's last value at
            # every logging iteration (step-shaped curves from critic-only iterations):
            # `_send_generator_logs` sends them, from generator iterations only.
            self.log_dict(generator, logger=False, on_step=True, on_epoch=False)
        # Lightning converts logged tensors to numbers (a device sync) only every
        # `log_every_n_steps` iterations; a metric named "step" sets the loggers' x-axis.
        critic = {k: v for k, v in logs.items() if k not in generator}
        self.log_dict(critic, on_step=True, on_epoch=False)
        # A Python number would be copied to the device by `self.log`, and that blocking copy
        # waits for all queued GPU work at every step; `torch.full` writes it on the device.
        step = torch.full((), self.iteration, dtype=torch.float32, device=self.device)
        self.log("step", step, on_step=True, on_epoch=False)
        # The progress bar converts these at each refresh: give it a `refresh_rate` of tens.
        bar = {"loss_d": logs["train/critic/loss"]}
        if self._generator_logs:
            bar["loss_g"] = self._generator_logs["train/generator/loss"]
        self.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def _send_generator_logs(self) -> None:
        """Send the generator losses of the iteration just finished to the loggers, if it was a
        generator iteration: the first one at or after each logging iteration (every
        ``log_every_n_steps``), and the last one. Like Lightning's own logging, this reads the
        device only at those iterations."""
        done = self.iteration
        every = self.trainer.log_every_n_steps
        if not self._generator_logs or done % self.n_critic or every < 1:
            return
        last = done >= self.max_iterations
        if done // every == max(done - self.n_critic, 0) // every and not last:
            return
        numbers = {k: float(v) for k, v in self._generator_logs.items()}
        for logger in self.loggers:
            logger.log_metrics(numbers, step=done - 1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self._global_rng_state is not None:
            # Restored here, right before the first resumed iteration, rather than at load time:
            # Lightning draws from the global RNG in between (sanity check, DataLoader seeds).
            if self._trainer is not None and self.trainer.ckpt_path is not None:
                set_global_rng_state(self._global_rng_state)
            self._global_rng_state = None
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._send_generator_logs()
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True

    def setup(self, stage: str) -> None:
        # Runs before the strategy wraps the module in DistributedDataParallel. The alternating
        # steps leave a network out of a backward pass on purpose (the generator in critic-only
        # iterations, the critic, frozen, in the generator's), which plain DDP rejects as unused
        # parameters; finding them costs one autograd-graph walk per backward. Parameters left
        # out on every rank are left untouched by DDP, so each network's gradients are averaged
        # only by its own optimizer's backward pass. Lightning has no public setter for this.
        strategy = getattr(self._trainer, "strategy", None)
        if isinstance(strategy, DDPStrategy) and stage == "fit":
            strategy._ddp_kwargs.setdefault("find_unused_parameters", True)

    def _check_data_matches(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        for name in ("image_size", "in_channels"):
            theirs = getattr(datamodule, name, None)
            ours = self.hparams[name]
            if theirs is not None and theirs != ours:
                raise ValueError(
                    f"model.{name}={ours} but data.{name}={theirs}: set both to the same value"
                )
        check_normalization(self.hparams.get("normalization"), datamodule)

    @staticmethod
    def _mark_weights_loaded(module: torch.nn.Module, incompatible_keys: Any) -> None:
        # Weights from a checkpoint saved before any iteration are the untrained network all the
        # same (sagan-ad export refuses them too); any other load counts as trained weights.
        module._weights_loaded = not module._loading_untrained
        module._loading_untrained = False

    def _check_trained(self, stage: str) -> None:
        if self.iteration > 0 or self._weights_loaded or self.allow_untrained:
            return
        raise ValueError(
            f"{stage} refused: the model is untrained (iteration 0, and no checkpoint of a "
            "later iteration or state dict loaded), so it "
            "would score a random network. Pass the trained weights (sagan-ad: --ckpt_path last, "
            "best or a .ckpt file; Python: ckpt_path= of the Trainer, or "
            "sagan_ad.load_checkpoint(path)), or --allow_untrained true (Python: "
            "model.allow_untrained = True) to evaluate the untrained network on purpose"
        )

    def on_validation_start(self) -> None:
        if self.trainer.state.fn != TrainerFn.FITTING:
            self._check_trained("validate")
            self._check_data_matches()

    def on_test_start(self) -> None:
        self._check_trained("test")
        self._check_data_matches()

    def on_predict_start(self) -> None:
        self._check_trained("predict")
        self._check_data_matches()

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.hparams["normalization"] = fitted_normalization(
            self.hparams.get("normalization"), datamodule
        )
        self._check_data_matches()
        if self.trainer.max_steps != -1:
            warnings.warn(
                f"Trainer(max_steps={self.trainer.max_steps}) counts the steps of both optimizers;"
                f" SAGAN stops after max_iterations={self.max_iterations} iterations, set that "
                "instead",
                stacklevel=1,
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A failure recorded since the last scheduled read must not reach a checkpoint either.
        self._raise_if_diverged()
        bad = [name for name, p in self.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise DivergenceError(
                f"non-finite weights at iteration {self.iteration} ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}): not saving a checkpoint; the last good one "
                "is left as it was (see docs/reliability.md)"
            )
        checkpoint["sagan_iteration"] = self.iteration
        checkpoint["sagan_model_class"] = model_class_name(type(self))
        checkpoint["sagan_global_rng_state"] = global_rng_state()
        checkpoint["sagan_rng_state"] = (self.rng.device.type, self.rng.get_state())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_model_class(checkpoint, type(self))
        # Every load passes here (a Trainer's ckpt_path, load_from_checkpoint, load_checkpoint).
        weights = [name for name, _ in self.named_parameters()]
        check_finite_weights(checkpoint["state_dict"], weights)
        self.iteration = int(checkpoint.get("sagan_iteration", 0))
        # Checked when the weights are in (_mark_weights_loaded); checkpoints from before the
        # iteration was recorded count as trained.
        self._loading_untrained = checkpoint.get("sagan_iteration") == 0
        # The data the checkpoint was trained on, whatever this instance was built with;
        # checkpoints from before normalisation existed were trained on decoded images.
        hparams = checkpoint.get("hyper_parameters") or {}
        self.hparams["normalization"] = hparams.get("normalization", "none")
        # Checkpoints written before thresholds existed load with no threshold chosen.
        checkpoint["state_dict"].setdefault("threshold", torch.tensor(float("nan")))
        # Restored lazily by `rng`, once the module is on its device; a state saved on another
        # device type cannot be transplanted and the seed is used instead.
        self._rng, self._rng_state = None, checkpoint.get("sagan_rng_state")
        self._global_rng_state = checkpoint.get("sagan_global_rng_state")

    # ----------------------------------------------------------------------------- evaluation
    def infer(self, images: Tensor, with_restored: bool = False) -> dict[str, Tensor]:
        """Scores, anomaly maps and (optionally) restorations of ``images`` in one call.

        Uses one generator pass when `anomaly_map` and `score` are SAGAN's own; a subclass that
        overrides either is called through its overrides, so its scores are the ones evaluated.

        Returns:
            ``{"score": (B,), "anomaly_map": (B, 1, H, W)}``, plus ``"restored"`` on request.

        Examples:
            >>> model = SAGAN(image_size=32, base_channels=4, critic_downsamples=5)
            >>> sorted(model.infer(torch.zeros(1, 1, 32, 32), with_restored=True))
            ['anomaly_map', 'restored', 'score']
        """
        own = type(self).anomaly_map is SAGAN.anomaly_map and type(self).score is SAGAN.score
        if own:
            restored = self.restore(images)
            score, maps = score_and_map(images, restored, self.map_sigma, self.score_top_fraction)
            out = {"score": score, "anomaly_map": maps}
            return {**out, "restored": restored} if with_restored else out
        out = {"score": self.score(images), "anomaly_map": self.anomaly_map(images)}
        return {**out, "restored": self.restore(images)} if with_restored else out

    def _evaluation_set(self, stage: str) -> ImageSet | None:
        """The datamodule's `ImageSet` of ``stage`` when it has one (names, metadata, boxes)."""
        data = getattr(getattr(self.trainer, "datamodule", None), stage, None)
        return data if isinstance(data, ImageSet) else None

    def _evaluate(self, batch: dict[str, Any], stage: str) -> Tensor:
        images, labels, indices = batch["image"], batch["label"], batch["index"]
        if (labels < 0).any():
            raise ValueError("evaluation batches need labels 0 (normal) or 1 (abnormal)")
        out = self.infer(images)
        self.image_metrics[stage].update(out["score"].float(), labels, indices)
        masks = getattr(getattr(self.trainer, "datamodule", None), f"{stage}_masks", None)
        if isinstance(masks, Tensor):
            truth = masks[indices.cpu()].to(self.device).float()
            if truth.shape[-2:] != images.shape[-2:]:
                truth = F.interpolate(truth, size=images.shape[-2:], mode="nearest")
            self.pixel_metrics[stage].update(out["anomaly_map"], truth > 0.5)
        data = self._evaluation_set(stage)
        if data is not None and data.boxes is not None:
            picked = indices.tolist()
            sizes = data.original_sizes
            peaks = map_peaks(out["anomaly_map"], [sizes[i] for i in picked] if sizes else None)
            self.pointing_game[stage].update(
                pointing_game_hits(peaks, [data.boxes[i] for i in picked])
            )
        self._names.update(zip(indices.tolist(), batch["name"], strict=True))
        return out["score"]

    def on_validation_epoch_start(self) -> None:
        self._names = {}

    def on_test_epoch_start(self) -> None:
        self._names = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def _finish_evaluation(self, stage: str) -> None:
        metrics = (self.image_metrics[stage], self.pixel_metrics[stage], self.pointing_game[stage])
        if self.trainer.sanity_checking:
            # A few batches of the validation set: no metric or threshold is worth keeping.
            for metric in metrics:
                metric.reset()
            return
        image_metrics, pixel_metrics, pointing_game = metrics
        collected = image_metrics.compute()
        scores, labels = collected["score"].cpu(), collected["label"].cpu()
        indices = collected["index"].cpu().tolist()
        if stage == "val" and len(indices):
            self.threshold.fill_(
                choose_threshold(scores, labels, self.threshold_policy, self.threshold_percentile)
            )
        data = self._evaluation_set(stage)
        names = [data.names[i] if data is not None else self._names.get(i, str(i)) for i in indices]
        metadata = data.metadata if data is not None else None
        report = build_report(
            stage,
            scores,
            labels,
            names,
            [metadata[i] for i in indices] if metadata else None,
            threshold=float(self.threshold),
            bootstrap_resamples=self.bootstrap_resamples,
            seed=self.seed,
            statistics=data.statistics()[indices] if data is not None else None,
            audit=self.audit_thresholds,
            subgroup_columns=self.subgroup_columns,
        )
        for message in report.warnings:
            rank_zero_warn(message, category=ShortcutWarning)
        if pixel_metrics.update_called:
            report.metrics.update(pixel_metrics.compute())
        if pointing_game.update_called:
            report.metrics["pointing_game"] = float(pointing_game.compute())
        for metric in metrics:
            metric.reset()
        self.reports[stage] = report
        logged = {f"{stage}/{k}": v for k, v in report.metrics.items()}
        main = {k: logged.pop(k) for k in (f"{stage}/AUROC", f"{stage}/AP")}
        self.log_dict(main, prog_bar=True)
        self.log_dict(logged)
        self.log_dict({"iteration": float(self.iteration), "step": float(self.iteration)})

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Score a batch: ``score``, ``prediction`` (1 abnormal, 0 normal, -1 without a
        threshold), ``threshold``, ``anomaly_map``, ``restored``, ``image`` and the batch's
        ``label``, ``index``, ``name``, ``path`` and ``original_size`` entries where present."""
        out = self.infer(batch["image"], with_restored=True)
        out["prediction"] = apply_threshold(out["score"], self.threshold)
        out["threshold"] = self.threshold.expand_as(out["score"]).clone()
        out["image"] = batch["image"]
        passed = ("label", "index", "name", "path", "original_size")
        out.update({k: v for k, v in batch.items() if k in passed})
        return out
