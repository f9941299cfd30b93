"""Official PyTorch checkpoints <-> hybridjax variables.

The official models (uzh-rpg/hybrid_ann_snn) are ``Hybrid_CNN_SNN`` (keys ``*_cnn``, ``*_snn``,
``states_*``), the pure SNN ``EVSNN_LIF_final`` and the ANN ``UNet``. A state_dict is given as a mapping
``key -> numpy array`` (read a ``.pt`` file with :func:`load_torch_state_dict`, which needs torch).
Conv weights ``(out, in, kh, kw)`` become HWIO kernels; BatchNorm ``weight/bias`` become ``scale/bias``
parameters and ``running_mean/running_var`` the ``batch_stats`` ``mean/var``; ``num_batches_tracked`` is
dropped. Widths are read from the checkpoint, so any official-shaped model converts: each width is the value
most of the tensors that carry it agree on, so one mis-shaped tensor is reported as itself.

Nothing doubtful is converted: an entry that is not an array, not float32/float64 or not finite, a missing,
unexpected or mis-shaped key raises :class:`CheckpointKeyError` naming the keys (with a hint when the keys
fit another kind, e.g. a pure SNN state_dict given as ``"hybrid"``).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import pathlib
from collections.abc import Mapping

import jax
import numpy as np

from hybridjax.errors import UserError
from hybridjax.models.ann import init_ann_params
from hybridjax.models.config import ModelConfig
from hybridjax.models.initialisers import init_initialiser_params
from hybridjax.models.snn_unet import init_snn_params, lif_channels

# (official key prefix, path in hybridjax params, kind); kind "conv" = weight (+ bias), "bn" = BatchNorm.
_ANN_BLOCKS = [f"down{i}" for i in range(1, 6)] + [f"up{i}" for i in range(1, 6)]
_INIT_NAMES = {"static": "states_in", "down1": "states_1", "down2": "states_2", "down3": "states_3",
               "res1": "states_4", "res2": "states_5", "up1": "states_6", "up2": "states_7", "up3": "states_8"}


def _ann_table(suffix: str) -> list[tuple[str, tuple[str, ...], str]]:
    rows = [(f"conv1{suffix}", ("ann", "conv1"), "conv"), (f"conv2{suffix}", ("ann", "conv2"), "conv")]
    for block in _ANN_BLOCKS:
        for conv in ("conv1", "conv2"):
            rows.append((f"{block}{suffix}.{conv}", ("ann", block, conv), "conv"))
    rows.append((f"conv3{suffix}", ("ann", "conv3"), "conv"))
    return rows


def _snn_table(hybrid: bool) -> list[tuple[str, tuple[str, ...], str]]:
    if hybrid:
        static_conv, static_bn = "static_conv_snn.conv2d", "static_conv_snn.norm_layer"
        down, res, up, head = "{}_snn.conv", "residualBlock_snn", "{}_snn", "temporalflat_snn"
    else:
        static_conv, static_bn = "static_conv.0", "static_conv.1"
        down, res, up, head = "{}.conv", "residualBlock.0", "{}", "temporalflat"
    rows = [(static_conv, ("snn", "static", "conv"), "conv"), (static_bn, ("snn", "static", "bn"), "bn")]
    for i in (1, 2, 3):
        rows += [(f"{down.format(f'down{i}')}.conv2d", ("snn", f"down{i}", "conv"), "conv"),
                 (f"{down.format(f'down{i}')}.norm_layer", ("snn", f"down{i}", "bn"), "bn")]
    rows += [(f"{res}.conv1", ("snn", "res1", "conv"), "conv"), (f"{res}.bn1", ("snn", "res1", "bn"), "bn"),
             (f"{res}.conv2", ("snn", "res2", "conv"), "conv"), (f"{res}.bn2", ("snn", "res2", "bn"), "bn")]
    for i in (1, 2, 3):
        rows += [(f"{up.format(f'up{i}')}.conv2d", ("snn", f"up{i}", "conv"), "conv"),
                 (f"{up.format(f'up{i}')}.norm_layer", ("snn", f"up{i}", "bn"), "bn")]
    rows.append((f"{head}.conv2d", ("snn", "head", "conv"), "conv"))
    if not hybrid:
        rows.append((f"{head}.norm_layer", ("snn", "head", "bn"), "bn"))
    return rows


def _init_table() -> list[tuple[str, tuple[str, ...], str]]:
    rows = []
    for layer, name in _INIT_NAMES.items():
        rows += [(f"{name}.conv1", ("initialisers", layer, "conv1"), "conv"),
                 (f"{name}.norm_layer", ("initialisers", layer, "bn1"), "bn"),
                 (f"{name}.conv2", ("initialisers", layer, "conv2"), "conv"),
                 (f"{name}.norm_layer2", ("initialisers", layer, "bn2"), "bn")]
    return rows


TABLES = {
    "hybrid": _snn_table(hybrid=True) + _ann_table("_cnn") + _init_table(),
    "snn": _snn_table(hybrid=False),
    "cnn": _ann_table(""),
}


class CheckpointKeyError(UserError, KeyError):
    """A state_dict does not match the official layout; the message names every offending key."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def _expected_keys(table, sd: Mapping[str, np.ndarray]) -> dict[str, str]:
    keys = {}
    for prefix, _, kind in table:
        if kind == "conv":
            keys[f"{prefix}.weight"] = prefix
            if f"{prefix}.bias" in sd:
                keys[f"{prefix}.bias"] = prefix
        else:
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                keys[f"{prefix}.{leaf}"] = prefix
    return keys


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


