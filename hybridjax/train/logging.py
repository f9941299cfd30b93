"""Metric logs of a stage: ``<workdir>/<stage>/metrics.jsonl`` and TensorBoard event files beside it.

One JSON object per line: ``{"stage", "step", "split" ("train" | "val"), <metric>: float, ...}``, and
event rows ``{"stage", "step", "split": "event", "event": name, ...}`` (e.g. a ``--force-resume``). After
a resume, lines of steps beyond the restored checkpoint (written before the crash) are dropped first so
the file reads like that of an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np


def _float(value) -> float:
    return float(np.asarray(value))


class MetricLogger:
    """Appends metrics to JSONL and (process 0 only, optionally) TensorBoard."""

    def __init__(self, directory: str | pathlib.Path, stage: str, *, tensorboard: bool = True,
                 enabled: bool = True, resume_step: int | None = None):
        self.directory = pathlib.Path(directory)
        self.stage = stage
        self.enabled = enabled
        self.path = self.directory / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step or 0)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, split: str, metrics: dict) -> dict:
        """Writes ``metrics`` (scalars) for ``step``; returns the row written."""
        row = {"stage": self.stage, "step": int(step), "split": split}
        for name, value in metrics.items():
            value = _float(value)
            row[name] = value if math.isfinite(value) else str(value)
        if not self.enabled:
            return row
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for name, value in row.items():
                if isinstance(value, float):
                    self._writer.add_scalar(f"{self.stage}/{split}/{name}", value, step)
        return row

    def note(self, step: int, event: str, **details) -> dict:
        """Writes an event row ``{"split": "event", "event": event, **details}`` (JSON values) for ``step``."""
        row = {"stage": self.stage, "step": int(step), "split": "event", "event": event, **details}
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        return row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """All rows of a ``metrics.jsonl``."""
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
