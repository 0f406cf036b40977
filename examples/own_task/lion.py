"""A user's own optimizers as study methods: a hand-written Lion, and RMSprop + cosine lr.

(demon-optim has Lion built in, as the reference method ``lion`` from the ``lion-pytorch``
package; this one is written out to show how, and registered as ``my-lion``.)

This file is a study plugin (``plugins = ["lion.py"]``): each ``register_method`` call adds
a method that a study's ``methods`` can name, with its default grid (a study's
``[grid.NAME]`` table replaces it per hyperparameter).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from demon_optim.study import Budget, Training, register_method


class Lion(torch.optim.Optimizer):
    r"""Lion (EvoLved Sign Momentum), Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms" (arXiv 2302.06675), Algorithm 2.

    With gradient :math:`g_t`, momentum :math:`m` (zero at the start), learning rate
    :math:`\eta`, decoupled weight decay :math:`\lambda` and ``betas`` :math:`(\beta_1,
    \beta_2)`, each step is::

        c   = beta1 * m + (1 - beta1) * g          # the update's direction: an interpolation
        p   = p - lr * (sign(c) + wd * p)          # every coordinate moves by exactly lr
        m   = beta2 * m + (1 - beta2) * g          # the momentum: a slower average

    The sign makes every step the same size in every coordinate, so Lion's good learning
    rates are about 3-10x smaller than AdamW's (and its weight decay 3-10x larger).
    ``param_groups[i]`` holds ``lr``, ``betas`` and ``weight_decay``; the study harness
    records ``lr`` and ``betas[0]`` as the applied learning rate and momentum.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr: got {lr!r}; allowed: numbers > 0")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas[{i}]: got {beta!r}; allowed: numbers in [0, 1)")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: got {weight_decay!r}; allowed: numbers >= 0")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]
                c = m.lerp(p.grad, 1.0 - beta1)  # beta1 * m + (1 - beta1) * g, a new tensor
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)  # decoupled: uses p before this step's update
                p.add_(c.sign_(), alpha=-lr)
                m.lerp_(p.grad, 1.0 - beta2)  # beta2 * m + (1 - beta2) * g
        return loss


def build_lion(
    params: Iterable[torch.nn.Parameter],
    *,
    budget: Budget,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """A bare optimizer: constant lr, nothing to step besides it."""
    return Lion(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)


def build_rmsprop_cosine(
    params: Iterable[torch.nn.Parameter], *, budget: Budget, lr: float, alpha: float
) -> Training:
    """torch's RMSprop with its lr annealed to 0 over the trial's T optimizer steps."""
    optimizer = torch.optim.RMSprop(params, lr=lr, alpha=alpha)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=budget.total_steps)
    return Training(optimizer, after_step=[cosine.step])  # called after every step()


# Lion joins the Adam family: its table and ranking (it is an Adam-like sign method, and
# its lr grid sits beside Adam's, a few times smaller).
register_method(
    "my-lion",
    build=build_lion,
    grid={"lr": [3e-5, 1e-4, 3e-4], "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
    family="adam",
    summary="Lion (Chen et al. 2023): sign of an interpolated momentum, constant lr",
)
# RMSprop + cosine joins the SGDM family: there it meets sgdm+lr-cosine, the same lr
# schedule on SGD, so the table asks "does a per-parameter step size beat momentum?".
register_method(
    "rmsprop+lr-cosine",
    build=build_rmsprop_cosine,
    grid={"lr": [3e-4, 1e-3, 3e-3], "alpha": 0.99},
    family="sgdm",
    summary="torch RMSprop, cosine lr decay to 0 (CosineAnnealingLR, per step)",
)
