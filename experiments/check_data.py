"""Check a data folder before training: opens it the way training does and reports every problem at once.

    python experiments/check_data.py DATA_DIR [--kind auto|dhp19|h36m] [--cameras 0 1 2 3]
        [--read ends|all|none] [--json REPORT.json]

DATA_DIR is a DHP19 folder in the official h5 layout (e.g. the output of convert_dhp19.py) or an
Event-Human3.6M folder. Prints recordings per split and camera, windows per split, events per second per
camera, label coverage and NaN fraction, what would be skipped and why, and every error (see
hybridjax/data/check.py). Exits 1 when there is any error, 0 otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Literal

import tyro

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hybridjax.cli import run_cli
from hybridjax.data.check import check_data, format_report, report_json  # noqa: E402


@dataclasses.dataclass(frozen=True)
class CheckArgs:
    """Command line of check_data.py."""

    data_dir: tyro.conf.Positional[pathlib.Path]  # the folder training would read (--data-dir of train.py)
    kind: Literal["auto", "dhp19", "h36m"] = "auto"  # auto: DHP19 if *_events.h5 files are present
    cameras: tuple[int, ...] = (0, 1, 2, 3)  # camera channels (DHP19) or views (Event-Human3.6M) to check
    read: Literal["ends", "all", "none"] = "ends"  # windows read per recording and camera: first and last, all
    json: pathlib.Path | None = None  # also write the report as JSON here


def main(args: CheckArgs) -> int:
    report = check_data(args.data_dir, kind=args.kind, cameras=args.cameras, read=args.read)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report), indent=1) + "\n")
    return 1 if report.errors else 0


if __name__ == "__main__":
    run_cli(lambda: main(tyro.cli(CheckArgs)))
