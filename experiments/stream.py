"""Replay a DHP19 recording through the streaming runtime: latency per SNN step / ANN init and MPJPE.

    python experiments/stream.py --recording ../shared/fixtures/dhp19_mini/S13_session1_mov1_events.h5 \
        --camera 3 --workdir runs/hybridjax
    taskset -c 0 python experiments/stream.py --recording ... --preset tiny     # one core, untrained weights

Events are pushed in chunks (``--chunk-events``) as a sensor driver would deliver them; every completed step
(``step_ms`` of the model, 1 ms by default) yields a pose. Steps that start on a 10 ms label slot are scored
against that label (projected with the camera's P matrix, the loaders' convention), giving the MPJPE in
pixels of the 256 x 256 crop. Without ``--workdir`` the weights are random (latency only; the MPJPE is then
meaningless and flagged as such).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import h5py
import jax
import numpy as np
import tyro

from hybridjax.cli import run_cli
from hybridjax.data.dhp19 import load_projection_matrices, project_joints
from hybridjax.models import ModelConfig, init_variables
from hybridjax.runtime import StreamingConfig, StreamingPoseEstimator
from hybridjax.train.config import TrainConfig
from hybridjax.train.loop import restore_stage_state

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class StreamArgs:
    """What to replay and with which model."""

    recording: pathlib.Path  # S*_session*_mov*_events.h5 (the labels file beside it is used if present)
    camera: int = 3  # camera channel 0..3
    workdir: pathlib.Path | None = None  # training workdir (config.json + hybrid/checkpoints); None = random weights
    which: str = "best"  # checkpoint of the workdir: "best" or "latest"
    preset: str = "tiny"  # model preset without a workdir
    p_matrix_dir: pathlib.Path | None = None  # P1..P4.npy; default: <recording folder>/P_matrices
    reinit_ms: float = 100.0  # ANN re-initialisation period
    chunk_events: int = 1000  # events per push
    max_steps_per_call: int = 8  # steps one jitted call may run when a push completes several (1: one per call)
    fold_params: bool = True  # BatchNorms folded into the convs, space-to-depth input conv (same function)
    max_ms: float | None = None  # stop after this much of the recording
    output: pathlib.Path | None = None  # JSON with the latencies and errors


def load_model(args: StreamArgs):
    """``(variables, model config, downsample, note)`` from the workdir or random weights of the preset."""

    if args.workdir is None:
        cfg = ModelConfig.preset(args.preset)
        return init_variables("hybrid", cfg, jax.random.key(0)), cfg, 1, "random weights (no --workdir)"

    config = TrainConfig.from_json((args.workdir / "config.json").read_text())
    config = dataclasses.replace(config, workdir=args.workdir)
    state, step = restore_stage_state(config, "hybrid", args.which)
    variables = state.variables()
    return variables, config.model, config.data.downsample, f"{args.workdir} hybrid step {step}"


def read_recording(args: StreamArgs):
    """0-based events ``(x, y, p, t)`` of the camera and labels ``[N, J, 2]`` (crop pixels, NaN masked) or None."""

    with h5py.File(args.recording, "r") as file:
        group = f"cam{args.camera}_events"
        if group not in file:
            raise ValueError(f"{args.recording}: no {group} (camera channels: "
                             f"{sorted(k for k in file if k.endswith('_events'))})")
        x, y, p, t = (np.asarray(file[f"{group}/{k}"][()], np.int64) for k in ("x", "y", "p", "t"))
    x, y = x - 1, y - 1  # DHP19 files store 1-based pixels
    label_path = args.recording.with_name(args.recording.name.replace("_events.h5", "_events_label.h5"))
    if not label_path.is_file():
        return (x, y, p, t), None
    with h5py.File(label_path, "r") as file:
        joints = np.transpose(np.asarray(file["XYZ/3d_poses"][()], np.float64), (0, 2, 1))  # [N, J, 3]
    matrices, _ = load_projection_matrices(args.p_matrix_dir or args.recording.parent / "P_matrices")
    return (x, y, p, t), project_joints(joints, matrices[args.camera])


def main(args: StreamArgs) -> dict:
    variables, cfg, downsample, note = load_model(args)
    (x, y, p, t), labels = read_recording(args)
    if args.max_ms is not None:
        keep = t < args.max_ms * 1000
        x, y, p, t = x[keep], y[keep], p[keep], t[keep]
    estimator = StreamingPoseEstimator(variables, cfg, StreamingConfig(
        reinit_ms=args.reinit_ms, downsample=downsample, max_steps_per_call=args.max_steps_per_call,
        fold_params=args.fold_params))
    poses = []
    for i in range(0, t.size, args.chunk_events):
        sl = slice(i, i + args.chunk_events)
        poses += estimator.push(x[sl], y[sl], p[sl], t[sl])
    errors = []
    step_us = estimator.step_us
    for pose in poses:
        start_us = pose.step_end_us - step_us
        slot, offset = divmod(start_us, 10_000)
        # The label of slot i (time 10 i ms) scores the step that contains 10 i ms.
        if labels is not None and (offset == 0 or step_us > 10_000 - offset) and slot < len(labels):
            err = np.sqrt(np.sum((pose.uv - labels[slot]) ** 2, axis=-1))
            errors.extend(err[np.isfinite(err)].tolist())
    steps_ms = 1e3 * np.asarray(estimator.step_latency_s)
    inits_ms = 1e3 * np.asarray(estimator.ann_latency_s)
    result = {
        "recording": str(args.recording), "camera": args.camera, "model": note, "step_ms": cfg.step_ms,
        "events": int(t.size), "steps": len(poses), "ann_inits": int(inits_ms.size),
        "step_latency_ms": {"median": float(np.median(steps_ms)), "p90": float(np.percentile(steps_ms, 90)),
                            "max": float(steps_ms.max())} if steps_ms.size else None,
        "ann_init_latency_ms": {"median": float(np.median(inits_ms)), "max": float(inits_ms.max())}
        if inits_ms.size else None,
        "steps_per_call_mean": float(np.mean(estimator.steps_per_call)) if estimator.steps_per_call else None,
        "real_time_at_step_rate": bool(steps_ms.size and np.median(steps_ms) < cfg.step_ms),
        "mpjpe_px": float(np.mean(errors)) if errors else None, "scored_joints": len(errors),
        "mpjpe_meaningful": args.workdir is not None,
    }
    print(json.dumps(result, indent=1))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_cli(lambda: main(tyro.cli(StreamArgs)))
