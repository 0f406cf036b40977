r"""JAX / optax: the Demon schedule and the Demon optimizers as optax transformations.

Needs the ``jax`` extra (``pip install "demon-optim[jax]"``); ``import demon_optim`` never
imports JAX. The equations are those of the torch optimizers (``docs/optimizers.md``), with
``k`` the number of updates already made (``k = 0`` at the first update):

.. math::

    \beta_k = \beta_{init} \frac{T - k}{T - \beta_{init} k} \quad (0 \text{ for } k \ge T)

* :func:`demon_schedule` is that :math:`\beta_k` as an optax schedule ``count -> beta``, to
  drive any optax optimizer's momentum through ``optax.inject_hyperparams`` (whose schedules
  see ``count = 0`` at the first update, as Demon's ``k``).
* :func:`demon_sgd` equals :class:`demon_optim.DemonSGD` and :func:`demon_adam` equals
  :class:`demon_optim.DemonAdam` (undamped default form and ``damped=True``), built from
  :func:`scale_by_demon_momentum` and :func:`scale_by_demon_adam` chained with optax's own
  weight decay and learning-rate transformations.

The step count is an ``int32`` array in the state (as optax's own), advanced with
``optax.safe_increment`` (it stops at ``2**31 - 1`` instead of wrapping), so ``total_steps``
may be at most ``2**31 - 1``. Every value that changes over the run is computed from traced
arrays (no Python branching on them): the transformations run under ``jax.jit``,
``jax.vmap`` and ``jax.lax.scan``, and their state is a pytree of arrays that saves and
restores like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import _checks
from .errors import invalid

INSTALL = 'pip install "demon-optim[jax]"'

try:
    import jax
    import jax.numpy as jnp
    import optax
except ImportError as _error:
    raise ImportError(
        f"demon_optim.optax needs JAX and optax ({_error}); install them with: {INSTALL}"
    ) from None

__all__ = [
    "MAX_TOTAL_STEPS",
    "DemonAdamState",
    "DemonMomentumState",
    "demon_adam",
    "demon_adamw",
    "demon_schedule",
    "demon_sgd",
    "scale_by_demon_adam",
    "scale_by_demon_momentum",
]

MAX_TOTAL_STEPS = 2**31 - 1
"""The largest ``total_steps``: optax counts updates in ``int32`` (and stops counting at
``2**31 - 1``), so a longer run would never reach the end of its schedule."""

# The static arguments: the schedule's shape is fixed in Python when the transformation
# is built (D = round(d T) as torch's side computes it), so they cannot be traced values.
_STATIC_HINT = "a Python number (with optax.inject_hyperparams, name it in static_args)"

Hyper = Any
"""A hyperparameter: a Python number (checked), or a JAX / numpy array taken as it is
(``optax.inject_hyperparams`` passes its hyperparameters as arrays, possibly traced)."""


# --- checks -------------------------------------------------------------------------------


def _is_array(value: object) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def _hyper(field: str, value: object, check: Callable[[str, object], Any]) -> Hyper:
    """``check(field, value)`` for a Python number; an array passes as it is (it may be a
    tracer, whose value nobody can look at)."""
    return value if _is_array(value) else check(field, value)


def _total_steps(value: object) -> int:
    return _checks.integer(
        "total_steps",
        value,
        1,
        MAX_TOTAL_STEPS,
        "integers in [1, 2**31 - 1] (optimizer steps, not epochs; optax counts in int32), "
        + _STATIC_HINT,
    )


def _delay(value: object) -> float:
    return _checks.number(
        "delay", value, f"numbers in [0, 1), {_STATIC_HINT}", lambda x: 0.0 <= x < 1.0
    )


def _learning_rate(value: object) -> Any:
    if callable(value):  # an optax schedule count -> lr
        return value
    return _hyper("learning_rate", value, _checks.learning_rate)


def _known(value: Hyper) -> float | None:
    """A checked Python number's value, for checks that need one; None for an array."""
    return None if _is_array(value) else float(value)


def _like(value: Hyper, leaf: jax.Array) -> jax.Array:
    """A scalar (Python number or array) in ``leaf``'s dtype: a float64 hyperparameter must
    not promote float32 parameters and their state."""
    return jnp.asarray(value, leaf.dtype)


# --- the schedule ---------------------------------------------------------------------------


def _float_dtype() -> Any:
    """float64 under ``jax_enable_x64``, float32 otherwise (jnp's default float)."""
    return jnp.result_type(float)


