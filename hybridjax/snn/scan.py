"""The one time-loop helper: ``jax.lax.scan`` of a step function over time-major inputs.

``step_fn(carry, x_t) -> (carry, y_t)`` is scanned over the leading (time) axis of ``xs`` starting from
an externally given ``carry`` (for the SNN: every layer's membrane potential, zeros or ANN-produced).
With ``remat=True`` each step is rematerialised (``jax.checkpoint``): the backward pass recomputes a
step's internals instead of storing them, so memory grows with the number of steps only by the carry.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def checkpoint_policy(name: str | None):
    """The ``jax.checkpoint`` policy named ``name`` (:data:`REMAT_POLICIES`); None = save nothing extra."""
    if name is None:
        return None
    try:
        return REMAT_POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown remat_policy {name!r}; choose one of {sorted(REMAT_POLICIES)}") from None


def scan_steps(step_fn: Callable[[Any, Any], tuple[Any, Any]], init_carry: Any, xs: Any, *,
               remat: bool = False, remat_policy: str | None = None, unroll: int = 1) -> tuple[Any, Any]:
    """Runs ``step_fn`` over the leading axis of ``xs``; returns ``(final_carry, stacked_outputs)``.

    remat: rematerialise every step in the backward pass (bounded memory for long 1 ms sequences).
    remat_policy: a name of :data:`REMAT_POLICIES` (what a rematerialised step may keep), default none.
    unroll: forwarded to ``jax.lax.scan``.
    """
    if remat:
        step_fn = jax.checkpoint(step_fn, policy=checkpoint_policy(remat_policy))
    return jax.lax.scan(step_fn, init_carry, xs, unroll=unroll)


def python_loop_steps(step_fn, init_carry, xs):
    """The same loop unrolled in Python (a reference for tests; never use it for training)."""
    length = jax.tree_util.tree_leaves(xs)[0].shape[0]
    carry, outputs = init_carry, []
    for t in range(length):
        carry, y = step_fn(carry, jax.tree_util.tree_map(lambda a, t=t: a[t], xs))
        outputs.append(y)
    return carry, jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *outputs)
