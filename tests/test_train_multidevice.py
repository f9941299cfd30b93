"""Data parallelism: pmap over 4 forced CPU devices and jax.distributed with two local processes.

The pmapped step of every stage (BatchNorm synchronised across the devices) must equal the one-device
step on the same global batch.

Both run in subprocesses: the device count must be fixed before JAX is imported, and each distributed
process is its own JAX runtime.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

PMAP_SCRIPT = textwrap.dedent('''
    import json, pathlib, sys
    import jax, numpy as np, optax
    from hybridjax.models import ModelConfig
    from hybridjax.data.batch import collate, shard_for_devices
    from hybridjax.train import data as data_lib, distributed, steps
    from hybridjax.train.config import DataConfig, StageConfig, TrainConfig
    from hybridjax.train.loop import fresh_state
    from hybridjax.train.stages import stage as stage_record

    assert jax.local_device_count() == 4, jax.devices()
    fixture, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    stage_cfg = StageConfig(learning_rate=1e-3, batch_size=4)
    cfg = TrainConfig(dataset="dhp19", data_dir=fixture, model=ModelConfig.preset("tiny_10ms"),
                      data=DataConfig(downsample=8), ann=stage_cfg, snn=stage_cfg, hybrid=stage_cfg, progress=False)
    rng = jax.random.PRNGKey(7)
    result = {}

    def batch_of(stage):
        ds = data_lib.build_dataset(cfg, stage, "train", fixture)
        return collate([ds[i] for i in range(4)], stage_record(stage).train_fields, downsample=8)

    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])

    def max_rel(a, b):
        a, b = flat(a), flat(b)
        return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))

    # Adam with eps 1e-3 instead of 1e-8: its first update lr * g / (|g| + eps) is then a well-conditioned
    # function of the gradient. The conv biases in front of a train-mode BatchNorm (state initialisers)
    # have an exactly zero gradient (BatchNorm subtracts the batch mean); with eps 1e-8 Adam would turn its
    # ~1e-10 rounding into +-lr steps that differ between any two summation orders.
    tx = optax.adam(1e-3, eps=1e-3)

    def with_tx(state):
        return state.replace(tx=tx, opt_state=tx.init(state.params))

    # Every stage: the pmapped step on 4 shards equals the one-device step on the whole batch. The SNN and
    # the hybrid (state initialisers and SNN) have BatchNorm, synchronised across the devices in the
    # pmapped step, so their normalisation and running statistics are those of the global batch as well.
    for stage in ("ann", "snn", "hybrid"):
        batch = batch_of(stage)
        single = with_tx(fresh_state(cfg, stage, 1))
        ref_state, ref_metrics = jax.jit(stage_record(stage).train_step)(single, batch, rng)
        multi = with_tx(fresh_state(cfg, stage, 4))
        multi = multi.with_arrays(distributed.replicate(multi.arrays()))
        pm_state, pm_metrics = steps.compile_train_step(stage_record(stage).train_step, 4)(
            multi, shard_for_devices(batch, 4), distributed.replicated_rng(rng, 4))
        pm_host = distributed.unreplicate(pm_state.arrays())
        replicas_equal = all(np.array_equal(np.asarray(x)[0], np.asarray(x)[d])
                             for x in jax.tree_util.tree_leaves((pm_state.params, pm_state.batch_stats))
                             for d in range(1, 4))
        result[stage] = {
            "params_rel": max_rel(pm_host["params"], ref_state.params),
            # Adam's moments after one step: mu = 0.1 g, nu = 0.001 g^2 (the averaged gradient itself).
            "adam_mu_rel": max_rel(optax.tree_utils.tree_get(pm_host["opt_state"], "mu"),
                                   optax.tree_utils.tree_get(ref_state.opt_state, "mu")),
            "adam_nu_rel": max_rel(optax.tree_utils.tree_get(pm_host["opt_state"], "nu"),
                                   optax.tree_utils.tree_get(ref_state.opt_state, "nu")),
            "metrics": {k: [float(pm_metrics[k][0]), float(ref_metrics[k])] for k in ref_metrics},
            "replicas_equal": replicas_equal,
        }
        if stage != "ann":
            result[stage]["stats_rel"] = max_rel(pm_host["batch_stats"], ref_state.batch_stats)
            result[stage]["stats_moved"] = max_rel(pm_host["batch_stats"], single.batch_stats)
    out.write_text(json.dumps(result))
''')

DIST_SCRIPT = textwrap.dedent('''
    import pathlib, sys
    import jax, numpy as np
    from hybridjax.models import ModelConfig
    from hybridjax.train.config import DataConfig, StageConfig, TrainConfig
    from hybridjax.train.loop import restore_stage_state, train

    fixture, workdir, port, pid = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    stage = StageConfig(learning_rate=1e-3, batch_size=2, num_steps=2, eval_every=0, checkpoint_every=2)
    cfg = TrainConfig(dataset="dhp19", data_dir=fixture, workdir=workdir, stage="ann",
                      model=ModelConfig.preset("tiny_10ms"), data=DataConfig(downsample=8, max_val_items=2),
                      ann=stage, progress=False, evaluate_at_end=False, distributed=True,
                      coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    train(cfg, log=lambda *_: None)
    assert jax.process_count() == 2 and jax.device_count() == 2
    state, step = restore_stage_state(cfg, "ann", "latest")
    flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(state.params)])
    np.save(workdir.parent / f"params_{pid}.npy", flat)
    print("done", pid, step, flush=True)
''')


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **extra)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def test_pmap_on_four_devices_matches_one_device(shared_dir, tmp_path):
    out = tmp_path / "result.json"
    script = tmp_path / "pmap_check.py"
    script.write_text(PMAP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(shared_dir / "fixtures" / "dhp19_mini"), str(out)],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"), capture_output=True, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    for stage in ("ann", "snn", "hybrid"):
        r = result[stage]
        assert r["replicas_equal"], stage
        assert r["params_rel"] < 1e-5 and r["adam_mu_rel"] < 1e-4 and r["adam_nu_rel"] < 1e-4, (stage, r)
        for name in ("loss", "mpjpe", "mpjpe_count", "grad_norm"):
            np.testing.assert_allclose(*r["metrics"][name], rtol=1e-5, err_msg=f"{stage} {name}")
        if stage != "ann":
            # BatchNorm synchronised across the devices: the global batch's running statistics.
            assert r["stats_rel"] < 1e-5, (stage, r)
            assert r["stats_moved"] > 1e-3, (stage, r)  # the statistics did change in train mode
    np.testing.assert_allclose(*result["hybrid"]["metrics"]["mp_loss"], rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_end_with_identical_params(shared_dir, tmp_path):
    script = tmp_path / "dist_worker.py"
    script.write_text(DIST_SCRIPT)
    port = _free_port()
    workdir = tmp_path / "run"
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(shared_dir / "fixtures" / "dhp19_mini"), str(workdir), str(port), str(i)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-4000:]
        assert "done" in stdout
    a, b = np.load(tmp_path / "params_0.npy"), np.load(tmp_path / "params_1.npy")
    assert a.size > 1000
    np.testing.assert_array_equal(a, b)
    # Both processes trained the same global batch: the checkpoint holds step 2.
    assert sorted(p.name for p in (workdir / "ann" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
