"""Generate the synthetic DHP19 dataset (official preprocessed layout) into OUT_DIR.

    python experiments/make_synthetic.py OUT_DIR [--preset default|tiny|large] [--seed 0] [--duration-s 3] [--workers 2]
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import tyro

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hybridjax.cli import run_cli
from hybridjax.data.synthetic import SyntheticConfig, write_synthetic_dhp19  # noqa: E402


@dataclasses.dataclass(frozen=True)
class MakeSyntheticArgs:
    """Command line of make_synthetic.py."""

    out_dir: tyro.conf.Positional[pathlib.Path]  # folder to write the h5 files and P_matrices/ into
    preset: str = "default"  # size preset: default (4+2 subjects x 3 x 3 s), tiny (tests), large
    seed: int = 0  # master seed; the dataset is a deterministic function of it
    duration_s: float | None = None  # override the preset's recording length (seconds)
    recordings_per_subject: int | None = None  # override the preset's number of movements per subject
    frame_step_ms: float | None = None  # override the rendering step (ms)
    workers: int = 1  # processes generating recordings in parallel (the output does not depend on it)


def main(args: MakeSyntheticArgs) -> dict:
    overrides = {name: getattr(args, name) for name in ("duration_s", "recordings_per_subject", "frame_step_ms")
                 if getattr(args, name) is not None}
    config = SyntheticConfig.preset(args.preset, seed=args.seed, **overrides)
    summary = write_synthetic_dhp19(args.out_dir, config, workers=args.workers)
    splits = {"train": 0, "test": 0}
    for entry in summary["files"]:
        splits[entry["split"]] += 1
    print(f"wrote {len(summary['files'])} recordings ({splits['train']} train, {splits['test']} test), "
          f"{summary['total_events']} events in {summary['seconds']:.1f} s to {args.out_dir}")
    return summary


if __name__ == "__main__":
    run_cli(lambda: main(tyro.cli(MakeSyntheticArgs)))
