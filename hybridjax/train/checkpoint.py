"""Orbax checkpoints of one training stage: ``<workdir>/<stage>/checkpoints/<step>``.

A checkpoint holds the array part of the :class:`~hybridjax.train.state.TrainState` (step, trainable and
frozen params, BatchNorm statistics, optimiser state). Retention: the last ``keep_last`` checkpoints plus
the one with the lowest validation MPJPE (orbax preservation policies). Restoring checks the stored tree
against the expected one first and names every entry whose path, shape or dtype differs, so a checkpoint
of another model configuration fails with a readable message instead of deep inside orbax.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from hybridjax.errors import ConfigError, UserError

VAL_METRIC = "val_mpjpe"  # the metric the best checkpoint is chosen by (lower is better)


class MissingCheckpointError(UserError, FileNotFoundError):
    """A stage needs the checkpoint of an earlier stage that is not in the workdir."""


class CheckpointMismatchError(UserError, ValueError):
    """A stored checkpoint does not fit the model / optimiser the configuration builds."""


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _flat_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(p): (tuple(np.shape(x)), str(np.dtype(x.dtype))) for p, x in leaves}


def describe_mismatch(stored: dict, expected: dict, limit: int = 12) -> list[str]:
    """Human-readable differences between two ``{path: (shape, dtype)}`` tables (empty list: they match)."""
    problems = []
    for name in sorted(set(expected) - set(stored)):
        problems.append(f"missing in checkpoint: {name} {expected[name][0]}")
    for name in sorted(set(stored) - set(expected)):
        problems.append(f"unexpected in checkpoint: {name} {stored[name][0]}")
    for name in sorted(set(stored) & set(expected)):
        if stored[name] != expected[name]:
            problems.append(
                f"{name}: checkpoint has shape {stored[name][0]} {stored[name][1]}, "
                f"the configuration expects {expected[name][0]} {expected[name][1]}"
            )
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


class StageCheckpointer:
    """Saves and restores the checkpoints of one stage; thin, validating wrapper of a CheckpointManager."""

    def __init__(self, directory: str | pathlib.Path, keep_last: int = 3, *, read_only: bool = False):
        self.directory = pathlib.Path(directory).absolute()
        if keep_last < 1:
            raise ConfigError(f"keep_last must be >= 1, got {keep_last}")
        policy = preservation.AnyPreservationPolicy([
            preservation.LatestN(n=keep_last),
            preservation.BestN(
                get_metric_fn=lambda m: m[VAL_METRIC], reverse=True, n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=not read_only, read_only=read_only,
            enable_async_checkpointing=False,
        )
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint folder {self.directory}")
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    # -- queries -------------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """Step of the lowest stored validation MPJPE (None when no checkpoint carries one)."""
        best, best_value = None, np.inf
        for step in self.all_steps():
            value = self.metrics(step).get(VAL_METRIC)
            if value is not None and np.isfinite(value) and value < best_value:
                best, best_value = step, value
        return best

    def metrics(self, step: int) -> dict:
        path = self.directory / str(step) / "hybridjax_metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- save / restore ------------------------------------------------------------------------------
    def save(self, step: int, arrays: dict, metrics: dict | None = None) -> None:
        """Stores ``arrays`` (host copies) at ``step``; ``metrics`` may carry ``val_mpjpe``."""
        arrays = jax.tree_util.tree_map(np.asarray, arrays)
        clean = {k: float(v) for k, v in (metrics or {}).items()
                 if v is not None and np.ndim(v) == 0 and np.isfinite(v)}
        self.manager.save(
            step, args=ocp.args.StandardSave(arrays), metrics=clean if VAL_METRIC in clean else None,
            force=True,
        )
        self.manager.wait_until_finished()
        (self.directory / str(step) / "hybridjax_metrics.json").write_text(json.dumps(clean))

    def stored_shapes(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        meta = self.manager.item_metadata(step)
        tree = getattr(meta, "tree", meta)
        leaves = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
        )[0]
        return {_path_name(p): (tuple(x.shape), str(np.dtype(x.dtype))) for p, x in leaves}

    def restore(self, step: int, target: dict) -> dict:
        """Arrays of checkpoint ``step`` shaped like ``target`` (raises :class:`CheckpointMismatchError`)."""
        if step not in self.all_steps():
            raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} (have {self.all_steps()})")
        target = jax.tree_util.tree_map(np.asarray, target)
        problems = describe_mismatch(self.stored_shapes(step), _flat_shapes(target))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory / str(step)} does not match the configuration "
                "(was it written with another model preset / widths / stage?):\n  " + "\n  ".join(problems)
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()
