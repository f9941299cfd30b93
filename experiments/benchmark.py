"""Speed and memory of hybridjax on this machine: training steps, FLOP/s vs a conv ceiling, memory, streaming.

    python experiments/benchmark.py                                  # paper model, 64x64, batch 2, 10 bins
    python experiments/benchmark.py --resolution 128 --batch-size 1 --stages hybrid
    python experiments/benchmark.py --preset paper_1ms --resolution 256 --batch-size 1 --num-steps 100 \
        --stages hybrid --snn-mode step --remat True --repeats 0      # memory only (compile, no run)
    python experiments/benchmark.py --sweep-steps 10 25 50 100 --sweep-variants layer step_remat
    python experiments/benchmark.py --isolate                         # one subprocess per stage (peak RSS each)
    python experiments/benchmark.py --stages --torch-python /path/to/python-with-torch  # hybrid step vs PyTorch
    python experiments/benchmark.py --stages --torch-python PY --torch-baseline official \
        --official-repo /path/to/hybrid_ann_snn --torch-threads 2          # vs the official code itself
    python experiments/benchmark.py --suite gpu --output gpu_suite.json  # the whole accelerator check (~8 min)

Writes a JSON file (``--output``) and prints a table. Runs unchanged on CPU, GPU and TPU (memory from XLA's
buffer assignment everywhere; peak RSS of the process as well).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import tyro

from hybridjax.bench import conv_ceiling, device_description, peak_rss_mb
from hybridjax.bench.baselines import check_baseline
from hybridjax.bench.long_window import sweep
from hybridjax.bench.streaming import data_throughput, streaming_latency
from hybridjax.bench.suite import SUITES, run_suite
from hybridjax.bench.training import benchmark_train_step
from hybridjax.bench.versus_torch import compare_with_torch
from hybridjax.cli import run_cli
from hybridjax.errors import ConfigError
from hybridjax.models import ModelConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure."""

    preset: str = "paper"  # model preset: paper (10 ms bins), paper_1ms, tiny, tiny_10ms
    resolution: int = 64  # square input size of the training steps (256 = the full DHP19 crop)
    batch_size: int = 2  # training batch
    num_steps: int = 10  # SNN steps per training window
    step_ms: float | None = None  # SNN step length in ms (None: the preset's; 10 = official bins, 1 = 1 ms steps)
    snn_mode: str | None = None  # "layer" or "step" (None: the ModelConfig default)
    remat: bool | None = None  # rematerialise scanned steps / chunks (None: the preset's)
    time_chunk: int | None = None  # layer mode: steps per (rematerialised) chunk
    compute_dtype: str | None = None  # "float32" or "bfloat16" (mixed precision; None: the preset's, float32)
    stages: tuple[str, ...] = ("ann", "snn", "hybrid")  # training stages to time
    repeats: int = 3  # timed runs after the warm-up (median reported); 0 = compile and memory only
    ceiling: bool = True  # time a large conv (3x3 256->256, 64x64, batch 8) as this machine's FLOP/s ceiling
    streaming: bool = True  # batch-1 streaming latency per SNN step and per ANN initialisation
    streaming_preset: str | None = "tiny"  # model preset for streaming (None: same as preset)
    streaming_resolution: int = 256  # crop size the streaming runtime works on
    streaming_downsample: int = 4  # streaming input pooling (4 = the tiny training preset: a 64 x 64 grid)
    streaming_ms: int = 300  # stream length (the first 100 ms fill the ANN buffer)
    streaming_chunk_ms: int = 1  # milliseconds of events per push (1: one step per push; more: multi-step calls)
    streaming_tight_loop_steps: int = 200  # also time the jitted step alone (CPU ms per step, min of 10 trials)
    data: bool = True  # data pipeline throughput next to the training step's consumption
    data_dir: str = str(REPO.parent / "shared" / "fixtures" / "dhp19_mini")  # DHP19 folder for the data test
    sweep_steps: tuple[int, ...] = ()  # long-window sweep: hybrid step memory at these window lengths
    sweep_variants: tuple[str, ...] = ("layer", "step_remat", "layer_chunk10_remat")  # see bench.long_window
    sweep_timed_steps: tuple[int, ...] = ()  # window lengths of the sweep that are also timed (slow)
    isolate: bool = False  # run every stage in its own subprocess (the peak RSS is then per configuration)
    # an interpreter with torch (and hybridjax) installed: alternate hybridjax's hybrid step with the PyTorch
    # re-implementation of the official one (experiments/benchmark_torch.py --serve) at the same shape
    torch_python: str | None = None
    torch_rounds: int = 10  # alternated step pairs of that comparison
    # what PyTorch runs: "port" (benchmarks/torch_baseline.py) or "official" (the official code's
    # Hybrid_CNN_SNN and training step, imported at run time from --official-repo; needs spikingjelly 0.0.0.0.14)
    torch_baseline: str = "port"
    official_repo: str | None = None  # a checkout of https://github.com/uzh-rpg/hybrid_ann_snn
    torch_threads: int | None = None  # PyTorch intra-op threads (None: torch's default)
    output: str = "benchmark.json"  # JSON result path
    # run a fixed suite instead of the options above (hybridjax.bench.suite.SUITES): "gpu" = ceilings, the
    # paper hybrid step at 256x256 for 10 ms and 1 ms windows in float32 and bfloat16, memory, streaming;
    # "tiny" = the same items at toy sizes (CPU, tested)
    suite: str | None = None