def _demon(count: Any, beta_init: Hyper, total_steps: int, delay: float) -> jax.Array:
    r"""beta at ``count`` updates (an integer array, traced or not), in the default float.

    Written as :math:`\beta r / (r + (1 - \beta) j)` with ``j`` the steps into the decay and
    ``r = T - j`` the steps left, both exact integers: equal to the torch form
    :math:`\beta (T - j) / (T - \beta j)`, but without its cancellation in ``T - beta j``
    (a few ulp in float32 where the torch form loses up to ``1 / (1 - beta)`` of them).
    """
    dtype = _float_dtype()
    k = jnp.asarray(count)
    start = round(delay * total_steps) if delay else 0
    span = total_steps - start  # Python ints, as schedules.demon
    if span < 1:  # the delay swallowed the whole run: no decay phase
        decayed = jnp.zeros(k.shape, dtype)
    else:
        j = jnp.maximum(k - start, 0)  # steps into the decay (0 during the delay)
        left = jnp.maximum(span - j, 0)  # steps left; 0 from k = T on: beta = 0
        left_f, j_f = left.astype(dtype), j.astype(dtype)
        decayed = beta_init * left_f / (left_f + (1 - beta_init) * j_f)
    if not start:
        return decayed.astype(dtype)
    return jnp.where(k < start, jnp.asarray(beta_init, dtype), decayed).astype(dtype)


def demon_schedule(
    beta_init: float, total_steps: int, delay: float = 0.0
) -> Callable[[Any], jax.Array]:
    r"""The Demon momentum as an optax schedule: ``count -> beta_count``.

    .. math::

        \beta_k = \beta_{init} \frac{T - k}{T - \beta_{init} k}, \quad 0 \text{ for } k \ge T

    the same values as :func:`demon_optim.schedules.demon` (to float rounding; float64 under
    ``jax_enable_x64``, float32 otherwise). With ``delay = d`` the decay starts at
    ``D = round(d T)``: ``beta_init`` for ``k < D``, then the schedule of ``T - D`` steps.

    Use it for an optax optimizer's momentum through ``optax.inject_hyperparams``, whose
    schedules receive ``count = 0`` at the first update (Demon's ``k``)::

        opt = optax.inject_hyperparams(optax.sgd)(
            learning_rate=0.1, momentum=demon_schedule(0.9, total_steps=T))

    which equals ``DemonSGD(lr=0.1, momentum=0.9, total_steps=T)``. Not for ``b1`` of
    ``optax.adam``: its bias correction ``1 - b1**t`` assumes a constant ``b1``; use
    :func:`demon_adam`.

    Args:
        beta_init: the momentum at ``k = 0``, in [0, 1).
        total_steps: ``T``, the number of updates over which it decays, in [1, 2**31 - 1].
        delay: fraction of the run that holds ``beta_init`` before the decay, in [0, 1).
    """
    beta = _checks.unit_interval("beta_init", beta_init)
    total = _total_steps(total_steps)
    d = _delay(delay)

    def schedule(count: Any) -> jax.Array:
        return _demon(count, beta, total, d)

    return schedule


# --- the transformations --------------------------------------------------------------------


class DemonMomentumState(NamedTuple):
    """State of :func:`scale_by_demon_momentum`."""

    count: jax.Array
    """Updates made so far (int32): the next update uses ``beta_count``."""
    trace: optax.Updates
    """The momentum buffer, one per parameter (torch SGD's ``momentum_buffer``)."""


class DemonAdamState(NamedTuple):
    """State of :func:`scale_by_demon_adam`."""

    count: jax.Array
    """Updates made so far (int32): the next update uses ``beta_count``; ``t = count + 1``."""
    mu: optax.Updates
    """The first moment ``m`` (undamped: ``beta m + g``; damped: ``beta m + (1 - beta) g``)."""
    nu: optax.Updates
    """The second moment ``v = beta2 v + (1 - beta2) g^2``."""
    mu_correction: jax.Array | None
    """Damped form: ``1 - prod(beta_i)`` over the updates made, the divisor that removes
    ``m``'s bias exactly for a moving beta; None in the undamped form (no correction)."""


