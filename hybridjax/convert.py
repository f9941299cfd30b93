"""Official PyTorch checkpoints <-> hybridjax variables.

The official models (uzh-rpg/hybrid_ann_snn) are ``Hybrid_CNN_SNN`` (keys ``*_cnn``, ``*_snn``,
``states_*``), the pure SNN ``EVSNN_LIF_final`` and the ANN ``UNet``. A state_dict is given as a mapping
``key -> numpy array`` (read a ``.pt`` file with :func:`load_torch_state_dict`, which needs torch).
Conv weights ``(out, in, kh, kw)`` become HWIO kernels; BatchNorm ``weight/bias`` become ``scale/bias``
parameters and ``running_mean/running_var`` the ``batch_stats`` ``mean/var``; ``num_batches_tracked`` is
dropped. Widths are read from the checkpoint, so any official-shaped model converts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from hybridjax.models.config import ModelConfig

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
        rows += [(f"{name}.conv1", ("initializers", layer, "conv1"), "conv"),
                 (f"{name}.norm_layer", ("initializers", layer, "bn1"), "bn"),
                 (f"{name}.conv2", ("initializers", layer, "conv2"), "conv"),
                 (f"{name}.norm_layer2", ("initializers", layer, "bn2"), "bn")]
    return rows


TABLES = {
    "hybrid": _snn_table(hybrid=True) + _ann_table("_cnn") + _init_table(),
    "snn": _snn_table(hybrid=False),
    "cnn": _ann_table(""),
}


class CheckpointKeyError(KeyError):
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


def infer_config(sd: Mapping[str, np.ndarray], kind: str, base: ModelConfig | None = None) -> ModelConfig:
    """A :class:`ModelConfig` whose widths (and joints / input channels) match the checkpoint."""
    base = base or ModelConfig()
    changes = {}
    if kind in ("hybrid", "cnn"):
        sfx = "_cnn" if kind == "hybrid" else ""
        w = [sd[f"conv1{sfx}.weight"].shape[0]] + [sd[f"down{i}{sfx}.conv1.weight"].shape[0] for i in range(1, 6)]
        changes.update(ann_widths=tuple(int(c) for c in w), ann_in_channels=int(sd[f"conv1{sfx}.weight"].shape[1]),
                       num_joints=int(sd[f"conv3{sfx}.weight"].shape[0]))
    if kind in ("hybrid", "snn"):
        table = {path: prefix for prefix, path, _ in _snn_table(kind == "hybrid")}
        names = ("static", "down1", "down2", "down3")
        w = [sd[f"{table[('snn', n, 'conv')]}.weight"].shape[0] for n in names]
        static = sd[f"{table[('snn', 'static', 'conv')]}.weight"]
        head = sd[f"{table[('snn', 'head', 'conv')]}.weight"]
        changes.update(snn_widths=tuple(int(c) for c in w), snn_in_channels=int(static.shape[1]),
                       num_joints=int(head.shape[0]))
    return dataclasses.replace(base, **changes)


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
    sd = {k: np.asarray(v) for k, v in sd.items()}
    expected = _expected_keys(table, sd)
    missing = [k for k in expected if k not in sd and not k.startswith(allow_missing)]
    unexpected = sorted(k for k in sd if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise CheckpointKeyError(f"{kind} state_dict does not match the official layout; " + "; ".join(problems))

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
    """Compares with the shapes hybridjax builds for the inferred config (catches inconsistent widths)."""
    import jax

    from hybridjax.models.ann import init_ann_params
    from hybridjax.models.initializers import init_initializer_params
    from hybridjax.models.snn_unet import init_snn_params, lif_channels

    cfg = infer_config(sd, kind)
    key = jax.random.key(0)
    want_p, want_s = {}, {}
    if kind in ("hybrid", "cnn"):
        want_p["ann"] = jax.eval_shape(lambda: init_ann_params(key, cfg))
    if kind in ("hybrid", "snn"):
        p, s = jax.eval_shape(lambda: init_snn_params(key, cfg, pure_snn=kind == "snn"))
        want_p["snn"], want_s["snn"] = p, s
    if kind == "hybrid" and not any(a.startswith("states") for a in allow_missing):
        p, s = jax.eval_shape(lambda: init_initializer_params(key, cfg, lif_channels(cfg)))
        want_p["initializers"], want_s["initializers"] = p, s
    problems = []
    for name, got, want in (("params", params, want_p), ("batch_stats", stats, want_s)):
        got_flat = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(got)}
        want_flat = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(want)}
        for k in sorted(set(got_flat) | set(want_flat)):
            if k in want_flat and k in got_flat and tuple(want_flat[k]) != tuple(got_flat[k]):
                problems.append(f"{name}{k}: checkpoint {tuple(got_flat[k])} vs model {tuple(want_flat[k])}")
            elif k not in got_flat and not (kind == "hybrid" and "initializers" in k):
                problems.append(f"{name}{k}: missing in checkpoint")
    if problems:
        raise CheckpointKeyError(f"{kind} state_dict has inconsistent shapes: {problems}")


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
    """Reads an official ``.pt`` checkpoint into ``{key: numpy array}`` (needs ``pip install hybridjax[torch]``)."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs PyTorch: pip install 'hybridjax[torch]'") from err
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items()}


__all__ = ["CheckpointKeyError", "TABLES", "compose_hybrid_state_dict", "compose_hybrid_variables",
           "convert_state_dict", "export_state_dict", "infer_config", "load_torch_state_dict"]
