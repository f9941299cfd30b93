#!/usr/bin/env bash
# The accelerator check in one command, from the repository root of a GPU machine (README, "Performance"):
#   bash experiments/gpu_suite.sh            # writes gpu_suite.json, gpu_suite.log, gpu_suite_nvidia_smi.txt to $OUT or .
# Runs hybridjax.bench.suite's "gpu" suite (ceilings, streaming, the paper hybrid step at 256x256 for 10 ms and
# 1 ms windows in float32 and bfloat16, peak memory) inside its 450 s budget. Needs jax (with its GPU plugin),
# flax, optax, orbax-checkpoint and numpy, as the GPU image has them; not tyro (the module is run directly).
set -euo pipefail
out="${OUT:-.}"
# device memory as needed (not 75% up front): each training case runs in its own process beside this one
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv >"$out/gpu_suite_nvidia_smi.txt" 2>&1 || true
python3 -m hybridjax.bench.suite gpu "$out/gpu_suite.json" 2>&1 | tee "$out/gpu_suite.log"