MODEL_OVERRIDES = ("step_ms", "snn_mode", "remat", "time_chunk", "compute_dtype")  # BenchmarkConfig -> ModelConfig


def model_config(cfg: BenchmarkConfig, preset: str | None = None):
    model = ModelConfig.preset(preset or cfg.preset)
    overrides = {k: getattr(cfg, k) for k in MODEL_OVERRIDES if getattr(cfg, k) is not None}
    return dataclasses.replace(model, **overrides)


def _stage_in_subprocess(cfg: BenchmarkConfig, stage: str) -> dict:
    out = pathlib.Path(cfg.output).with_suffix(f".{stage}.json")
    args = [sys.executable, str(pathlib.Path(__file__).resolve()), "--preset", cfg.preset, "--resolution",
            str(cfg.resolution), "--batch-size", str(cfg.batch_size), "--num-steps", str(cfg.num_steps),
            "--stages", stage, "--repeats", str(cfg.repeats), "--no-ceiling", "--no-streaming", "--no-data",
            "--output", str(out)]
    for name in MODEL_OVERRIDES:
        if getattr(cfg, name) is not None:
            args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    subprocess.run(args, check=True)
    return json.loads(out.read_text())["train_steps"][0]


def run(cfg: BenchmarkConfig, log=print) -> dict:
    if cfg.suite is not None:
        if cfg.suite not in SUITES:
            raise SystemExit(f"--suite {cfg.suite!r}: choose one of {sorted(SUITES)}")
        return run_suite(SUITES[cfg.suite], cfg.output, log=log)

    if cfg.torch_python:
        check_baseline(cfg.torch_baseline, cfg.official_repo)  # a bad path fails now, not after the compilations
    elif cfg.torch_baseline != "port" or cfg.official_repo is not None:
        raise ConfigError("--torch-baseline / --official-repo choose what --torch-python runs: add --torch-python")
    result = {"config": dataclasses.asdict(cfg), "device": device_description(), "time_utc": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg()[0]}
    model = model_config(cfg)
    result["model_config"] = dataclasses.asdict(model)
    if cfg.ceiling:
        ceiling = conv_ceiling()
        result["ceiling"] = ceiling.to_dict()
        log(f"conv ceiling: {ceiling.gflops_per_s:.1f} GFLOP/s ({ceiling.median_wall_s * 1e3:.0f} ms, "
            f"load {ceiling.loadavg:.1f})")
    result["train_steps"] = []
    for stage in cfg.stages:
        if cfg.isolate:
            record = _stage_in_subprocess(cfg, stage)
        else:
            record = benchmark_train_step(stage, model, resolution=cfg.resolution, batch_size=cfg.batch_size,
                                          num_steps=cfg.num_steps, repeats=cfg.repeats).to_dict()
        if "ceiling" in result and record["median_cpu_s"]:
            record["cpu_efficiency_vs_ceiling"] = cpu_efficiency(record, result["ceiling"])
        result["train_steps"].append(record)
        log(_row(record, result.get("ceiling")))
    if cfg.torch_python:
        versus = compare_with_torch(model, torch_python=cfg.torch_python, resolution=cfg.resolution,
                                    batch_size=cfg.batch_size, num_steps=cfg.num_steps, rounds=cfg.torch_rounds,
                                    threads=cfg.torch_threads, baseline=cfg.torch_baseline,
                                    official_repo=cfg.official_repo)
        result["versus_torch"] = versus
        what = "the official code" if cfg.torch_baseline == "official" else "the port"
        log(f"alternating {versus['rounds']} hybrid steps with {what} on PyTorch {versus['torch_version']} "
            f"({versus['torch_threads']} threads): hybridjax {versus['hybridjax']['median_wall_s']:.3f} s, "
            f"PyTorch {versus['torch']['median_wall_s']:.3f} s median -> {versus['speedup']:.2f}x "
            f"(median per-round ratio {versus['speedup_per_round']:.2f}x)")
    if cfg.sweep_steps:
        result["long_window"] = sweep(model, resolution=cfg.resolution, batch_size=cfg.batch_size,
                                      steps=cfg.sweep_steps, variants=cfg.sweep_variants,
                                      repeats=max(cfg.repeats, 1), timed_steps=cfg.sweep_timed_steps, log=log)
    if cfg.streaming:
        stream_model = model_config(cfg, cfg.streaming_preset)
        stream = streaming_latency(stream_model, resolution=cfg.streaming_resolution, duration_ms=cfg.streaming_ms,
                                   downsample=cfg.streaming_downsample, chunk_ms=cfg.streaming_chunk_ms,
                                   tight_loop_steps=cfg.streaming_tight_loop_steps)
        result["streaming"] = stream
        tight = (f", jitted step {stream['tight_loop_cpu_ms_per_step']:.2f} CPU ms "
                 f"({stream['tight_loop_scan_cpu_ms_per_step']:.2f} per step in scans of "
                 f"{stream['tight_loop_scan_length']})" if cfg.streaming_tight_loop_steps else "")
        log(f"streaming ({cfg.streaming_preset or cfg.preset}, {cfg.streaming_resolution}px / "
            f"{cfg.streaming_downsample}): step {stream['step_latency_median_ms']:.2f} ms median "
            f"(p90 {stream['step_latency_p90_ms']:.2f}), ANN init {stream['ann_init_latency_median_ms']:.1f} ms, "
            f"real-time factor {stream['real_time_factor']:.2f} at {stream_model.step_ms:g} ms steps, "
            f"{stream['cpu_ms_per_step']:.2f} CPU ms per pose{tight}")
    if cfg.data:
        data = data_throughput(cfg.data_dir, batch_size=cfg.batch_size)
        result["data"] = data
        consumed = [r["windows_per_s"] for r in result["train_steps"] if r["stage"] != "ann" and r["windows_per_s"]]
        log(f"data pipeline: {data['windows_per_s']:.1f} windows/s ({data['windows']} windows, "
            f"{data['num_workers']} workers) vs training consumption "
            + (", ".join(f"{c:.2f}" for c in consumed) or "n/a") + " windows/s")
    result["peak_rss_mb"] = peak_rss_mb()
    pathlib.Path(cfg.output).write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {cfg.output}")
    return result


