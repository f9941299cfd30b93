"""A replicated state has the sharding pmap gives its outputs, so consecutive pmapped steps compile once.

Runs in a subprocess: the forced device count must be set before JAX starts.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from hybridjax.data.batch import shard_for_devices
    from hybridjax.train import distributed

    assert jax.local_device_count() == 2, jax.devices()
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kw: event == "/jax/core/compile/backend_compile_duration" and compiles.append(event))
    step = jax.pmap(lambda s, b: ({"w": s["w"] * 0.5 + jax.lax.pmean(b.sum(), "batch")}, b.sum()),
                    axis_name="batch", donate_argnums=(0,))
    state = distributed.replicate({"w": np.ones(3, np.float32)})
    batch = shard_for_devices({"ann_input": np.arange(8, dtype=np.float32).reshape(2, 2, 2)}, 2)["ann_input"]
    first_sharding = state["w"].sharding
    for _ in range(3):
        state, _ = step(state, batch)
    assert state["w"].sharding == first_sharding, (state["w"].sharding, first_sharding)
    print("backend compiles", len(compiles))
    print("w", np.asarray(state["w"][1]).tolist())
''')


def test_pmapped_steps_compile_once():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # Shards hold 0..3 and 4..7: pmean of their sums = 14; w = ((1 / 2 + 14) / 2 + 14) / 2 + 14 = 24.625.
    assert "w [24.625, 24.625, 24.625]" in done.stdout
    assert "backend compiles 1" in done.stdout, done.stdout