def scale_by_demon_momentum(
    momentum: Hyper = 0.9,
    dampening: Hyper = 0.0,
    nesterov: bool = False,
    *,
    total_steps: int,
    delay: float = 0.0,
) -> optax.GradientTransformation:
    r"""SGD momentum with the Demon schedule, in torch SGD's convention (no learning rate).

    .. math::

        b_0 = g_0, \qquad b_k = \beta_k b_{k-1} + (1 - \tau) g_k, \qquad
        u_k = b_k \quad (\text{nesterov: } u_k = g_k + \beta_k b_k)

    with :math:`\beta_k` from :func:`demon_schedule` and :math:`\tau` the dampening (not
    applied to the first gradient, as torch). :func:`demon_sgd` chains it with the learning
    rate. ``momentum`` (``beta_init``) may be an array, e.g. under
    ``optax.inject_hyperparams``, which then modulates beta_init.
    """
    beta_init = _hyper("momentum", momentum, _checks.unit_interval)
    tau = _hyper("dampening", dampening, _checks.nonnegative)
    _checks.flag("nesterov", nesterov)
    total, d = _total_steps(total_steps), _delay(delay)
    m, damp = _known(beta_init), _known(tau)
    if nesterov and (m == 0.0 or (damp is not None and damp != 0.0)):
        raise invalid(
            "nesterov",
            f"True with momentum={momentum}, dampening={dampening}",
            "nesterov=True only with momentum > 0 and dampening = 0",
        )
    undamped = damp == 0.0  # a Python 0: skip the multiplication by 1

    def init_fn(params: optax.Params) -> DemonMomentumState:
        return DemonMomentumState(
            count=jnp.zeros([], jnp.int32), trace=jax.tree.map(jnp.zeros_like, params)
        )

    def update_fn(
        updates: optax.Updates, state: DemonMomentumState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, DemonMomentumState]:
        del params
        beta = _demon(state.count, beta_init, total, d)
        # the buffer starts at 0: beta * 0 + w g with w = 1 on the first update is torch's
        # `buf = g` (dampening skips the first gradient) without a branch on the count
        w = None if undamped else jnp.where(state.count == 0, 1.0, 1.0 - tau)

        def accumulate(g: jax.Array, b: jax.Array) -> jax.Array:
            new = _like(beta, b) * b
            return new + g if w is None else new + _like(w, g) * g

        trace = jax.tree.map(accumulate, updates, state.trace)
        if nesterov:
            updates = jax.tree.map(lambda g, b: g + _like(beta, b) * b, updates, trace)
        else:
            updates = trace
        return updates, DemonMomentumState(count=optax.safe_increment(state.count), trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_demon_adam(
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    *,
    total_steps: int,
    damped: bool = False,
    delay: float = 0.0,
) -> optax.GradientTransformation:
    r"""Demon Adam's step direction (no learning rate), with ``t = count + 1``.

    Undamped (the paper's Algorithm 2, the default):

    .. math::

        m = \beta_k m + g, \quad v = \beta_2 v + (1 - \beta_2) g^2, \quad
        u = \frac{m}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

    Damped (``damped=True``): :math:`m = \beta_k m + (1 - \beta_k) g` and
    :math:`u = (m / (1 - P)) / (\sqrt{v / (1 - \beta_2^t)} + \epsilon)` with
    :math:`P = \prod_{i \le k} \beta_i`, the exact bias correction for a moving beta
    (kept as ``1 - P``, updated as ``(1 - beta) + beta (1 - P)``, which loses no digits in
    float32). ``b1`` is ``beta_init``, scheduled by :func:`demon_schedule`; ``b2`` is
    never scheduled. ``1 - b2**t`` is computed as ``-expm1(t log1p(-(1 - b2)))``, exact to
    float rounding however small it is.
    """
    beta_init = _hyper("b1", b1, _checks.unit_interval)
    beta2 = _hyper("b2", b2, _checks.unit_interval)
    epsilon = _hyper("eps", eps, _checks.nonnegative)
    _checks.flag("damped", damped)
    total, d = _total_steps(total_steps), _delay(delay)

    def init_fn(params: optax.Params) -> DemonAdamState:
        return DemonAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
            mu_correction=jnp.zeros([], _float_dtype()) if damped else None,
        )

    def update_fn(
        updates: optax.Updates, state: DemonAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, DemonAdamState]:
        del params
        dtype = _float_dtype()
        beta = _demon(state.count, beta_init, total, d)
        t = optax.safe_increment(state.count)
        # 1 - b2**t without the cancellation of 1 - (rounded b2)**t in float32
        bc2 = -jnp.expm1(t.astype(dtype) * jnp.log1p(jnp.asarray(-(1 - beta2), dtype)))
        root_bc2 = jnp.sqrt(bc2)
        nu = jax.tree.map(
            lambda g, v: _like(beta2, v) * v + _like(1 - beta2, g) * (g * g), updates, state.nu
        )
        if damped:
            mu = jax.tree.map(
                lambda g, m: _like(beta, m) * m + _like(1 - beta, g) * g, updates, state.mu
            )
            correction = (1 - beta) + beta * state.mu_correction
            moment = jax.tree.map(lambda m: m / _like(correction, m), mu)
        else:
            mu = jax.tree.map(lambda g, m: _like(beta, m) * m + g, updates, state.mu)
            correction, moment = None, mu
        updates = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v) / _like(root_bc2, v) + _like(epsilon, v)), moment, nu
        )
        return updates, DemonAdamState(count=t, mu=mu, nu=nu, mu_correction=correction)

    return optax.GradientTransformation(init_fn, update_fn)


