"""Measurement helpers: compiled-step timing, XLA cost and memory analysis, the machine's conv ceiling.

Every measurement compiles once (``jit(...).lower(...).compile()``, timed separately), runs once to warm up
and then ``repeats`` times; it reports the median wall time and the median process CPU time (all threads).
On a shared machine the wall time grows with the load while the CPU time much less, so both are kept, with
``os.getloadavg()`` at the start. Achieved FLOP/s = XLA's ``cost_analysis()['flops']`` / median wall time;
for a step with loops XLA counts a loop body once, so callers that know the trip count pass ``flops``.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Timing:
    """One measured compiled function."""

    name: str  # what was measured
    compile_s: float  # trace + lower + XLA compile
    wall_s: list[float]  # wall time of each repeat (after one warm-up call)
    cpu_s: list[float]  # process CPU time (user + system, all threads) of each repeat
    flops: float | None  # FLOPs of one call (XLA cost analysis, or given by the caller)
    bytes_accessed: float | None  # XLA's estimate of bytes read + written
    temp_bytes: int | None  # XLA buffer assignment: temporaries (activations, residuals, workspace)
    argument_bytes: int | None  # inputs (parameters, optimiser state, batch)
    output_bytes: int | None  # outputs (aliased with donated inputs where donation applied)
    loadavg: float  # 1-minute load average when the measurement started
    peak_rss_mb: float  # peak resident memory of this process so far (MB)

    @property
    def median_wall_s(self) -> float | None:
        return statistics.median(self.wall_s) if self.wall_s else None

    @property
    def median_cpu_s(self) -> float | None:
        return statistics.median(self.cpu_s) if self.cpu_s else None

    @property
    def gflops_per_s(self) -> float | None:
        """Achieved GFLOP/s over the median wall time."""
        return None if not self.flops or not self.wall_s else self.flops / self.median_wall_s / 1e9

    @property
    def peak_bytes(self) -> int | None:
        """Peak device memory of the call: temporaries + arguments + outputs (no aliasing credit)."""
        if self.temp_bytes is None:
            return None
        return self.temp_bytes + (self.argument_bytes or 0) + (self.output_bytes or 0)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(median_wall_s=self.median_wall_s, median_cpu_s=self.median_cpu_s,
                   gflops_per_s=self.gflops_per_s, peak_bytes=self.peak_bytes)
        return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _first(analysis):
    # cost_analysis() is a dict in recent jax, a one-element list of dicts in older releases.
    if isinstance(analysis, (list, tuple)):
        return analysis[0] if analysis else {}
    return analysis or {}


def compile_and_time(name: str, fn: Callable, args: Sequence, *, repeats: int = 3, donate_argnums=(),
                     flops: float | None = None, carry: Callable | None = None) -> Timing:
    """Compiles ``jax.jit(fn, donate_argnums)`` for ``args`` and times it.

    carry: for a function that donates its first argument (a training state), ``carry(args, result)``
    returns the arguments of the next call (e.g. the new state with the same batch); without it the same
    ``args`` are reused, which is only valid when nothing is donated.
    """
    if repeats < 0:
        raise ValueError(f"repeats must be >= 0 (0: compile and analyse only), got {repeats}")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    compile_s = time.perf_counter() - start
    cost = _first(compiled.cost_analysis())
    try:
        memory = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it; the RSS is still reported
        memory = None
    args = tuple(args)
    walls, cpus = [], []
    if repeats:
        result = jax.block_until_ready(compiled(*args))
        if carry is not None:
            args = carry(args, result)
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = jax.block_until_ready(compiled(*args))
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        if carry is not None:
            args = carry(args, result)
    return Timing(
        name=name, compile_s=compile_s, wall_s=walls, cpu_s=cpus,
        flops=flops if flops is not None else cost.get("flops"),
        bytes_accessed=cost.get("bytes accessed"),
        temp_bytes=None if memory is None else int(memory.temp_size_in_bytes),
        argument_bytes=None if memory is None else int(memory.argument_size_in_bytes),
        output_bytes=None if memory is None else int(memory.output_size_in_bytes),
        loadavg=load, peak_rss_mb=peak_rss_mb(),
    )


def conv_ceiling(*, batch: int = 8, size: int = 64, channels: int = 256, kernel: int = 3, repeats: int = 5,
                 dtype=jnp.float32) -> Timing:
    """The machine's practical peak: one large ``kernel x kernel`` conv ``channels -> channels`` (NHWC).

    2 * batch * size^2 * channels^2 * kernel^2 FLOPs (38 GFLOP for the default 3x3 256->256, 64x64, batch 8).
    ``dtype``: the operand type; the result is float32 (accumulated in float32), as in the model's mixed
    precision (:attr:`hybridjax.models.ModelConfig.compute_dtype`).
    """
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels), dtype)
    w = (jax.random.normal(jax.random.key(1), (kernel, kernel, channels, channels), jnp.float32) * 0.01).astype(dtype)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            preferred_element_type=jnp.float32)

    flops = 2.0 * batch * size * size * channels * channels * kernel * kernel
    return compile_and_time(f"conv{kernel}x{kernel} {channels}->{channels} {size}x{size} b{batch} "
                            f"{jnp.dtype(dtype).name}", conv, (x, w), repeats=repeats, flops=flops)


def matmul_ceiling(*, size: int = 4096, repeats: int = 5, dtype=jnp.float32) -> Timing:
    """A ``size^3`` matrix product (``2 size^3`` FLOPs) with ``dtype`` operands and a float32 result."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)

    def matmul(a, b):
        return jnp.dot(a, b, preferred_element_type=jnp.float32)

    return compile_and_time(f"matmul {size}^3 {jnp.dtype(dtype).name}", matmul, (a, b), repeats=repeats,
                            flops=2.0 * size ** 3)


def device_memory_stats() -> dict | None:
    """The first device's allocator statistics (``peak_bytes_in_use`` ...; None where the backend has none)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    return dict(stats) if stats else None


def device_description() -> dict:
    """Backend, device kind and count, and the host's CPU count (what a number was measured on)."""
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind, "num_devices": len(devices),
            "host_cpus": os.cpu_count(), "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
