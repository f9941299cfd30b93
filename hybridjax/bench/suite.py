"""The accelerator check in one command: ceilings, the paper hybrid step in both precisions, memory, streaming.

    python experiments/benchmark.py --suite gpu --output gpu_suite.json     # a GPU session (about 8 minutes)
    python experiments/benchmark.py --suite tiny --output tiny_suite.json   # the same items, tiny, on a CPU
    python -m hybridjax.bench.suite gpu gpu_suite.json                      # the same without tyro
    bash experiments/gpu_suite.sh                                            # what a GPU session runs (README)

A suite (:data:`SUITES`) writes the JSON after every item, so that a run cut short keeps what it measured.
Order: ceilings, streaming, then the training cases (the long compilations last). What is measured:

* **Ceilings**: a ``size^3`` matrix product and a 3x3 ``C -> C`` convolution, each with float32 and with
  bfloat16 operands (float32 results), timed in the same run: the achieved FLOP/s the training steps are
  compared with.
* **Training steps** (:class:`TrainingCase`): the hybrid training step (ANN frozen, the official loss, Adam)
  of a model preset at a resolution, batch and window length, in a precision. The ``gpu`` suite runs the
  paper widths at 256x256, batch 2 (the paper's hybrid batch): 10 ms bins (``paper``, 10 steps) and 1 ms
  steps (``paper_1ms``, 100 steps), each in float32 and bfloat16. Each case runs in its own process
  (``Suite.isolate``), so the device's ``peak_bytes_in_use`` is that case's peak; XLA's compiled buffer
  assignment (``memory_analysis``) is reported beside it. FLOP/s = 2 x the dense MACs of the step's jaxpr
  (forward, backward and update; scans multiplied out) / median wall time, and that as a fraction of the
  convolution ceiling of the same operand type.
* **Streaming** (:class:`StreamingCase`): the batch-1 runtime (:class:`hybridjax.runtime.StreamingPoseEstimator`)
  on a synthetic stream: wall time per SNN step and per ANN initialisation.

``Suite.budget_s`` bounds the whole run: an item that would start after the budget is recorded as skipped
(with the reason), and an isolated case is stopped when the budget runs out.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hybridjax.bench.harness import conv_ceiling, device_description, device_memory_stats, matmul_ceiling
from hybridjax.bench.streaming import streaming_latency
from hybridjax.bench.training import benchmark_train_step
from hybridjax.models import ModelConfig
from hybridjax.runtime import StreamingConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """One hybrid training step to time."""

    name: str  # label in the table and the JSON
    preset: str  # ModelConfig preset (paper: 10 ms bins; paper_1ms: 1 ms steps in rematerialised chunks)
    compute_dtype: str  # ModelConfig.compute_dtype: float32 or bfloat16
    resolution: int  # square input side
    batch_size: int  # training batch
    num_steps: int  # SNN steps per window
    repeats: int = 3  # timed steps after one warm-up step (median reported)
    remat: bool | None = None  # override the preset's rematerialisation (None: the preset's)
    time_chunk: int | None = None  # override the preset's layer-mode chunk (None: the preset's)

    def model(self) -> ModelConfig:
        overrides = {k: getattr(self, k) for k in ("remat", "time_chunk") if getattr(self, k) is not None}
        return dataclasses.replace(ModelConfig.preset(self.preset), compute_dtype=self.compute_dtype, **overrides)


@dataclasses.dataclass(frozen=True)
class StreamingCase:
    """One batch-1 streaming measurement."""

    name: str  # label
    preset: str  # ModelConfig preset of the streamed hybrid
    resolution: int  # crop side the runtime reads from the sensor
    downsample: int  # sum-pooling of the crop (the network's grid is resolution / downsample)
    duration_ms: int = 300  # stream length (the first 100 ms fill the ANN buffer)


@dataclasses.dataclass(frozen=True)
class Suite:
    """What one ``--suite`` run measures."""

    name: str
    matmul_size: int  # side of the ceiling matrix product
    conv_shape: tuple[int, int, int]  # (batch, map side, channels) of the 3x3 ceiling convolution
    ceiling_repeats: int  # timed calls per ceiling
    trainings: tuple[TrainingCase, ...]
    streams: tuple[StreamingCase, ...]
    budget_s: float  # wall-clock budget of the whole suite (items after it are skipped, named in the JSON)
    isolate: bool  # each training case in its own process (its own device memory peak)


def _paper_cases(resolution: int, batch_size: int) -> tuple[TrainingCase, ...]:
    return tuple(TrainingCase(f"{window}_{dtype}", preset, dtype, resolution, batch_size, steps)
                 for window, preset, steps, dtypes in (("10ms", "paper", 10, ("float32", "bfloat16")),
                                                       ("1ms", "paper_1ms", 100, ("bfloat16", "float32")))
                 for dtype in dtypes)


SUITES: dict[str, Suite] = {
    # One H200 (or any accelerator): the paper's widths at the full DHP19 crop.
    "gpu": Suite(name="gpu", matmul_size=8192, conv_shape=(32, 64, 256), ceiling_repeats=10,
                 trainings=_paper_cases(256, 2),
                 streams=(StreamingCase("tiny_64x64", "tiny", 256, 4),
                          StreamingCase("paper_1ms_256x256", "paper_1ms", 256, 1)),
                 budget_s=450.0, isolate=True),
    # The same kinds of items at toy sizes (the test suite runs it on CPU): one case per precision and
    # window kind, in this process.
    "tiny": Suite(name="tiny", matmul_size=128, conv_shape=(1, 16, 16), ceiling_repeats=2,
                  trainings=(TrainingCase("10ms_float32", "tiny_10ms", "float32", 32, 1, 2, repeats=1),
                             TrainingCase("1ms_bfloat16", "tiny", "bfloat16", 32, 1, 6, repeats=1, remat=True,
                                          time_chunk=3)),
                  streams=(StreamingCase("tiny_32x32", "tiny", 32, 1, duration_ms=110),),
                  budget_s=600.0, isolate=False),
}


def training_record(case: TrainingCase) -> dict:
    """Measures one case in this process: the :class:`~hybridjax.bench.training.StepBenchmark` record plus the
    device allocator's statistics after it ran."""

    model = case.model()
    bench = benchmark_train_step("hybrid", model, resolution=case.resolution, batch_size=case.batch_size,
                                 num_steps=case.num_steps, repeats=case.repeats)
    record = {"case": dataclasses.asdict(case), **bench.to_dict(),
              "snn_mode": model.snn_mode, "remat": model.remat, "time_chunk": model.time_chunk}
    stats = device_memory_stats()
    record["device_peak_bytes"] = None if stats is None else stats.get("peak_bytes_in_use")
    return record


