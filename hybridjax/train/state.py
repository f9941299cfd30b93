"""Training state: the arrays a stage updates plus the static pieces its step function needs.

The state is a pytree (so ``jax.jit`` / ``jax.pmap`` can carry and donate it) whose array leaves are

* ``step``          int32 scalar, number of optimiser updates done so far,
* ``params``        the trainable parameters (the only tree the optimiser sees),
* ``frozen_params`` parameters used in the forward pass but never updated (the ANN in the hybrid stage;
  an empty dict otherwise). Keeping them outside ``params`` means Adam holds no moments for them and no
  update can touch them, whatever the learning rate.
* ``batch_stats``   BatchNorm running statistics (empty dict for the ANN, which has no BatchNorm),
* ``opt_state``     the optax state of ``params``.

The model, the optimiser and the :class:`StepSettings` are static (``pytree_node=False``): they are part
of the tree structure, so a compiled step is specialised to them and never re-traced for new values.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Static settings of a training step (hashable; part of the compiled step's identity)."""

    downsample: int = 1  # spatial factor the inputs were sum-pooled by; targets are built on that grid
    output_loss_weight: float = 0.95  # hybrid: weight of the mean per-step heatmap MSE (official 0.95)
    membrane_loss_weight: float = 0.05  # hybrid: weight of L_mp, the initial-membrane loss (official 0.05)
    axis_name: str | None = None  # pmap axis to average gradients/metrics/statistics over; None = one device
    # ANN stage: random mirror (left/right joints swapped) and shifts of up to this many pooled pixels per frame
    # (hybridjax.train.augment); None = no augmentation (official)
    ann_augment_shift: int | None = None
    # SNN / hybrid: BatchNorm normalises with its running statistics and keeps them while the weights train
    # (StageConfig.freeze_batch_norm)
    freeze_batch_norm: bool = False

    def __post_init__(self):
        if self.downsample < 1:
            raise ValueError(f"StepSettings.downsample: must be >= 1, got {self.downsample}")


class TrainState(struct.PyTreeNode):
    """Arrays of one training stage plus its static model, optimiser and step settings."""

    step: jax.Array
    params: Any
    frozen_params: Any
    batch_stats: Any
    opt_state: Any
    model: nn.Module = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    settings: StepSettings = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, model, tx, settings, params, batch_stats=None, frozen_params=None) -> TrainState:
        """A fresh state at step 0 with the optimiser initialised on ``params`` only."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            frozen_params={} if frozen_params is None else frozen_params,
            batch_stats={} if batch_stats is None else batch_stats,
            opt_state=tx.init(params),
            model=model,
            tx=tx,
            settings=settings,
        )

    def variables(self, params=None) -> dict:
        """The flax variable dict for ``model.apply``: trainable and frozen params merged, plus BN stats.

        The one place the two parameter parts are merged, for the train steps and for inference (evaluation,
        streaming).

        The frozen part goes through ``stop_gradient`` so that even a gradient taken with respect to it
        would be zero.
        """
        params = self.params if params is None else params
        merged = dict(params)
        for name, value in self.frozen_params.items():
            if name in merged:
                raise ValueError(f"parameter collection {name!r} is both trainable and frozen")
            merged[name] = jax.lax.stop_gradient(value)
        variables = {"params": merged}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables

    def arrays(self) -> dict:
        """The array part of the state as a plain dict (what a checkpoint stores)."""
        return {
            "step": self.step,
            "params": self.params,
            "frozen_params": self.frozen_params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
        }

    def with_arrays(self, arrays: dict) -> TrainState:
        """This state with its arrays replaced by ``arrays`` (the inverse of :meth:`arrays`)."""
        return self.replace(
            step=arrays["step"],
            params=arrays["params"],
            frozen_params=arrays["frozen_params"],
            batch_stats=arrays["batch_stats"],
            opt_state=arrays["opt_state"],
        )


@functools.cache
def adam(learning_rate: float, grad_clip_norm: float | None = None) -> optax.GradientTransformation:
    """Adam (the official optimiser, PyTorch defaults b1 0.9, b2 0.999, eps 1e-8), optionally clipped.

    Cached: the transformation is static metadata of :class:`TrainState`, and optax builds new closures on
    every call, so an uncached call made every restored or re-created state (a resume, the final report)
    look new to ``jit`` and recompile the whole train / eval step. Optax transformations are stateless.
    """
    parts = []
    if grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8))
    return optax.chain(*parts)
