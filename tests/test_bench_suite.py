"""The accelerator suite (experiments/benchmark.py --suite): its GPU matrix, and its tiny form run on CPU."""
import dataclasses
import json
import subprocess
import sys

import pytest

from hybridjax.bench.suite import SUITES, TrainingCase, run_suite, training_line


def test_gpu_suite_is_the_paper_step_at_256_in_both_precisions_and_window_kinds():
    gpu = SUITES["gpu"]
    cases = {(c.preset, c.num_steps, c.compute_dtype) for c in gpu.trainings}
    assert cases == {(p, t, d) for p, t in (("paper", 10), ("paper_1ms", 100)) for d in ("float32", "bfloat16")}
    assert all(c.resolution == 256 and c.batch_size == 2 for c in gpu.trainings)
    assert gpu.isolate and gpu.budget_s <= 480  # one command inside 8 minutes
    assert {s.preset for s in gpu.streams} >= {"tiny", "paper_1ms"}
    model = TrainingCase("x", "paper_1ms", "bfloat16", 256, 2, 100).model()
    assert (model.compute_dtype, model.snn_mode, model.remat, model.time_chunk) == ("bfloat16", "layer", True, 5)


def test_tiny_suite_measures_every_item_kind_and_writes_the_json(tmp_path):
    # The bf16 1 ms case (chunked, rematerialised layer mode) in its own process, as on the GPU.
    tiny = dataclasses.replace(SUITES["tiny"], trainings=SUITES["tiny"].trainings[1:], isolate=True)
    lines = []
    result = run_suite(tiny, tmp_path / "suite.json", log=lines.append)
    assert json.loads((tmp_path / "suite.json").read_text())["trainings"] == json.loads(
        json.dumps(result["trainings"], default=str))
    batch, size, channels = tiny.conv_shape
    for dtype in ("float32", "bfloat16"):
        assert result["ceilings"][f"matmul_{dtype}"]["flops"] == 2 * tiny.matmul_size ** 3
        assert result["ceilings"][f"conv_{dtype}"]["flops"] == 2 * batch * size * size * channels * channels * 9
    (train,) = result["trainings"]
    assert "error" not in train and "skipped" not in train, train
    assert train["case"]["compute_dtype"] == "bfloat16" and train["num_steps"] == 6
    assert (train["snn_mode"], train["remat"], train["time_chunk"]) == ("layer", True, 3)
    assert train["median_wall_s"] > 0 and train["jaxpr_flops"] > 0 and train["peak_bytes"] > 0
    conv_rate = result["ceilings"]["conv_bfloat16"]["gflops_per_s"]
    assert train["fraction_of_conv_ceiling"] == pytest.approx(train["jaxpr_gflops_per_s"] / conv_rate)
    (stream,) = result["streaming"]
    assert stream["steps"] == 9 and stream["step_latency_median_ms"] > 0  # 100 ms fill the ANN buffer
    assert result["skipped"] == [] and any("of the bfloat16 conv ceiling" in line for line in lines)


def test_items_past_the_budget_are_skipped_and_named(tmp_path):
    out = run_suite(dataclasses.replace(SUITES["tiny"], budget_s=0.0), tmp_path / "s.json", log=lambda _: None)
    assert out["trainings"] == [] and out["streaming"] == []
    assert [s["case"] for s in out["skipped"]] == [c.name for c in SUITES["tiny"].streams + SUITES["tiny"].trainings]


def test_a_failed_case_is_reported_not_raised():
    line = training_line({"case": dataclasses.asdict(SUITES["gpu"].trainings[0]), "error": "exit 1: OOM"})
    assert "10ms_float32" in line and "exit 1: OOM" in line


def test_cli_names_an_unknown_suite():
    done = subprocess.run([sys.executable, "experiments/benchmark.py", "--suite", "nope"], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "--suite 'nope': choose one of ['gpu', 'tiny']" in done.stderr


def test_module_entry_runs_without_tyro_and_names_its_usage():
    # tyro made unimportable: the GPU image has none, and the module entry must not need it
    code = ("import runpy, sys; sys.modules['tyro'] = None; sys.argv = ['suite', 'nope', 'out.json']; "
            "runpy.run_module('hybridjax.bench.suite', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "usage: python -m hybridjax.bench.suite SUITE OUTPUT.json" in done.stderr
