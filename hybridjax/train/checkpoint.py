"""Orbax checkpoints of one training stage: ``<workdir>/<stage>/checkpoints/<step>``.

A checkpoint holds the array part of the :class:`~hybridjax.train.state.TrainState` (step, trainable and
frozen params, BatchNorm statistics, optimiser state). Retention: the last ``keep_last`` checkpoints plus
the one with the lowest validation MPJPE (orbax preservation policies).

Verification. Orbax does not notice changed bytes in its data files (2000 garbled bytes restore without an
error, tested), so every save also writes ``hybridjax_integrity.json`` into the step folder: the path, shape,
dtype and SHA-256 of every array. :meth:`StageCheckpointer.restore` first compares the stored shapes with the
ones the configuration expects (a checkpoint of another model fails with :class:`CheckpointMismatchError`
naming every entry), then restores and compares the hashes: a checkpoint that cannot be read, has no hash
file (the save did not complete) or whose content changed raises :class:`CheckpointCorruptError` saying which
file and why. :meth:`StageCheckpointer.restore_newest_good` falls back to the newest checkpoint that passes.

Saving first reserves the checkpoint's size on the disk, so a full disk (or a file size limit) fails at once
with a clear :class:`CheckpointSaveError` and leaves the earlier checkpoints as they were.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from hybridjax.errors import ConfigError, UserError

VAL_METRIC = "val_mpjpe"  # the metric the best checkpoint is chosen by (lower is better)
INTEGRITY_FILE = "hybridjax_integrity.json"  # {path: [shape, dtype, sha256]} of every array of a checkpoint
CONFIG_FILE = "hybridjax_config.json"  # the resolved training configuration the checkpoint was written with
DAMAGED_DIR = "damaged"  # sibling of the checkpoint folder where damaged checkpoints are moved on resume


class MissingCheckpointError(UserError, FileNotFoundError):
    """A stage needs the checkpoint of an earlier stage that is not in the workdir."""


class CheckpointMismatchError(UserError, ValueError):
    """A stored checkpoint does not fit the model / optimiser the configuration builds."""


class CheckpointCorruptError(UserError, ValueError):
    """A checkpoint cannot be read, was not completely written, or its content changed after saving."""


class CheckpointSaveError(UserError, OSError):
    """A checkpoint could not be written (full disk, file size limit, permissions); earlier ones are intact."""


def _content_hashes(tree) -> dict[str, list]:
    """``{path: [shape, dtype, sha256 of the C-order bytes]}`` of every array leaf."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    table = {}
    for path, leaf in leaves:
        array = np.asarray(leaf)
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)  # the bytes in C order (0-d arrays too)
        table[_path_name(path)] = [list(array.shape), str(array.dtype), hashlib.sha256(data).hexdigest()]
    return table


