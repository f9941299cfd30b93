"""Time the official hybrid training step, or its PyTorch re-implementation (the baselines of benchmark.py).

    python experiments/benchmark_torch.py                              # the port: paper model, 64x64, b2, 10 bins
    python experiments/benchmark_torch.py --resolution 128 --batch-size 1 --threads 2
    python experiments/benchmark_torch.py --baseline official --official-repo PATH --threads 2   # the original
    python experiments/benchmark_torch.py --baseline official --official-repo PATH --check-port  # same function?

Needs torch (``pip install -e ".[torch]"``). The model is ``benchmarks/torch_baseline.py`` (outside the
importable package, so hybridjax never imports torch; its parity with
the official code is tested against the float64 golden files); the step is forward over the window, the
official 0.95 / 0.05 hybrid loss, backward and an Adam update, in float32 on the CPU. Compare its numbers with
``experiments/benchmark.py --stages hybrid`` run on the same machine at the same load. Writes a JSON file
(``--output``) and prints one line.

``--baseline official`` times the official code itself (``benchmarks/official_baseline.py``: the official
``Hybrid_CNN_SNN`` and initialisation imported at run time from ``--official-repo``, a checkout of
uzh-rpg/hybrid_ann_snn; needs ``spikingjelly==0.0.0.0.14``) in the official training loop's step.
``--check-port`` instead computes loss and gradients of the official step and of the port from the same
weights and batch (float32 and float64) and prints the largest differences.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import tyro

from hybridjax.bench.baselines import check_baseline
from hybridjax.errors import ConfigError

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
    baseline: str = "port"  # "port" (benchmarks/torch_baseline.py) or "official" (the official code itself)
    official_repo: str | None = None  # --baseline official: a checkout of github.com/uzh-rpg/hybrid_ann_snn
    check_port: bool = False  # with --baseline official: compare the official step's loss and gradients with the
    # port's (same weights and batch) instead of timing
    serve: bool = False  # keep the model alive and time one step per "step" line on stdin (JSON reply per line);
    # used by experiments/benchmark.py --torch-python to alternate PyTorch and hybridjax steps


def warm_step(cfg: TorchBenchmarkConfig):
    """The chosen baseline's ``timed_step() -> (wall_s, cpu_s, loss)``, built and warmed up."""
    if cfg.baseline == "official":
        from official_baseline import warm_official_step

        return warm_official_step(cfg.official_repo, cfg.resolution, cfg.batch_size, cfg.num_steps, cfg.threads)
    from torch_baseline import warm_hybrid_step

    return warm_hybrid_step(cfg.resolution, cfg.batch_size, cfg.num_steps, cfg.threads)


def run(cfg: TorchBenchmarkConfig, log=print) -> dict:
    from torch_baseline import time_steps

    if cfg.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {cfg.repeats}")
    result = time_steps(warm_step(cfg), cfg.repeats)
    result.update(baseline=cfg.baseline, resolution=cfg.resolution, batch_size=cfg.batch_size,
                  num_steps=cfg.num_steps, config=dataclasses.asdict(cfg),
                  time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    label = "official hybrid train step" if cfg.baseline == "official" else "hybrid train step"
    log(f"torch {result['torch_version']} {label} {cfg.resolution}x{cfg.resolution} "
        f"b{cfg.batch_size} T{cfg.num_steps}: median {result['median_wall_s']:.3f} s, min {result['min_wall_s']:.3f} s "
        f"(cpu {result['median_cpu_s']:.2f} s, {result['num_threads']} threads, load {result['loadavg'][0]:.1f})")
    pathlib.Path(cfg.output).write_text(json.dumps(result, indent=1))
    log(f"wrote {cfg.output}")
    return result


def check_port(cfg: TorchBenchmarkConfig, log=print) -> dict:
    """The official step against the port at the configured shape, in float32 and float64."""
    import torch
    from official_baseline import check_against_port

    result = {}
    for dtype in (torch.float32, torch.float64):
        check = result[str(dtype).removeprefix("torch.")] = check_against_port(
            cfg.official_repo, cfg.resolution, cfg.batch_size, cfg.num_steps, dtype=dtype)
        log(f"{check['dtype']} {cfg.resolution}x{cfg.resolution} b{cfg.batch_size} T{cfg.num_steps}: loss official "
            f"{check['official']['loss']:.9g}, port {check['port']['loss']:.9g} (largest relative difference of "
            f"the loss terms {check['max_loss_rel_diff']:.1e}); gradients of {check['trained_tensors']} tensors: "
            f"largest relative difference {check['max_grad_rel_diff']:.1e} ({check['max_grad_rel_diff_param']})")
    pathlib.Path(cfg.output).write_text(json.dumps(result, indent=1))
    log(f"wrote {cfg.output}")
    return result


def main() -> None:
    config = tyro.cli(TorchBenchmarkConfig)
    check_baseline(config.baseline, config.official_repo, flag="--baseline")
    if config.check_port:
        if config.baseline != "official":
            raise ConfigError("--check-port compares the official step with the port: add --baseline official")
        check_port(config)
    elif config.serve:
        from torch_baseline import serve_timed_steps

        serve_timed_steps(warm_step(config))
    else:
        run(config)


if __name__ == "__main__":
    from hybridjax.cli import run_cli

    run_cli(main)
