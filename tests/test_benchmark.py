"""Benchmark harness: FLOP counts, memory analysis, donation-carrying timing loop, long-window variants."""
import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.bench import compile_and_time, conv_ceiling
from hybridjax.bench.long_window import remat_variant
from hybridjax.bench.streaming import data_throughput, streaming_latency
from hybridjax.bench.training import synthetic_batch
from hybridjax.errors import ConfigError
from hybridjax.models import ModelConfig
from hybridjax.runtime import StreamingConfig

TINY = ModelConfig.preset("tiny")


def test_compile_and_time_counts_flops_and_memory_of_a_matmul():
    a = jnp.ones((64, 32), jnp.float32)
    b = jnp.ones((32, 16), jnp.float32)
    timing = compile_and_time("matmul", lambda a, b: a @ b, (a, b), repeats=4)
    assert timing.flops == 2 * 64 * 32 * 16
    assert len(timing.wall_s) == len(timing.cpu_s) == 4 and timing.median_wall_s > 0
    assert timing.argument_bytes == 4 * (64 * 32 + 32 * 16) and timing.output_bytes == 4 * 64 * 16
    assert timing.peak_bytes >= timing.argument_bytes + timing.output_bytes
    record = timing.to_dict()
    assert record["gflops_per_s"] == pytest.approx(timing.flops / timing.median_wall_s / 1e9)
    json.dumps(record)  # plain JSON types


def test_donated_state_is_carried_between_repeats():
    calls = []

    def step(state, increment):
        return state + increment

    def carry(args, result):
        calls.append(float(result[0]))
        return (result,) + tuple(args[1:])

    compile_and_time("counter", step, (jnp.zeros(3), jnp.ones(3)), repeats=3, donate_argnums=(0,), carry=carry)
    assert calls == [1.0, 2.0, 3.0, 4.0]  # warm-up + 3 repeats, each on the previous result


def test_compile_only_mode_and_bad_repeats():
    timing = compile_and_time("add", lambda x: x + 1, (jnp.ones(8),), repeats=0)
    assert timing.wall_s == [] and timing.median_wall_s is None and timing.gflops_per_s is None
    assert timing.temp_bytes is not None
    with pytest.raises(ValueError, match="repeats"):
        compile_and_time("add", lambda x: x + 1, (jnp.ones(8),), repeats=-1)


def test_conv_ceiling_flops_closed_form():
    timing = conv_ceiling(batch=1, size=16, channels=8, kernel=3, repeats=1)
    assert timing.flops == 2 * 1 * 16 * 16 * 8 * 8 * 9
    xla = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(
        "NHWC", "HWIO", "NHWC"))).lower(jnp.ones((1, 16, 16, 8)), jnp.ones((3, 3, 8, 8))).compile().cost_analysis()
    # XLA skips the multiplications with the zero padding: 16x16 output, (16 - 2)^2 interior rows/cols full.
    taps = sum(1 + (i > 0) + (i < 15) for i in range(16))  # kernel rows inside the image, summed over outputs
    assert xla["flops"] == 2 * 8 * 8 * taps * taps


def test_remat_variants_map_to_model_configs():
    assert remat_variant(TINY, "layer") == dataclasses.replace(TINY, snn_mode="layer", remat=False, time_chunk=None)
    assert remat_variant(TINY, "step_remat") == dataclasses.replace(TINY, snn_mode="step", remat=True)
    chunked = remat_variant(TINY, "layer_chunk5_remat")
    assert (chunked.snn_mode, chunked.remat, chunked.time_chunk) == ("layer", True, 5)
    with pytest.raises(ValueError, match="remat variant"):
        remat_variant(TINY, "layer_chunkX_remat")


def test_synthetic_batch_has_the_loader_shapes():
    batch = synthetic_batch("hybrid", TINY, resolution=32, batch_size=2, num_steps=5)
    assert batch["events"].shape == (5, 2, 32, 32, 2)
    assert batch["ann_input"].shape == batch["ann_input_next"].shape == (2, 32, 32, 20)
    assert batch["landmarks"].shape == (5, 2, 13, 2) and batch["step_has_label"].shape == (5,)
    assert set(synthetic_batch("ann", TINY, resolution=32, batch_size=2, num_steps=5)) == {"ann_input",
                                                                                            "ann_landmarks"}