def _reserve(directory: pathlib.Path, num_bytes: int) -> None:
    """Raises :class:`CheckpointSaveError` unless ``num_bytes`` can be allocated in ``directory``.

    A file of that size is allocated (not written) and removed again; this fails on a full disk or over a
    file size limit (``ulimit -f``), where orbax itself would stall.
    """
    probe = directory / ".hybridjax_space_probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(num_bytes, 1))
        finally:
            os.close(fd)
    except OSError as err:
        if getattr(err, "errno", None) in (getattr(os, "EOPNOTSUPP", -1), getattr(os, "ENOTSUP", -1)):
            return  # the file system cannot pre-allocate: no check possible
        free = shutil.disk_usage(directory).free
        raise CheckpointSaveError(
            f"cannot write a checkpoint of {num_bytes / 1e6:.1f} MB into {directory}: {err.strerror or err} "
            f"({free / 1e6:.1f} MB free on that disk); the earlier checkpoints are intact. Free some space "
            "(or raise the file size limit) and re-run the same command to resume") from err
    finally:
        probe.unlink(missing_ok=True)


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
    def save(self, step: int, arrays: dict, metrics: dict | None = None, config_json: str | None = None) -> None:
        """Stores ``arrays`` (host copies) at ``step`` with their content hashes; ``metrics`` may carry
        ``val_mpjpe``; ``config_json`` (the resolved configuration) is stored beside them."""
        arrays = jax.tree_util.tree_map(np.asarray, arrays)
        clean = {k: float(v) for k, v in (metrics or {}).items()
                 if v is not None and np.ndim(v) == 0 and np.isfinite(v)}
        hashes = _content_hashes(arrays)
        self.directory.mkdir(parents=True, exist_ok=True)
        size = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(arrays))
        _reserve(self.directory, int(size * 1.1) + (1 << 16))  # data plus orbax's metadata
        try:
            self.manager.save(
                step, args=ocp.args.StandardSave(arrays), metrics=clean if VAL_METRIC in clean else None,
                force=True,
            )
            self.manager.wait_until_finished()
            folder = self.directory / str(step)
            if jax.process_index() == 0:  # the process whose arrays orbax wrote
                (folder / "hybridjax_metrics.json").write_text(json.dumps(clean))
                if config_json is not None:
                    (folder / CONFIG_FILE).write_text(config_json)
                # Written last: a checkpoint without it did not finish saving and is never restored.
                (folder / INTEGRITY_FILE).write_text(json.dumps(hashes))
            if jax.process_count() > 1:  # no process reads the checkpoint before its files are complete

                multihost_utils.sync_global_devices(f"hybridjax checkpoint {self.directory} {step}")
        except OSError as err:
            raise CheckpointSaveError(f"writing checkpoint {self.directory / str(step)} failed: {err}; the "
                                      "earlier checkpoints are intact") from err

    def stored_config(self, step: int) -> str | None:
        """The configuration JSON checkpoint ``step`` was written with (None for checkpoints without it)."""
        path = self.directory / str(step) / CONFIG_FILE
        return path.read_text() if path.is_file() else None

    def stored_shapes(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        meta = self.manager.item_metadata(step)
        tree = getattr(meta, "tree", meta)
        leaves = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
        )[0]
        return {_path_name(p): (tuple(x.shape), str(np.dtype(x.dtype))) for p, x in leaves}

    def restore(self, step: int, target: dict) -> dict:
        """Verified arrays of checkpoint ``step`` shaped like ``target``.

        Raises :class:`CheckpointMismatchError` when the stored tree does not fit ``target`` and
        :class:`CheckpointCorruptError` when the checkpoint cannot be read or its content hashes differ.
        """
        if step not in self.all_steps():
            raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} (have {self.all_steps()})")
        folder = self.directory / str(step)
        target = jax.tree_util.tree_map(np.asarray, target)
        integrity = folder / INTEGRITY_FILE
        try:
            hashes = json.loads(integrity.read_text())
        except FileNotFoundError:
            raise CheckpointCorruptError(f"checkpoint {folder} has no {INTEGRITY_FILE}: its save did not complete "
                                         "(or it was written before checkpoints were verified)") from None
        except (OSError, ValueError) as err:
            raise CheckpointCorruptError(f"checkpoint {folder}: {INTEGRITY_FILE} is unreadable ({err})") from err
        stored = {name: (tuple(shape), dtype) for name, (shape, dtype, _) in hashes.items()}
        problems = describe_mismatch(stored, _flat_shapes(target))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {folder} does not match the configuration "
                "(was it written with another model preset / widths / stage?):\n  " + "\n  ".join(problems)
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as err:  # orbax / tensorstore report damaged files as ValueError, KeyError, OSError ...
            first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise CheckpointCorruptError(f"checkpoint {folder} cannot be read: {first_line}") from err
        changed = [name for name, row in _content_hashes(restored).items() if row[2] != hashes[name][2]]
        if changed:
            raise CheckpointCorruptError(
                f"checkpoint {folder} is corrupt: the content of {len(changed)} array(s) differs from the hash "
                f"written at save time ({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''})")
        return restored

    def restore_newest_good(self, target: dict, *, first: int | None = None, log=print,
                            move_damaged: bool = False) -> tuple[int | None, dict | None]:
        """``(step, arrays)`` of the newest checkpoint that passes :meth:`restore` (``first`` is tried before
        the others, e.g. the best one), or ``(None, None)`` when there is none at all.

        Each damaged checkpoint is named in ``log`` with the reason. With ``move_damaged`` the damaged ones
        newer than the restored step are moved to ``<checkpoints>/../damaged/<step>`` (kept, not deleted) so
        that training can save those steps again. When every checkpoint is damaged,
        :class:`CheckpointCorruptError` lists them all and nothing is moved.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if first is not None and first in steps:
            steps = [first] + [s for s in steps if s != first]
        damaged = []
        for step in steps:
            try:
                arrays = self.restore(step, target)
            except CheckpointCorruptError as err:
                damaged.append((step, str(err)))
                log(f"warning: {err}; trying an older checkpoint")
                continue
            if move_damaged:
                self._move_aside([s for s, _ in damaged if s > step], log)
            if damaged:
                log(f"restored checkpoint {self.directory / str(step)} (verified) instead")
            return step, arrays
        if damaged:
            raise CheckpointCorruptError(
                f"no usable checkpoint in {self.directory}: every one is damaged:\n  "
                + "\n  ".join(why for _, why in damaged)
                + "\nMove them away (or use a fresh --workdir) to train this stage from the start.")
        return None, None

    def _move_aside(self, steps: list[int], log) -> None:
        if not steps:
            return
        target_dir = self.directory.parent / DAMAGED_DIR
        target_dir.mkdir(parents=True, exist_ok=True)
        for step in steps:
            destination = target_dir / str(step)
            if destination.exists():
                destination = target_dir / f"{step}.{len(list(target_dir.iterdir()))}"
            shutil.move(str(self.directory / str(step)), str(destination))
            log(f"moved damaged checkpoint {self.directory / str(step)} to {destination}")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
