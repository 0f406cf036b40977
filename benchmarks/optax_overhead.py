"""The cost of Demon in optax: a jitted training step with demon_adam vs optax.adam.

A small MLP (784-256-256-10, batch 128, float32) trained by one jitted step
(``value_and_grad`` + ``tx.update`` + ``apply_updates``), and the optimizer's part alone
(``tx.update`` + ``apply_updates`` on fixed gradients, jitted). Pairs: ``demon_adam``
(undamped and damped) against ``optax.adam``, and ``demon_sgd`` against
``optax.sgd(momentum=0.9)``; Demon's extra work is the schedule (a few scalar operations
per step) and, for the damped form, one scalar product and a division by it.

Each repetition times ``--steps`` consecutive steps of every optimizer, in an order that
alternates between repetitions. Reported: the median time per step, and the median over
repetitions of each repetition's ratio to its baseline (the pair ran back to back, so a
busy machine slows both alike). The goal is a ratio within 1.05. On a shared machine,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` (one thread per matmul) steadies it.

    python benchmarks/optax_overhead.py [--steps 50] [--repeats 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from demon_optim.optax import demon_adam, demon_sgd

SIZES = (784, 256, 256, 10)
BATCH = 128
T = 10_000


def mlp_params(key: jax.Array) -> list[dict[str, jax.Array]]:
    params = []
    for fan_in, fan_out, k in zip(
        SIZES[:-1], SIZES[1:], jax.random.split(key, len(SIZES) - 1), strict=True
    ):
        params.append(
            {
                "w": jax.random.normal(k, (fan_in, fan_out)) / jnp.sqrt(fan_in),
                "b": jnp.zeros(fan_out),
            }
        )
    return params


def loss_fn(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    logits = h @ params[-1]["w"] + params[-1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def optimizers() -> dict[str, tuple[str, Any]]:
    """name -> (baseline name, transformation)."""
    return {
        "optax.adam": ("optax.adam", optax.adam(1e-3)),
        "demon_adam": ("optax.adam", demon_adam(1e-4, total_steps=T)),
        "demon_adam damped": ("optax.adam", demon_adam(1e-3, damped=True, total_steps=T)),
        "optax.sgd momentum": ("optax.sgd momentum", optax.sgd(0.01, momentum=0.9)),
        "demon_sgd": ("optax.sgd momentum", demon_sgd(0.01, 0.9, total_steps=T)),
    }


def train_step(tx: Any) -> Callable[..., Any]:
    @jax.jit
    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any]:
        grads = jax.grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def update_step(tx: Any) -> Callable[..., Any]:
    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def timer(tx: Any, kind: str, params: Any, data: tuple[Any, ...]) -> Callable[[int], float]:
    """A function running ``n`` steps from where the last call stopped; returns seconds."""
    step = train_step(tx) if kind == "train step" else update_step(tx)
    carry = [params, tx.init(params)]
    jax.block_until_ready(step(*carry, *data))  # compile

    def run(n: int) -> float:
        p, s = carry
        start = time.perf_counter()
        for _ in range(n):
            p, s = step(p, s, *data)
        jax.block_until_ready(p)
        elapsed = time.perf_counter() - start
        carry[:] = [p, s]
        return elapsed

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=60, help="interleaved repetitions")
    args = parser.parse_args()

    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (BATCH, SIZES[0]))
    y = jax.random.randint(ky, (BATCH,), 0, SIZES[-1])
    params = mlp_params(kp)
    grads = jax.grad(loss_fn)(params, x, y)
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}; "
        f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}; {args.steps} steps x "
        f"{args.repeats} interleaved repetitions (medians)"
    )
    for kind, data in (("train step", (x, y)), ("update only", (grads,))):
        opts = optimizers()
        timers = {name: timer(tx, kind, params, data) for name, (_, tx) in opts.items()}
        for run in timers.values():
            run(args.steps)  # warm up
        times: dict[str, list[float]] = {name: [] for name in timers}
        names = list(timers)
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                times[name].append(timers[name](args.steps) / args.steps)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        print(f"\n{kind}:")
        for name, (baseline, _) in opts.items():
            # each repetition's own ratio: the two ran seconds apart, under the same load
            ratios = [a / b for a, b in zip(times[name], times[baseline], strict=True)]
            print(
                f"  {name:20s} {medians[name] * 1e6:8.1f} us/step   ratio to {baseline}: "
                f"{statistics.median(ratios):.3f} (median of per-repetition ratios; "
                f"ratio of medians {medians[name] / medians[baseline]:.3f})"
            )


if __name__ == "__main__":
    main()
