"""Time the PyTorch re-implementation of the official hybrid training step (the baseline for benchmark.py).

    python experiments/benchmark_torch.py                              # paper model, 64x64, batch 2, 10 bins
    python experiments/benchmark_torch.py --resolution 128 --batch-size 1 --threads 2

Needs torch (``pip install -e ".[torch]"``). The model is ``benchmarks/torch_baseline.py`` (outside the
importable package, so hybridjax never imports torch; its parity with
the official code is tested against the float64 golden files); the step is forward over the window, the
official 0.95 / 0.05 hybrid loss, backward and an Adam update, in float32 on the CPU. Compare its numbers with
``experiments/benchmark.py --stages hybrid`` run on the same machine at the same load. Writes a JSON file
(``--output``) and prints one line.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import tyro

# The PyTorch baseline lives outside the package (benchmarks/), beside this script's parent folder.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))


@dataclasses.dataclass(frozen=True)
class TorchBenchmarkConfig:
    """What to time."""

    resolution: int = 64  # square input size (a multiple of 32; 256 = the full DHP19 crop)
    batch_size: int = 2  # training batch (official hybrid stage: 2)
    num_steps: int = 10  # SNN steps per training window (10 bins of the 100 ms window)
    repeats: int = 5  # timed steps after one warm-up step (median and min reported)
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per physical core)
    output: str = "benchmark_torch.json"  # JSON result path
    serve: bool = False  # keep the model alive and time one step per "step" line on stdin (JSON reply per line);
    # used by experiments/benchmark.py --torch-python to alternate PyTorch and hybridjax steps


def run(cfg: TorchBenchmarkConfig, log=print) -> dict:
    from torch_baseline import time_hybrid_step

    result = time_hybrid_step(cfg.resolution, cfg.batch_size, num_steps=cfg.num_steps, repeats=cfg.repeats,
                              threads=cfg.threads)
    result["config"] = dataclasses.asdict(cfg)
    result["time_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log(f"torch {result['torch_version']} hybrid train step {cfg.resolution}x{cfg.resolution} b{cfg.batch_size} "
        f"T{cfg.num_steps}: median {result['median_wall_s']:.3f} s, min {result['min_wall_s']:.3f} s "
        f"(cpu {result['median_cpu_s']:.2f} s, {result['num_threads']} threads, load {result['loadavg'][0]:.1f})")
    pathlib.Path(cfg.output).write_text(json.dumps(result, indent=1))
    log(f"wrote {cfg.output}")
    return result


def main() -> None:
    config = tyro.cli(TorchBenchmarkConfig)
    if config.serve:
        from torch_baseline import serve_hybrid_steps

        serve_hybrid_steps(config.resolution, config.batch_size, config.num_steps, threads=config.threads)
    else:
        run(config)


if __name__ == "__main__":
    from hybridjax.cli import run_cli

    run_cli(main)
