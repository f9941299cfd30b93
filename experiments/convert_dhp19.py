"""Convert the raw DHP19 release (AEDAT 2.0 + Vicon .mat) into the official preprocessed h5 layout.

    python experiments/convert_dhp19.py RAW_ROOT OUT_DIR [--filter dhp19|none] [--overflow cut|unwrap]
        [--p-matrix-dir DIR] [--overwrite]

RAW_ROOT holds DVS_movies/S{s}/session{k}/mov{m}.aedat, Vicon_data/S{s}_{k}_{m}.mat and P_matrices/. The
cut and the filters follow DHP19's own extraction (Generate_DHP19.m, extract_from_aedat.m; see
hybridjax/data/raw_dhp19/ for the exact rules). Prints a summary and writes OUT_DIR/conversion_report.json
listing every converted, modified and skipped recording.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Literal

import tyro

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hybridjax.data.raw_dhp19 import ConvertOptions, convert_raw_dhp19, format_summary  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ConvertArgs:
    """Command line of convert_dhp19.py."""

    raw_root: tyro.conf.Positional[pathlib.Path]  # root of the raw release (DVS_movies/, Vicon_data/, ...)
    out_dir: tyro.conf.Positional[pathlib.Path]  # folder for the *_events.h5 / *_events_label.h5 files
    filter: Literal["dhp19", "none"] = "dhp19"  # dhp19: hot pixels, background activity, IR masks; none: keep all
    overflow: Literal["cut", "unwrap"] = "cut"  # cut: events up to a timestamp overflow (DHP19); unwrap: all
    p_matrix_dir: pathlib.Path | None = None  # folder with P1..P4 (.npy/.txt); default: searched under raw_root
    overwrite: bool = False  # rewrite recordings whose h5 files already exist


def main(args: ConvertArgs) -> dict:
    summary = convert_raw_dhp19(args.raw_root, args.out_dir, p_matrix_dir=args.p_matrix_dir,
                                overwrite=args.overwrite,
                                options=ConvertOptions(filter=args.filter, overflow=args.overflow))
    print(format_summary(summary))
    print(f"report: {pathlib.Path(args.out_dir) / 'conversion_report.json'}")
    return summary


if __name__ == "__main__":
    from hybridjax.cli import run_cli

    run_cli(lambda: main(tyro.cli(ConvertArgs)))  # a DataError (wrong root, bad camera matrix): one line, exit 2
