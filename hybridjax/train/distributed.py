"""Devices and processes: multi-host initialisation, replication and batch sharding for ``pmap``.

Data parallelism: every process loads its own ``1 / process_count`` of each global batch, splits it over
its local devices (:func:`shard_batch`), and the step averages gradients over all devices of all
processes with ``jax.lax.pmean`` over axis ``'batch'``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

# Axis of the batch dimension of each batch field (None: shared by the whole batch, replicated).
BATCH_AXIS = {
    "events": 1,  # [T, B, H, W, 2]
    "landmarks": None,  # resolved by rank: [B, J, 2] frames (axis 0) or [T, B, J, 2] sequences (axis 1)
    "joints_3d": None,  # [B, J, 3] or [T, B, J, 3]
    "ann_input": 0,  # [B, H, W, 20]
    "ann_landmarks": 0,  # [B, J, 2] the label of the ANN input
    "ann_input_next": 0,
    "step_has_label": None,  # [T], the same for every sample
}
_RANK_AXIS = {"landmarks": {3: 0, 4: 1}, "joints_3d": {3: 0, 4: 1}}

# Environment variables that announce a multi-process launch (checked when --distributed is not given).
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS")


def batch_axis(name: str, value) -> int | None:
    """Batch axis of field ``name`` (None: not batched)."""
    if name not in BATCH_AXIS:
        raise KeyError(f"batch field {name!r}: unknown batch axis (known: {sorted(BATCH_AXIS)})")
    if name in _RANK_AXIS:
        ndim = np.ndim(value)
        if ndim not in _RANK_AXIS[name]:
            raise ValueError(f"batch field {name!r}: unexpected rank {ndim} (shape {np.shape(value)})")
        return _RANK_AXIS[name][ndim]
    return BATCH_AXIS[name]


def shard_batch(batch: dict, num_devices: int) -> dict:
    """Splits every batched field into ``num_devices`` equal shards along a new leading device axis.

    ``[T, B, ...]`` becomes ``[D, T, B/D, ...]``, ``[B, ...]`` becomes ``[D, B/D, ...]``; unbatched fields
    (``step_has_label``) are repeated ``D`` times. Raises when B is not a multiple of D.
    """
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        axis = batch_axis(name, value)
        if axis is None:
            out[name] = np.broadcast_to(value, (num_devices,) + value.shape)
            continue
        size = value.shape[axis]
        if size % num_devices:
            raise ValueError(
                f"batch field {name!r}: batch size {size} is not divisible by {num_devices} devices"
            )
        split = value.reshape(value.shape[:axis] + (num_devices, size // num_devices) + value.shape[axis + 1:])
        out[name] = np.moveaxis(split, axis, 0)
    return out


def replicate(tree, devices=None, axis_name: str = "batch"):
    """Copies of ``tree`` on every local device (leading device axis), for ``pmap`` over ``axis_name``.

    The mesh axis carries the pmap's axis name: pmap returns its outputs sharded over a mesh of that
    name, so the replicated state then has the same sharding before and after a step. (With another name
    the second step saw a new input sharding and pmap compiled the whole train step a second time.)
    """
    devices = jax.local_devices() if devices is None else devices
    mesh = jax.sharding.Mesh(np.asarray(devices), (axis_name,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))
    stack = lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x))  # noqa: E731
    return jax.device_put(jax.tree_util.tree_map(stack, tree), sharding)


def unreplicate(tree):
    """The first device's copy of a replicated tree, as host-side numpy arrays."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x[0]), tree)


def replicated_rng(rng, num_devices: int) -> np.ndarray:
    """The same raw ``uint32`` key on every device (every device then sees identical randomness)."""
    rng = np.asarray(rng)
    return np.broadcast_to(rng, (num_devices,) + rng.shape)


def wants_distributed(flag: bool | None) -> bool:
    """Whether to call ``jax.distributed.initialize``: the flag if given, else cluster environment hints."""
    if flag is not None:
        return flag
    return any(os.environ.get(name) for name in _CLUSTER_ENV)


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """``jax.distributed.initialize`` (arguments left None are auto-detected by JAX on TPU pods / SLURM).

    On the CPU backend the cross-process collectives need gloo, which is enabled first.
    """
    if jax.distributed.is_initialized():
        return
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms == "" or "cpu" in platforms:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