def test_streaming_latency_counts_steps_after_the_first_ann_init():
    # 10 ms chunks (steps run 2 per jitted call), plus the tight-loop CPU time of the single step and the scan.
    stats = streaming_latency(TINY, resolution=32, duration_ms=120, events_per_ms=100, chunk_ms=10,
                              streaming=StreamingConfig(max_steps_per_call=2), tight_loop_steps=4)
    # 7500 events exist only after 75 ms, so the first init is at 100 ms; the last event lies in [119, 120) ms.
    assert stats["ann_inits"] == 1 and stats["steps"] == 19 and stats["chunk_ms"] == 10
    assert stats["step_latency_median_ms"] > 0 and stats["real_time_factor"] > 0
    assert stats["tight_loop_scan_length"] == 2 and stats["max_steps_per_call"] == 2 and stats["fold_params"]
    assert stats["tight_loop_cpu_ms_per_step"] > 0 and stats["tight_loop_scan_cpu_ms_per_step"] > 0


def test_data_throughput_on_the_fixture(shared_dir):
    stats = data_throughput(shared_dir / "fixtures" / "dhp19_mini", batch_size=2, epochs=1)
    assert stats["windows"] >= 2 and stats["windows_per_s"] > 0


def test_cli_help_lists_the_options():
    out = subprocess.run([sys.executable, "experiments/benchmark.py", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--snn-mode", "--remat", "--sweep-steps", "--isolate", "--repeats", "--output",
                   "--torch-baseline", "--official-repo", "--torch-threads"):
        assert option in out


def test_chunked_layer_mode_computes_the_same_outputs_and_gradients():
    # (step mode with remat against layer mode is covered by tests/test_models.py)
    from hybridjax.models.snn_unet import init_snn_params, snn_forward, zero_state

    base = remat_variant(TINY, "layer")
    params, stats = init_snn_params(jax.random.key(1), base, pure_snn=False)
    params = jax.tree_util.tree_map(lambda w: 3.0 * w, params)  # make the layers spike
    events = jax.random.poisson(jax.random.key(2), 0.3, (7, 2, 32, 32, 2)).astype(jnp.float32)  # 2 chunks + 1
    v0 = jax.tree_util.tree_map(lambda v: v + 0.3, zero_state(base, 2, 32, 32))
    out0 = jnp.zeros((2, 32, 32, TINY.num_joints))

    def run(cfg):
        def loss(p):
            result, new_stats = snn_forward(p, stats, events, v0, out0, cfg, pure_snn=False, train=True)
            value = jnp.mean(result.outputs ** 2) + sum(jnp.mean(v ** 2) for v in result.v_last.values())
            return value, (result.outputs, result.spike_counts, new_stats)

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (want_loss, want_aux), want_grads = run(base)
    (got_loss, got_aux), got_grads = run(remat_variant(TINY, "layer_chunk3_remat"))
    assert float(jnp.sum(want_aux[1])) > 0
    np.testing.assert_array_equal(got_aux[1], want_aux[1])  # identical spikes
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for got, want in zip(jax.tree_util.tree_leaves((got_aux[0], got_aux[2], got_grads)),
                         jax.tree_util.tree_leaves((want_aux[0], want_aux[2], want_grads))):
        # float32 sums in a different order: compare relative to each leaf's scale (gradients reach 1e6 here)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.max(np.abs(want))) + 1e-6)



FAKE_TORCH_SERVER = """#!/usr/bin/env python3
import json, sys
print(json.dumps({"ready": True, "torch_version": "fake", "num_threads": 7, "args": sys.argv[1:]}), flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
    print(json.dumps({"wall_s": 2.0, "cpu_s": 3.5, "loss": 0.1}), flush=True)
"""


def test_comparison_with_torch_alternates_steps_with_the_server(tmp_path):
    from hybridjax.bench.versus_torch import TorchStepServer, compare_with_torch

    fake = tmp_path / "fake_python"  # stands in for an interpreter with torch: a server with fixed step times
    fake.write_text(FAKE_TORCH_SERVER)
    fake.chmod(0o755)
    server = TorchStepServer(str(fake), resolution=96, batch_size=3, num_steps=7, threads=2)
    args = server.info["args"]
    assert args[0].endswith("experiments/benchmark_torch.py") and "--serve" in args
    assert [args[args.index(f) + 1] for f in ("--resolution", "--batch-size", "--num-steps", "--threads")] == \
        ["96", "3", "7", "2"]
    assert server.step() == {"wall_s": 2.0, "cpu_s": 3.5, "loss": 0.1}
    server.close()
    assert server.process.returncode == 0

    result = compare_with_torch(ModelConfig.preset("tiny"), torch_python=str(fake), resolution=32, batch_size=1,
                                num_steps=2, rounds=3)
    assert result["torch"]["wall_s"] == [2.0, 2.0, 2.0] and result["torch"]["median_cpu_s"] == 3.5
    ours = result["hybridjax"]["wall_s"]
    assert len(ours) == 3 and all(t > 0 for t in ours)
    assert result["speedup"] == pytest.approx(2.0 / result["hybridjax"]["median_wall_s"])
    assert result["speedup_per_round"] == pytest.approx(float(np.median([2.0 / t for t in ours])))
    assert (result["torch_version"], result["torch_threads"]) == ("fake", 7)


def test_comparison_with_torch_names_the_interpreter_that_failed(tmp_path):
    from hybridjax.bench.versus_torch import TorchStepServer

    failing = tmp_path / "no_torch_python"
    failing.write_text("#!/bin/sh\necho 'No module named torch' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)--torch-python .*no_torch_python.*exit 1.*No module named torch"):
        TorchStepServer(str(failing), resolution=64, batch_size=2, num_steps=10)


def _fake_official_checkout(root):
    from hybridjax.bench.baselines import OFFICIAL_FILES

    for name in OFFICIAL_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_official_baseline_settings_fail_with_one_line_naming_the_setting(tmp_path):
    from hybridjax.bench.baselines import BaselineError, check_baseline
    from hybridjax.errors import UserError

    assert issubclass(BaselineError, UserError)  # run_cli prints it as one line, no traceback
    check_baseline("port", None)
    check_baseline("official", str(_fake_official_checkout(tmp_path / "official")))
    with pytest.raises(BaselineError, match="--torch-baseline 'original': choose one of port, official"):
        check_baseline("original", None)
    with pytest.raises(BaselineError, match="--torch-baseline official needs --official-repo PATH"):
        check_baseline("official", None)
    with pytest.raises(BaselineError, match="--official-repo is only read with --torch-baseline official"):
        check_baseline("port", str(tmp_path))
    (tmp_path / "partial" / "models").mkdir(parents=True)
    (tmp_path / "partial" / "models" / "hybrid_cnn_snn.py").write_text("")
    with pytest.raises(BaselineError, match=r"partial: not a checkout of uzh-rpg/hybrid_ann_snn \(missing "
                                            r"models/neurons.py, torch_utils/network_initialization.py, configs/"):
        check_baseline("official", str(tmp_path / "partial"))


def test_benchmark_checks_the_official_repo_before_compiling(tmp_path, experiment_script):
    script = experiment_script("benchmark")
    cfg = script.BenchmarkConfig(stages=("hybrid",), ceiling=False, streaming=False, data=False, torch_python="python",
                                 torch_baseline="official", official_repo=str(tmp_path / "missing"),
                                 output=str(tmp_path / "b.json"))
    with pytest.raises(ConfigError, match="missing: not a checkout of uzh-rpg/hybrid_ann_snn"):
        script.run(cfg, log=lambda line: pytest.fail(f"measured before checking: {line}"))
    without_python = dataclasses.replace(cfg, torch_python=None)
    with pytest.raises(ConfigError, match="add --torch-python"):
        script.run(without_python, log=lambda line: pytest.fail(f"measured before checking: {line}"))
    assert not (tmp_path / "b.json").exists()


def test_server_gets_the_official_baseline_and_reports_its_own_error_in_one_line(tmp_path):
    from hybridjax.bench.baselines import BaselineError
    from hybridjax.bench.versus_torch import TorchStepServer

    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TORCH_SERVER)
    fake.chmod(0o755)
    checkout = _fake_official_checkout(tmp_path / "hybrid_ann_snn")
    server = TorchStepServer(str(fake), resolution=64, batch_size=2, num_steps=100, threads=2, baseline="official",
                             official_repo=str(checkout))
    args = server.info["args"]
    server.close()
    assert [args[args.index(f) + 1] for f in ("--baseline", "--official-repo", "--num-steps")] == \
        ["official", str(checkout.resolve()), "100"]

    refusing = tmp_path / "refusing_python"  # a baseline that stops on a user error (run_cli: one line, exit 2)
    refusing.write_text("#!/bin/sh\necho 'some warning' >&2\necho 'error: --official-repo X: cannot import "
                        "the official model (No module named spikingjelly)' >&2\nexit 2\n")
    refusing.chmod(0o755)
    with pytest.raises(BaselineError) as error:
        TorchStepServer(str(refusing), resolution=64, batch_size=2, num_steps=10, baseline="official",
                        official_repo=str(checkout))
    assert str(error.value) == (f"--torch-python {refusing}: --official-repo X: cannot import the official model "
                                "(No module named spikingjelly)")