# Sizes read from a checkpoint: (ModelConfig field, index into a tuple field or None), per kind.
_ANN_SIZES = [("ann_widths", i) for i in range(6)] + [("ann_in_channels", None)]
_SNN_SIZES = [("snn_widths", i) for i in range(4)] + [("snn_in_channels", None)]
_SIZES = {"hybrid": _ANN_SIZES + _SNN_SIZES + [("num_joints", None)], "snn": _SNN_SIZES + [("num_joints", None)],
          "cnn": _ANN_SIZES + [("num_joints", None)]}


def _with_size(cfg: ModelConfig, field: str, index: int | None, value: int) -> ModelConfig:
    if index is None:
        return dataclasses.replace(cfg, **{field: value})
    sizes = list(getattr(cfg, field))
    sizes[index] = value
    return dataclasses.replace(cfg, **{field: tuple(sizes)})


def official_shapes(kind: str, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """``official key -> shape`` of the state_dict the official code saves for a ``kind`` model of ``cfg``
    (without ``num_batches_tracked``); built from hybridjax's own parameter shapes (no arrays are filled)."""
    key = jax.random.key(0)
    params, stats = {}, {}
    if kind in ("hybrid", "cnn"):
        params["ann"] = jax.eval_shape(lambda: init_ann_params(key, cfg))
    if kind in ("hybrid", "snn"):
        params["snn"], stats["snn"] = jax.eval_shape(lambda: init_snn_params(key, cfg, pure_snn=kind == "snn"))
    if kind == "hybrid":
        params["initialisers"], stats["initialisers"] = jax.eval_shape(
            lambda: init_initialiser_params(key, cfg, lif_channels(cfg)))
    # export_state_dict only transposes, so zero-strided stand-ins of each shape are enough.
    variables = jax.tree_util.tree_map(lambda a: np.broadcast_to(np.float32(0), a.shape),
                                       {"params": params, "batch_stats": stats})
    return {k: tuple(v.shape) for k, v in export_state_dict(variables, kind).items()}


@functools.cache
def _size_sources(kind: str) -> dict[tuple[str, int | None], tuple[tuple[str, int], ...]]:
    """For each size of :data:`_SIZES`: the ``(key, axis)`` entries of the state_dict that equal it.

    Found by changing one size at a time in a config whose sizes are all distinct and seeing which axes follow
    (an axis that is a sum of sizes, e.g. a concatenation, equals none of them and is left out).
    """
    probe = ModelConfig(ann_widths=(101, 103, 107, 109, 113, 127), snn_widths=(131, 137, 139, 149),
                        ann_in_channels=151, snn_in_channels=157, num_joints=163)
    base = official_shapes(kind, probe)
    sources = {}
    for field, index in _SIZES[kind]:
        value = getattr(probe, field) if index is None else getattr(probe, field)[index]
        moved = official_shapes(kind, _with_size(probe, field, index, value + 1000))
        sources[(field, index)] = tuple((key, axis) for key, shape in base.items() for axis, n in enumerate(shape)
                                        if n == value and moved[key][axis] == value + 1000)
    return sources


def infer_config(sd: Mapping[str, np.ndarray], kind: str, base: ModelConfig | None = None) -> ModelConfig:
    """A :class:`ModelConfig` whose widths (and joints / input channels) match the checkpoint.

    Each size is the one most of the tensors that carry it agree on, so one mis-shaped tensor does not change
    the widths (it is then reported as itself by :func:`convert_state_dict`).
    """
    if kind not in TABLES:
        raise ValueError(f"kind must be one of {sorted(TABLES)}, got {kind!r}")
    cfg = base or ModelConfig()
    for (field, index), entries in _size_sources(kind).items():
        votes = collections.Counter(int(np.shape(sd[key])[axis]) for key, axis in entries
                                    if key in sd and np.ndim(sd[key]) > axis)
        if votes:
            cfg = _with_size(cfg, field, index, votes.most_common(1)[0][0])
    return cfg


_FLOAT_DTYPES = (np.float32, np.float64)


def _check_values(sd: Mapping, kind: str) -> dict[str, np.ndarray]:
    """The state_dict as numpy arrays; raises naming every entry that is not a finite float32/float64 array."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"{kind} state_dict must be a mapping key -> array, got {type(sd).__name__}")
    arrays, problems = {}, []
    for key, value in sd.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is a {type(key).__name__}, not a string")
            continue
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            problems.append(f"{key} is a {type(value).__name__}, not an array")
            continue
        value = np.asarray(value)
        if key.endswith("num_batches_tracked"):  # an integer counter, dropped
            arrays[key] = value
        elif value.dtype not in _FLOAT_DTYPES:
            problems.append(f"{key} has dtype {value.dtype}, expected float32 or float64")
        elif not np.all(np.isfinite(value)):
            problems.append(f"{key} has {int(np.sum(~np.isfinite(value)))} non-finite values (NaN/inf)")
        else:
            arrays[key] = value
    if problems:
        raise CheckpointKeyError(f"{kind} state_dict has invalid entries: " + "; ".join(problems))
    return arrays


def _kind_hint(sd: Mapping, kind: str) -> str:
    """``"; this looks like a pure SNN state_dict; use kind='snn'"`` when another kind fits the keys."""
    names = {"hybrid": "hybrid (Hybrid_CNN_SNN)", "snn": "pure SNN", "cnn": "pure ANN (UNet)"}
    for other in TABLES:
        expected = _expected_keys(TABLES[other], sd)
        if other != kind and sd and sum(k in expected for k in sd) >= 0.9 * len(sd):
            return f"; this looks like a {names[other]} state_dict; use kind={other!r}"
    return ""


def convert_state_dict(sd: Mapping[str, np.ndarray], kind: str, *, dtype=None,
                       allow_missing: tuple[str, ...] = ()) -> dict:
    """Official state_dict -> ``{"params": ..., "batch_stats": ...}`` for the matching hybridjax module.

    kind: ``"hybrid"`` (HybridModel), ``"snn"`` (SNNModel) or ``"cnn"`` (ANNUNet).
    dtype: cast every array (default: keep the checkpoint's dtype).
    allow_missing: key prefixes that may be absent (e.g. ``("states_",)`` for a hybrid composed from a
    pure ANN and a pure SNN, whose state initialisers are trained from scratch); absent entries are left out
    of the result. Raises :class:`CheckpointKeyError` naming missing, unexpected and mis-shaped keys.
    """
    if kind not in TABLES:
        raise ValueError(f"kind must be one of {sorted(TABLES)}, got {kind!r}")
    table = TABLES[kind]
    sd = _check_values(sd, kind)
    expected = _expected_keys(table, sd)
    missing = [k for k in expected if k not in sd and not k.startswith(allow_missing)]
    unexpected = sorted(k for k in sd if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise CheckpointKeyError(f"{kind} state_dict does not match the official layout; " + "; ".join(problems)
                                 + _kind_hint(sd, kind))

    cast = (lambda a: a.astype(dtype)) if dtype is not None else (lambda a: a)
    params: dict = {}
    stats: dict = {}
    bad_shapes = []
    for prefix, path, layer_kind in table:
        if f"{prefix}.weight" not in sd:
            continue  # allowed missing
        if layer_kind == "conv":
            w = sd[f"{prefix}.weight"]
            if w.ndim != 4:
                bad_shapes.append(f"{prefix}.weight has shape {w.shape}, expected (out, in, kh, kw)")
                continue
            entry = {"kernel": cast(np.transpose(w, (2, 3, 1, 0)))}
            if f"{prefix}.bias" in sd:
                entry["bias"] = cast(sd[f"{prefix}.bias"])
            _set(params, path, entry)
        else:
            c = sd[f"{prefix}.weight"].shape
            for leaf in ("bias", "running_mean", "running_var"):
                if sd[f"{prefix}.{leaf}"].shape != c:
                    bad_shapes.append(f"{prefix}.{leaf} has shape {sd[f'{prefix}.{leaf}'].shape}, expected {c}")
            _set(params, path, {"scale": cast(sd[f"{prefix}.weight"]), "bias": cast(sd[f"{prefix}.bias"])})
            # SNN blocks keep one BatchNorm's statistics directly under the block; initialisers keep bn1 / bn2.
            stats_path = path[:-1] if path[-1] == "bn" else path
            _set(stats, stats_path,
                 {"mean": cast(sd[f"{prefix}.running_mean"]), "var": cast(sd[f"{prefix}.running_var"])})
    if bad_shapes:
        raise CheckpointKeyError(f"{kind} state_dict has mis-shaped entries: {bad_shapes}")
    _check_shapes(params, stats, sd, kind, allow_missing)
    return {"params": params, "batch_stats": stats}


def _check_shapes(params, stats, sd, kind, allow_missing) -> None:
    """Compares every tensor with the shape hybridjax builds for the widths most tensors give."""
    cfg = infer_config(sd, kind)
    want = official_shapes(kind, cfg)
    problems = [f"{key} has shape {tuple(sd[key].shape)}, expected {shape}" for key, shape in want.items()
                if key in sd and tuple(sd[key].shape) != shape]
    if problems:
        sizes = f"ann_widths={cfg.ann_widths}, " if kind != "snn" else ""
        sizes += f"snn_widths={cfg.snn_widths}, " if kind != "cnn" else ""
        raise CheckpointKeyError(f"{kind} state_dict has inconsistent shapes (most tensors give {sizes}"
                                 f"num_joints={cfg.num_joints}): {problems}")


def export_state_dict(variables: dict, kind: str) -> dict[str, np.ndarray]:
    """hybridjax variables (or a gradient pytree shaped like ``{"params": ...}``) -> official keys.

    The inverse of :func:`convert_state_dict`: kernels go back to ``(out, in, kh, kw)``; entries absent from
    ``variables`` (e.g. ``batch_stats`` of a gradient) are skipped; ``num_batches_tracked`` is not produced.
    """
    params = variables.get("params", {})
    stats = variables.get("batch_stats", {})

    def get(tree, path):
        for p in path:
            if not isinstance(tree, Mapping) or p not in tree:
                return None
            tree = tree[p]
        return tree

    out: dict[str, np.ndarray] = {}
    for prefix, path, layer_kind in TABLES[kind]:
        entry = get(params, path)
        if layer_kind == "conv":
            if entry is None:
                continue
            out[f"{prefix}.weight"] = np.transpose(np.asarray(entry["kernel"]), (3, 2, 0, 1))
            if "bias" in entry:
                out[f"{prefix}.bias"] = np.asarray(entry["bias"])
        else:
            if entry is not None:
                out[f"{prefix}.weight"] = np.asarray(entry["scale"])
                out[f"{prefix}.bias"] = np.asarray(entry["bias"])
            st = get(stats, path[:-1] if path[-1] == "bn" else path)
            if st is not None:
                out[f"{prefix}.running_mean"] = np.asarray(st["mean"])
                out[f"{prefix}.running_var"] = np.asarray(st["var"])
    return out


# ---- composing a hybrid from separately trained parts (the official renaming) -------------------------------
def compose_hybrid_state_dict(cnn_sd: Mapping[str, np.ndarray], snn_sd: Mapping[str, np.ndarray]
                              ) -> dict[str, np.ndarray]:
    """Renames a pure ``UNet`` and a pure ``EVSNN_LIF_final`` state_dict into ``Hybrid_CNN_SNN`` keys.

    UNet ``conv1``/``down1``/... -> ``conv1_cnn``/``down1_cnn``/...; SNN ``static_conv.0``/``.1`` ->
    ``static_conv_snn.conv2d``/``.norm_layer``, ``down1`` -> ``down1_snn``, ``residualBlock.0`` ->
    ``residualBlock_snn``, ``up1`` -> ``up1_snn``, ``temporalflat`` -> ``temporalflat_snn``. The pure SNN's head
    BatchNorm has no place in the hybrid (its head output is a current) and is dropped; the state
    initialisers (``states_*``) are absent and start from scratch.
    """
    out = {}
    for key, value in cnn_sd.items():
        head, _, rest = key.partition(".")
        out[f"{head}_cnn.{rest}"] = value
    renames = [("static_conv.0.", "static_conv_snn.conv2d."), ("static_conv.1.", "static_conv_snn.norm_layer."),
               ("residualBlock.0.", "residualBlock_snn.")]
    for key, value in snn_sd.items():
        if key.startswith("temporalflat.norm_layer."):
            continue
        for old, new in renames:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            head, _, rest = key.partition(".")
            out[f"{head}_snn.{rest}"] = value
    return out


def compose_hybrid_variables(ann_variables: dict, snn_variables: dict, hybrid_variables: dict) -> dict:
    """A hybrid's variables with the ANN and the SNN taken from separately trained hybridjax models.

    ``hybrid_variables`` (e.g. a fresh ``HybridModel.init``) provides the state initialisers; the pure SNN's
    head BatchNorm is dropped (the hybrid head has none).
    """
    params = dict(hybrid_variables["params"])
    stats = dict(hybrid_variables.get("batch_stats", {}))
    params["ann"] = ann_variables["params"]["ann"]
    snn_params = {k: v for k, v in snn_variables["params"]["snn"].items()}
    snn_params["head"] = {"conv": snn_params["head"]["conv"]}
    params["snn"] = snn_params
    stats["snn"] = {k: v for k, v in snn_variables["batch_stats"]["snn"].items() if k != "head"}
    return {"params": params, "batch_stats": stats}


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Reads an official ``.pt`` checkpoint into ``{key: numpy array}`` (needs ``pip install hybridjax[torch]``).

    Raises ``ValueError`` naming the file when it is empty or not a PyTorch checkpoint, and naming the key
    when an entry is not a tensor; :func:`convert_state_dict` then checks dtypes, values and shapes.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive ("PK\x03\x04"); the legacy format is a pickle (protocol byte 0x80).
    if not head:
        raise ValueError(f"{path} is empty (0 bytes), not a PyTorch checkpoint")
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise ValueError(f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip archive or a "
                         "pickle)")
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs PyTorch: pip install 'hybridjax[torch]'") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged archive or pickle: torch's message, with the file named
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {type(err).__name__}: {err}") from err
    return state_dict_arrays(obj, str(path))


def state_dict_arrays(obj, source: str) -> dict[str, np.ndarray]:
    """``{key: numpy array}`` of a loaded checkpoint object (a state_dict, or a dict with ``"state_dict"``);
    ``module.`` prefixes (DataParallel) are dropped. Raises ``ValueError`` naming ``source`` and the key."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    arrays, problems = {}, []
    for key, value in obj.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
            continue
        arrays[str(key).removeprefix("module.")] = value
    if problems:
        raise ValueError(f"{source}: not a state_dict of tensors: " + "; ".join(problems))
    return arrays


__all__ = ["CheckpointKeyError", "TABLES", "compose_hybrid_state_dict", "compose_hybrid_variables",
           "convert_state_dict", "export_state_dict", "infer_config", "load_torch_state_dict", "official_shapes",
           "state_dict_arrays"]