def _training_in_subprocess(case: TrainingCase, timeout_s: float) -> dict:
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    try:
        done = subprocess.run([sys.executable, "-m", "hybridjax.bench.suite", "--case",
                               json.dumps(dataclasses.asdict(case))],
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"case": dataclasses.asdict(case), "skipped": f"stopped at the suite's budget ({timeout_s:.0f} s left)"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-8:]
        return {"case": dataclasses.asdict(case), "error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ceilings(suite: Suite) -> dict:
    batch, size, channels = suite.conv_shape
    out = {}
    for dtype_name, dtype in DTYPES.items():
        out[f"matmul_{dtype_name}"] = matmul_ceiling(size=suite.matmul_size, dtype=dtype,
                                                     repeats=suite.ceiling_repeats).to_dict()
        out[f"conv_{dtype_name}"] = conv_ceiling(batch=batch, size=size, channels=channels,
                                                 repeats=suite.ceiling_repeats, dtype=dtype).to_dict()
    return out


def _with_ceiling_fractions(record: dict, ceilings: dict) -> dict:
    rate = record.get("jaxpr_gflops_per_s")
    if rate:
        dtype = record["case"]["compute_dtype"]
        for kind in ("conv", "matmul"):
            record[f"fraction_of_{kind}_ceiling"] = rate / ceilings[f"{kind}_{dtype}"]["gflops_per_s"]
    return record


def streaming_record(case: StreamingCase) -> dict:
    """One batch-1 streaming replay (:func:`hybridjax.bench.streaming.streaming_latency`, one step per call)."""

    stats = streaming_latency(ModelConfig.preset(case.preset), resolution=case.resolution,
                              duration_ms=case.duration_ms, downsample=case.downsample,
                              streaming=StreamingConfig(max_steps_per_call=1))
    return {"case": dataclasses.asdict(case), **stats}


def run_suite(suite: Suite, output: str | pathlib.Path, log: Callable[[str], None] = print) -> dict:
    """Runs every item of ``suite`` within its budget; writes (and returns) the JSON record."""
    # Device memory is allocated as needed, not 75% up front, so that the isolated cases' processes get theirs
    # (takes effect when no device was used before in this process).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    start = time.perf_counter()
    output = pathlib.Path(output)
    result = {"suite": suite.name, "device": device_description(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
              time.gmtime()), "loadavg_start": os.getloadavg()[0], "budget_s": suite.budget_s,
              "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
              "trainings": [], "streaming": [], "skipped": []}

    def save():
        result["elapsed_s"] = time.perf_counter() - start
        output.write_text(json.dumps(result, indent=1, default=str))

    def left() -> float:
        return suite.budget_s - (time.perf_counter() - start)

    log(f"suite {suite.name} on {result['device']['backend']} ({result['device']['device_kind']}), "
        f"budget {suite.budget_s:.0f} s")
    result["ceilings"] = ceilings = _ceilings(suite)
    log(ceiling_line(ceilings))
    save()
    for case in suite.streams:  # cheap: before the long training compilations
        if left() <= 0:
            result["skipped"].append({"case": case.name, "reason": "suite budget used up"})
            continue
        record = streaming_record(case)
        result["streaming"].append(record)
        log(streaming_line(record))
        save()
    for case in suite.trainings:
        if left() <= 0:
            result["skipped"].append({"case": case.name, "reason": "suite budget used up"})
            continue
        record = _training_in_subprocess(case, left()) if suite.isolate else training_record(case)
        result["trainings"].append(_with_ceiling_fractions(record, ceilings))
        log(training_line(record))
        save()
    save()
    log(f"suite {suite.name}: {result['elapsed_s']:.0f} s, {len(result['skipped'])} items skipped; wrote {output}")
    return result


def ceiling_line(ceilings: dict) -> str:
    """``ceilings: matmul float32 ... GFLOP/s, bfloat16 ...; conv ...``"""
    parts = []
    for kind in ("matmul", "conv"):
        rates = ", ".join(f"{d} {ceilings[f'{kind}_{d}']['gflops_per_s']:.0f}" for d in DTYPES)
        parts.append(f"{kind} {rates}")
    return "ceilings (GFLOP/s): " + "; ".join(parts)


def _gib(value) -> str:
    return "?" if value is None else f"{value / 2**30:.2f}"


def training_line(record: dict) -> str:
    """One table row of a training case (or why it has no numbers)."""
    case = record["case"]
    head = (f"train {case['name']:14s} {case['preset']:9s} {case['resolution']}x{case['resolution']} "
            f"b{case['batch_size']} T{case['num_steps']}")
    if "skipped" in record or "error" in record:
        return f"{head}  {record.get('skipped') or record.get('error')}"
    text = (f"{head}  compile {record['compile_s']:.1f} s  step {record['median_wall_s']:.4f} s  "
            f"{record['jaxpr_gflops_per_s']:.0f} GFLOP/s")
    if "fraction_of_conv_ceiling" in record:
        text += f" = {100 * record['fraction_of_conv_ceiling']:.0f}% of the {case['compute_dtype']} conv ceiling"
    return text + (f"  peak {_gib(record.get('device_peak_bytes'))} GiB device / "
                   f"{_gib(record['peak_bytes'])} GiB XLA")


def streaming_line(record: dict) -> str:
    """One row of a streaming case."""
    case = record["case"]
    return (f"stream {case['name']:18s} step {record['step_latency_median_ms']:.3f} ms median "
            f"(p90 {record['step_latency_p90_ms']:.3f}), ANN init {record['ann_init_latency_median_ms']:.1f} ms, "
            f"real-time factor {record['real_time_factor']:.2f}")


USAGE = "python -m hybridjax.bench.suite SUITE OUTPUT.json  (SUITE: " + ", ".join(SUITES) + ")"

if __name__ == "__main__":
    # `python -m hybridjax.bench.suite gpu out.json`: experiments/benchmark.py --suite without tyro (the GPU
    # image has jax, flax, optax and orbax but no tyro). `--case JSON`: one isolated training case (run_suite's
    # subprocess), its record as JSON on the last line.
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(training_record(TrainingCase(**json.loads(sys.argv[2]))), default=str))
    elif len(sys.argv) == 3 and sys.argv[1] in SUITES:
        run_suite(SUITES[sys.argv[1]], sys.argv[2])
    else:
        sys.exit(f"usage: {USAGE}")
