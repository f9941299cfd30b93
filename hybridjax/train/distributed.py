"""Devices and processes: multi-host initialisation, replication and batch sharding for ``pmap``.

Data parallelism: every process loads its own ``1 / process_count`` of each global batch
(:class:`hybridjax.data.loader.BatchLoader`), splits it over its local devices
(:func:`hybridjax.data.batch.shard_for_devices`), and the step averages gradients over all devices of all
processes with ``jax.lax.pmean`` over axis ``'batch'``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

# Environment variables that announce a multi-process launch (checked when --distributed is not given).
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS")


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