def cpu_efficiency(record: dict, ceiling: dict) -> float:
    """FLOPs per CPU-second of the step / those of the ceiling conv: comparable across machine loads.

    On a shared machine the wall time depends on what else runs; the CPU time the process got is much less
    sensitive, so this ratio (measured in the same run) is the load-independent fraction of the ceiling.
    """
    return (record["jaxpr_flops"] / record["median_cpu_s"]) / (ceiling["flops"] / ceiling["median_cpu_s"])


def _row(r: dict, ceiling: dict | None) -> str:
    peak = r.get("peak_bytes")
    text = (f"{r['name']:40s} compile {r['compile_s']:6.1f} s  mem {'?' if peak is None else f'{peak / 2**30:.2f}'} GiB"
            f"  {r['jaxpr_flops'] / 1e9:7.1f} GFLOP")
    if r["median_wall_s"] is not None:
        text += (f"  step {r['median_wall_s']:.3f} s (cpu {r['median_cpu_s']:.2f} s)  "
                 f"{r['jaxpr_gflops_per_s']:.1f} GFLOP/s")
        if ceiling:
            text += f" = {100 * r['jaxpr_gflops_per_s'] / ceiling['gflops_per_s']:.0f}% of ceiling"
            text += f" ({100 * cpu_efficiency(r, ceiling):.0f}% per CPU-second)"
        text += f"  load {r['loadavg']:.1f}"
    return text


if __name__ == "__main__":
    run_cli(lambda: run(tyro.cli(BenchmarkConfig)))
