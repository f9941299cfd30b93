"""hybridjax's hybrid training step against the PyTorch baseline, alternated step by step on one machine.

The PyTorch re-implementation of the official step (``benchmarks/torch_baseline.py``, outside the package;
float64 parity with the golden files) runs in its own process (``experiments/benchmark_torch.py --serve``),
so that the two thread pools never share a process, and both sides keep their compiled step / model alive.
The comparison then alternates: one hybridjax step, one PyTorch step, ``rounds`` times. On a machine whose
speed drifts (a shared VM) two separate runs minutes apart can differ by 30%; alternating exposes both to
the same conditions, and the per-round ratio is reported next to the medians.

Two baselines (``baseline``): ``"port"``, the re-implementation above, and ``"official"``, the official code
itself (``benchmarks/official_baseline.py``: the official ``Hybrid_CNN_SNN`` imported at run time from a
checkout of uzh-rpg/hybrid_ann_snn given as ``official_repo``, in the official training loop's step).
"""
from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import time

import jax

from hybridjax.bench.baselines import BaselineError, check_baseline
from hybridjax.bench.training import benchmark_state, synthetic_batch
from hybridjax.cli import USAGE_ERROR
from hybridjax.models import ModelConfig
from hybridjax.train.stages import stage

REPO = pathlib.Path(__file__).resolve().parents[2]
class TorchStepServer:
    """A PyTorch baseline process that times one hybrid step per request (see ``serve_timed_steps``)."""

    def __init__(self, python: str, *, resolution: int, batch_size: int, num_steps: int,
                 threads: int | None = None, baseline: str = "port", official_repo: str | None = None):
        check_baseline(baseline, official_repo)
        args = [python, str(REPO / "experiments" / "benchmark_torch.py"), "--serve", "--resolution", str(resolution),
                "--batch-size", str(batch_size), "--num-steps", str(num_steps), "--baseline", baseline]
        if threads is not None:
            args += ["--threads", str(threads)]
        if official_repo is not None:
            args += ["--official-repo", str(pathlib.Path(official_repo).resolve())]
        self.python = python
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            errors = self.process.stderr.read()
            if self.process.returncode == USAGE_ERROR:  # the baseline's own one-line "error: ..." (run_cli)
                message = errors.strip().splitlines()[-1].removeprefix("error: ") if errors.strip() else "exit 2"
                raise BaselineError(f"--torch-python {self.python}: {message}")
            raise RuntimeError(f"--torch-python {self.python}: the PyTorch baseline exited "
                               f"(exit {self.process.returncode}); does that interpreter have torch and hybridjax "
                               f"installed?\n{errors[-2000:]}")
        return json.loads(line)

    def step(self) -> dict:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def compare_with_torch(cfg: ModelConfig, *, torch_python: str, resolution: int, batch_size: int,
                       num_steps: int, rounds: int = 10, threads: int | None = None, baseline: str = "port",
                       official_repo: str | None = None) -> dict:
    """Alternates ``rounds`` hybrid training steps of hybridjax and of the PyTorch baseline at the same shape.

    Returns per-side ``{"median_wall_s", "min_wall_s", "median_cpu_s", "wall_s"}``, ``speedup`` (PyTorch median
    / hybridjax median), ``speedup_per_round`` (median of the rounds' ratios), the baseline and the PyTorch
    version/threads.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    check_baseline(baseline, official_repo)  # before the compilation, which takes minutes for long windows
    state = benchmark_state("hybrid", cfg, resolution=resolution)
    batch = synthetic_batch("hybrid", cfg, resolution=resolution, batch_size=batch_size, num_steps=num_steps)
    rng = jax.random.key(1)
    step = jax.jit(stage("hybrid").train_step, donate_argnums=0)
    state, metrics = step(state, batch, rng)  # compile + warm-up
    jax.block_until_ready(metrics)
    server = TorchStepServer(torch_python, resolution=resolution, batch_size=batch_size, num_steps=num_steps,
                             threads=threads, baseline=baseline, official_repo=official_repo)
    ours, theirs = {"wall_s": [], "cpu_s": []}, {"wall_s": [], "cpu_s": []}
    try:
        for _ in range(rounds):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            state, metrics = step(state, batch, rng)
            jax.block_until_ready(metrics)
            ours["cpu_s"].append(time.process_time() - cpu0)
            ours["wall_s"].append(time.perf_counter() - wall0)
            reply = server.step()
            theirs["wall_s"].append(reply["wall_s"])
            theirs["cpu_s"].append(reply["cpu_s"])
    finally:
        server.close()

    def summary(side):
        return {"median_wall_s": statistics.median(side["wall_s"]), "min_wall_s": min(side["wall_s"]),
                "median_cpu_s": statistics.median(side["cpu_s"]), **side}

    result = {"hybridjax": summary(ours), "torch": summary(theirs), "rounds": rounds, "baseline": baseline,
              "torch_version": server.info["torch_version"], "torch_threads": server.info["num_threads"],
              "resolution": resolution, "batch_size": batch_size, "num_steps": num_steps}
    result["speedup"] = result["torch"]["median_wall_s"] / result["hybridjax"]["median_wall_s"]
    result["speedup_per_round"] = statistics.median(t / o for t, o in zip(theirs["wall_s"], ours["wall_s"]))
    return result


__all__ = ["TorchStepServer", "compare_with_torch"]
