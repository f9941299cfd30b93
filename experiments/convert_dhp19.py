"""Convert the raw DHP19 release (AEDAT 2.0 + Vicon .mat) into the official preprocessed h5 layout.

    python experiments/convert_dhp19.py RAW_ROOT OUT_DIR [--p-matrix-dir DIR] [--overwrite]

RAW_ROOT holds DVS_movies/S{s}/session{k}/mov{m}.aedat, Vicon_data/S{s}_{k}_{m}.mat and P_matrices/
(see hybridjax/data/raw_dhp19.py for the exact rules). Prints a summary of converted and skipped files.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import tyro

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hybridjax.data.raw_dhp19 import convert_raw_dhp19, format_summary  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ConvertArgs:
    """Command line of convert_dhp19.py."""

    raw_root: tyro.conf.Positional[pathlib.Path]  # root of the raw release (DVS_movies/, Vicon_data/, ...)
    out_dir: tyro.conf.Positional[pathlib.Path]  # folder for the *_events.h5 / *_events_label.h5 files
    p_matrix_dir: pathlib.Path | None = None  # folder with P1..P4 (.npy/.txt); default: searched under raw_root
    overwrite: bool = False  # rewrite recordings whose h5 files already exist


def main(args: ConvertArgs) -> dict:
    summary = convert_raw_dhp19(args.raw_root, args.out_dir, p_matrix_dir=args.p_matrix_dir,
                                overwrite=args.overwrite)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main(tyro.cli(ConvertArgs))
