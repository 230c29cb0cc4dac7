"""The optimizers of SAGAN's two networks: the paper's Adam, and factories given in YAML."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from sagan_ad.errors import InputError

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

PAPER_LR = 5e-5
PAPER_BETAS = (0.5, 0.999)


def paper_adam(params: Iterable) -> Optimizer:
    """The paper's optimizer for both networks: ``Adam(lr=5e-5, betas=(0.5, 0.999))``.

    Parameters on the CPU get PyTorch's fused implementation (the same update in one pass over
    each parameter; the default runs one operation at a time over each); elsewhere, and for
    parameter groups, Adam's default implementation.

    Examples:
        >>> import torch
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


def build(setting: str, factory: Callable[[Any], Any], argument: Any) -> Any:
    """Call an optimizer or scheduler factory; its own refusal (a negative learning rate, betas
    outside [0, 1), ...) names the model setting that holds it.

    Examples:
        >>> import torch
        >>> build("optimizer_g", lambda p: torch.optim.SGD(p, lr=-1.0), [torch.zeros(1)])
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: model.optimizer_g: Invalid learning rate: -1.0; fix the ...
    """
    try:
        return factory(argument)
    except (ValueError, TypeError) as err:
        raise InputError(
            f"model.{setting}: {err}; fix the init_args of model.init_args.{setting} in the config"
        ) from err


def optimizer_configs(
    networks: list[tuple[str, Any, OptimizerFactory, SchedulerFactory | None]],
) -> list[dict[str, Any]]:
    """Lightning's ``configure_optimizers`` value for ``(suffix, network, optimizer factory,
    scheduler factory)`` entries: schedulers step every optimizer step.

    Examples:
        >>> import torch
        >>> net = torch.nn.Linear(1, 1)
        >>> [sorted(c) for c in optimizer_configs([("g", net, paper_adam, None)])]
        [['optimizer']]
    """
    configs = []
    for suffix, network, factory, scheduler in networks:
        optimizer = build(f"optimizer_{suffix}", factory, network.parameters())
        config: dict[str, Any] = {"optimizer": optimizer}
        if scheduler is not None:
            config["lr_scheduler"] = {
                "scheduler": build(f"scheduler_{suffix}", scheduler, optimizer),
                "interval": "step",
            }
        configs.append(config)
    return configs


def step_scheduler(module: Any, factories: tuple[Any, ...], index: int) -> None:
    """Step the LR scheduler of optimizer ``index`` of ``module``, if its factory made one
    (Lightning lists schedulers in optimizer order, skipping optimizers without one)."""
    if factories[index] is None:
        return
    schedulers = module.lr_schedulers()
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    schedulers[sum(f is not None for f in factories[:index])].step()