# --- the optimizers -----------------------------------------------------------------------


def _nonzero(value: Hyper) -> bool:
    """False only for a Python 0 (an array may be anything, so it is applied)."""
    return _is_array(value) or value != 0


def demon_sgd(
    learning_rate: float | optax.Schedule,
    momentum: Hyper = 0.9,
    dampening: Hyper = 0.0,
    weight_decay: Hyper = 0.0,
    nesterov: bool = False,
    *,
    total_steps: int,
    delay: float = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformation:
    r"""Demon SGDM (Chen et al., Algorithm 1) as optax: equals :class:`demon_optim.DemonSGD`.

    .. math::

        b_0 = g_0, \qquad b_k = \beta_k b_{k-1} + (1 - \tau) g_k, \qquad
        \theta_{k+1} = \theta_k - \eta_k b_k
        \quad(\text{nesterov: } \theta_{k+1} = \theta_k - \eta_k (g_k + \beta_k b_k))

    ``maximize`` negates g first, then coupled weight decay ``g += weight_decay * theta``
    (the update needs ``params``), as torch SGD.

    Args:
        learning_rate: a float, or an optax schedule ``count -> lr`` (count 0 at the first
            update, as torch's ``LambdaLR`` gives ``lr_lambda(0)`` to the first step).
        momentum: ``beta_init``, in [0, 1).
        dampening: as torch SGD (not applied to the first gradient).
        weight_decay: coupled L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
        total_steps: ``T``, the number of updates over which momentum decays.
        delay: fraction of the run that holds ``beta_init`` before the decay.
        maximize: ascend instead of descend.
    """
    lr = _learning_rate(learning_rate)
    decay = _hyper("weight_decay", weight_decay, _checks.nonnegative)
    _checks.flag("maximize", maximize)
    parts = [optax.scale(-1.0)] if maximize else []
    if _nonzero(decay):
        parts.append(optax.add_decayed_weights(decay))
    parts.append(
        scale_by_demon_momentum(momentum, dampening, nesterov, total_steps=total_steps, delay=delay)
    )
    parts.append(optax.scale_by_learning_rate(lr))
    return optax.chain(*parts)


def demon_adam(
    learning_rate: float | optax.Schedule,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.0,
    *,
    total_steps: int,
    damped: bool = False,
    decoupled_weight_decay: bool = False,
    delay: float = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformation:
    r"""Demon Adam (Chen et al., Algorithm 2) as optax: equals :class:`demon_optim.DemonAdam`.

    :math:`\theta \leftarrow \theta - \eta_k u_k` with :math:`u_k` the direction of
    :func:`scale_by_demon_adam` (its equations).

    The default undamped first moment ``m = beta m + g`` grows to about ``g / (1 - b1)``: a
    learning rate about ``(1 - b1)`` times Adam's gives Adam-sized early steps, and as beta
    decays to 0 the step shrinks towards ``lr * g / sqrt(v_hat)``. ``damped=True`` keeps
    Adam's EMA with the exact bias correction (Adam's step size throughout).

    Weight decay is coupled (``g += weight_decay * theta``) unless
    ``decoupled_weight_decay`` (``theta -= lr * weight_decay * theta``, as AdamW); both need
    ``params`` in the update. ``maximize`` negates g first. ``learning_rate`` may be an
    optax schedule (count 0 at the first update).
    """
    lr = _learning_rate(learning_rate)
    decay = _hyper("weight_decay", weight_decay, _checks.nonnegative)
    _checks.flag("decoupled_weight_decay", decoupled_weight_decay)
    _checks.flag("maximize", maximize)
    direction = scale_by_demon_adam(
        b1, b2, eps, total_steps=total_steps, damped=damped, delay=delay
    )
    parts = [optax.scale(-1.0)] if maximize else []
    if _nonzero(decay) and not decoupled_weight_decay:
        parts.append(optax.add_decayed_weights(decay))
    parts.append(direction)
    if _nonzero(decay) and decoupled_weight_decay:
        parts.append(optax.add_decayed_weights(decay))  # scaled by lr below, as AdamW
    parts.append(optax.scale_by_learning_rate(lr))
    return optax.chain(*parts)


def demon_adamw(
    learning_rate: float | optax.Schedule,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 1e-2,
    *,
    total_steps: int,
    damped: bool = False,
    delay: float = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """:func:`demon_adam` with decoupled weight decay (default 1e-2): ``DemonAdamW``."""
    return demon_adam(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        total_steps=total_steps,
        damped=damped,
        decoupled_weight_decay=True,
        delay=delay,
        maximize=maximize,
    )
