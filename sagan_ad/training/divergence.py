"""The divergence guard of SAGAN training: non-finite losses, gradients and weights stop the run
before they reach an optimizer step or a checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError, RunError

_ADVICE = (
    "no checkpoint holds weights from after it: resume from the last good one (--ckpt_path "
    "last) with a lower learning rate, see docs/reliability.md"
)


class DivergenceError(RunError):
    """Training produced a non-finite loss, gradient or weight; the message names which and at
    which iteration.

    Raised before the poisoned optimizer step (or checkpoint), so every checkpoint on disk holds
    finite weights and ``--ckpt_path last`` resumes from the last good state.

    Examples:
        >>> str(DivergenceError("critic loss 'wasserstein' is nan at iteration 7"))
        "critic loss 'wasserstein' is nan at iteration 7"
    """


class DivergenceGuard:
    """Checks the losses and gradients of every optimizer step for finiteness.

    With ``interval == 1`` a failure raises `DivergenceError` at once, before the optimizer step
    (one host-device sync per step); with ``interval > 1`` the first bad iteration of each
    network is recorded on the device and read by `raise_if_diverged` every ``interval``
    iterations (no sync in between; the bad step is still named exactly).

    Examples:
        >>> guard = DivergenceGuard()
        >>> guard.check("critic", {"loss": torch.tensor(float("nan"))}, nn.Linear(1, 1), 3)
        Traceback (most recent call last):
        ...
        sagan_ad.training.divergence.DivergenceError: critic loss 'loss' is nan at iteration 3: ...
    """

    def __init__(self, interval: int = 1) -> None:
        if isinstance(interval, bool) or interval < 1:
            raise InputError(f"divergence_check_interval={interval!r}: must be an integer >= 1")
        self.interval = int(interval)
        # First iteration with a non-finite value per network, -1 while none.
        self._first_bad: dict[str, Tensor] = {}

    def check(
        self,
        network: str,
        terms: dict[str, Tensor],
        module: nn.Module,
        iteration: int,
        trainer: Any = None,
    ) -> None:
        """Check a step's loss ``terms`` and ``module``'s gradients (only the losses when the
        ``trainer``'s fp16 gradient scaler makes inf gradients on purpose and skips those steps
        itself)."""
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        values = [t.detach().float().reshape(1) for t in terms.values()]
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads and scaler is None:
            norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
            values.append(torch.linalg.vector_norm(norms).reshape(1))
        finite = torch.isfinite(torch.cat(values)).all()
        if self.interval > 1:
            first = self._first_bad.get(network)
            if first is None:
                first = torch.full((), -1, dtype=torch.long, device=finite.device)
            self._first_bad[network] = torch.where(
                finite | (first >= 0), first, torch.full_like(first, iteration)
            )
            return
        if bool(finite):
            return
        # Name the culprit term before the weighted sum it poisons.
        for name, value in sorted(terms.items(), key=lambda item: item[0] == "loss"):
            if not bool(torch.isfinite(value.detach()).all()):
                raise DivergenceError(
                    f"{network} loss {name!r} is {value.detach().float().item()} at iteration "
                    f"{iteration}: {_ADVICE}"
                )
        raise DivergenceError(
            f"non-finite {network} gradients at iteration {iteration} (all {network} "
            f"losses finite): {_ADVICE}"
        )

    def due(self, finished: int, last: bool) -> bool:
        """Whether the records are read after ``finished`` iterations (``last``: the run ends)."""
        return self.interval > 1 and (finished % self.interval == 0 or last)

    def raise_if_diverged(self, finished: int) -> None:
        """Read the device-side records (one sync) and raise on a failure."""
        bad = {name: int(first) for name, first in self._first_bad.items()}
        bad = {name: first for name, first in bad.items() if first >= 0}
        if bad:
            network, first = min(bad.items(), key=lambda item: item[1])
            raise DivergenceError(
                f"non-finite {network} loss or gradients first at iteration {first} (found at "
                f"the check after iteration {finished - 1}, divergence_check_interval="
                f"{self.interval}): {_ADVICE}"
            )

    def check_weights(self, module: nn.Module, iteration: int) -> None:
        """Refuse to checkpoint non-finite weights (and any failure recorded since the last
        read), leaving the last good checkpoint as it was."""
        self.raise_if_diverged(iteration)
        bad = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise DivergenceError(
                f"non-finite weights at iteration {iteration} ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}): not saving a checkpoint; the last good one "
                "is left as it was (see docs/reliability.md)"
            )
