"""Flax modules: they hold the parameters and running statistics and call the pure functions.

* :class:`ANNUNet` — variables ``{"params": {"ann": ...}}``.
* :class:`SNNModel` — the pure SNN; ``{"params": {"snn": ...}, "batch_stats": {"snn": ...}}``.
* :class:`HybridModel` — ``{"params": {"ann", "initialisers", "snn"}, "batch_stats": {"initialisers", "snn"}}``
  so a hybrid can be composed from a trained ANN and a trained SNN by merging their trees.

Inputs are NHWC; sequences are time-major ``[T, B, H, W, C]`` (:mod:`hybridjax.layout`). ``train=True``
normalises with batch statistics (per SNN step) and, when ``batch_stats`` is mutable, stores the updated
running averages; with ``config.batch_norm_axis_name`` set (inside ``pmap``) those are the statistics of the
batch over all devices of that axis (synchronised BatchNorm).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybridjax import layout
from hybridjax.models.ann import ann_forward, init_ann_params
from hybridjax.models.config import ModelConfig
from hybridjax.models.initialisers import init_initialiser_params, initial_states
from hybridjax.models.layers import update_running_stats
from hybridjax.models.snn_unet import BlockConvs, init_snn_params, lif_channels, lif_shapes, snn_forward, zero_state


@dataclasses.dataclass
class ModelOutput:
    """Outputs of :class:`HybridModel` and :class:`SNNModel` (time-major)."""

    heatmaps: jax.Array  # [T, B, H, W, J] prediction after every SNN step
    spike_counts: jax.Array  # [T, 9, B] spikes per LIF layer (LIF_LAYERS order) per step per sample
    spike_rates: jax.Array  # [T, 9] mean spikes per neuron per layer per step
    v_last: dict  # LIF layer -> membrane after the last step
    ann_heatmap: jax.Array | None = None  # [B, H, W, J] (hybrid)
    v_init: dict | None = None  # LIF layer -> initial membrane from the state initialisers (hybrid)
    membranes: dict | None = None  # LIF layer -> [T, B, h, w, c] (when record_membranes)


jax.tree_util.register_dataclass(
    ModelOutput,
    data_fields=["heatmaps", "spike_counts", "spike_rates", "v_last", "ann_heatmap", "v_init", "membranes"],
    meta_fields=[])


def init_variables(kind: str, cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """The variables ``Model.init`` would build, without tracing a forward pass (fast; no input needed).

    kind: ``"hybrid"`` (:class:`HybridModel`), ``"snn"`` (:class:`SNNModel`) or ``"ann"`` (:class:`ANNUNet`).
    """
    k_ann, k_init, k_snn = jax.random.split(key, 3)
    if kind == "ann":
        return {"params": {"ann": init_ann_params(k_ann, cfg, dtype)}}
    if kind == "snn":
        params, stats = init_snn_params(k_snn, cfg, pure_snn=True, dtype=dtype)
        return {"params": {"snn": params}, "batch_stats": {"snn": stats}}
    if kind == "hybrid":
        init_p, init_s = init_initialiser_params(k_init, cfg, lif_channels(cfg), dtype)
        snn_p, snn_s = init_snn_params(k_snn, cfg, pure_snn=False, dtype=dtype)
        return {"params": {"ann": init_ann_params(k_ann, cfg, dtype), "initialisers": init_p, "snn": snn_p},
                "batch_stats": {"initialisers": init_s, "snn": snn_s}}
    raise ValueError(f"kind must be 'hybrid', 'snn' or 'ann', got {kind!r}")


def _keyless(fn):
    # Running statistics are constants (mean 0, var 1); any key gives the same values.
    return lambda: fn(jax.random.key(0))[1]


class ANNUNet(nn.Module):
    """The ANN U-Net: ``[B, H, W, 20] -> heatmaps [B, H, W, J]`` (``return_features`` adds the skip maps)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        cfg = self.config
        layout.check_image(x, "ann_input", cfg.ann_in_channels)
        layout.check_resolution(x.shape[1], x.shape[2], "ann_input")
        params = self.param("ann", lambda k: init_ann_params(k, cfg))
        heat, feats = ann_forward(params, x, operand_dtype=cfg.operand_dtype)
        return (heat, feats) if return_features else heat


class SNNModel(nn.Module):
    """The pure SNN (no ANN): zero initial state, a BN + leaky-integrator head whose membrane is the output."""

    config: ModelConfig

    @nn.compact
    def __call__(self, events, train: bool = False, record_membranes: bool = False) -> ModelOutput:
        cfg = self.config
        layout.check_sequence(events, "events", cfg.snn_in_channels)
        t, b, h, w, _ = events.shape
        layout.check_resolution(h, w, "events")
        params = self.param("snn", lambda k: init_snn_params(k, cfg, pure_snn=True)[0])
        stats = self.variable("batch_stats", "snn", _keyless(lambda k: init_snn_params(k, cfg, pure_snn=True)))
        v0 = zero_state(cfg, b, h, w, events.dtype)
        out0 = jnp.zeros((b, h, w, cfg.num_joints), events.dtype)
        result, new_stats = snn_forward(params, stats.value, events, v0, out0, cfg, pure_snn=True, train=train,
                                        record_membranes=record_membranes, convs=BlockConvs.of(cfg))
        if train and self.is_mutable_collection("batch_stats"):
            stats.value = new_stats
        return ModelOutput(heatmaps=result.outputs, spike_counts=result.spike_counts,
                           spike_rates=result.spike_rates, v_last=result.v_last, membranes=result.membranes)


class HybridModel(nn.Module):
    """The hybrid ANN-SNN: the ANN initialises the SNN's membranes and output, the SNN updates every step.

    freeze_ann: stop gradients into the ANN parameters (the official recipe trains the hybrid with the ANN
    frozen; the features still carry gradients to nothing but the initialisers).
    """

    config: ModelConfig
    freeze_ann: bool = True

    def setup(self):
        cfg = self.config
        channels = lif_channels(cfg)
        self.ann_params = self.param("ann", lambda k: init_ann_params(k, cfg))
        self.init_params = self.param("initialisers", lambda k: init_initialiser_params(k, cfg, channels)[0])
        self.init_stats = self.variable("batch_stats", "initialisers",
                                        _keyless(lambda k: init_initialiser_params(k, cfg, channels)))
        self.snn_params = self.param("snn", lambda k: init_snn_params(k, cfg, pure_snn=False)[0])
        self.snn_stats = self.variable("batch_stats", "snn",
                                       _keyless(lambda k: init_snn_params(k, cfg, pure_snn=False)))

    def _ann(self, ann_input):
        cfg = self.config
        layout.check_image(ann_input, "ann_input", cfg.ann_in_channels)
        layout.check_resolution(ann_input.shape[1], ann_input.shape[2], "ann_input")
        params = jax.lax.stop_gradient(self.ann_params) if self.freeze_ann else self.ann_params
        return ann_forward(params, ann_input, operand_dtype=cfg.operand_dtype)

    def _initial_states(self, features, height, width, train):
        shapes = {n: s[:2] for n, s in lif_shapes(self.config, height, width).items()}
        v_init, batch = initial_states(self.init_params, self.init_stats.value, features, shapes, train=train,
                                       bn_axis_name=self.config.batch_norm_axis_name,
                                       operand_dtype=self.config.operand_dtype)
        if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
            self.init_stats.value = update_running_stats(self.init_stats.value, batch, sequential_axis=False)
        return v_init

    def initial_states(self, ann_input, train: bool = False) -> dict:
        """``{LIF layer: v_init}`` from an ANN input (e.g. the next window's, the target of L_mp)."""
        _, feats = self._ann(ann_input)
        return self._initial_states(feats, ann_input.shape[1], ann_input.shape[2], train)

    def ann_init(self, ann_input, train: bool = False) -> tuple[dict, jax.Array]:
        """``(membranes, output)`` the SNN starts from at a (re-)initialisation.

        The full hybrid: ``(v_init, ann_heatmap)``; ``output_init``: zero membranes (no initialiser runs);
        ``state_init``: a zero output (:attr:`ModelConfig.hybrid_variant`).
        """
        heat, feats = self._ann(ann_input)
        v_init = self._variant_states(feats, ann_input.shape, train)
        return self._snn_start(v_init, heat, ann_input.shape, heat.dtype)

    def _variant_states(self, features, input_shape, train) -> dict | None:
        """The initialisers' ``v_init`` when the variant initialises the membranes, else None."""
        if not self.config.initialises_state:
            return None
        return self._initial_states(features, input_shape[1], input_shape[2], train)

    def _snn_start(self, v_init, heat, input_shape, dtype) -> tuple[dict, jax.Array]:
        """``(v0, out0)``: ``v_init`` or zero membranes, the ANN heatmap or a zero output, by variant."""
        b, h, w = input_shape[:3]
        v0 = v_init if v_init is not None else zero_state(self.config, b, h, w, dtype)
        out0 = heat.astype(dtype) if self.config.initialises_output else jnp.zeros_like(heat, dtype=dtype)
        return v0, out0

    def __call__(self, ann_input, events, train: bool = False, init_mode: str = "ann",
                 record_membranes: bool = False) -> ModelOutput:
        """Runs the ANN once and the SNN over every step of ``events [T, B, H, W, 2]``.

        init_mode: ``"ann"`` (the hybrid: the ANN initialises what ``config.hybrid_variant`` says, the
        membranes and/or the output) or ``"zeros"`` (the same SNN from zero membranes and a zero output: the
        "SNN alone" baseline). ``v_init`` in the output is None when the variant has no state initialisation.
        """
        cfg = self.config
        layout.check_sequence(events, "events", cfg.snn_in_channels)
        t, b, h, w, _ = events.shape
        if ann_input.shape[:3] != (b, h, w):
            raise ValueError(f"ann_input {tuple(ann_input.shape)} and events {tuple(events.shape)} disagree "
                             "on batch or resolution")
        heat, feats = self._ann(ann_input)
        v_init = self._variant_states(feats, ann_input.shape, train)
        if init_mode == "ann":
            v0, out0 = self._snn_start(v_init, jax.lax.stop_gradient(heat), ann_input.shape, events.dtype)
        elif init_mode == "zeros":
            v0, out0 = zero_state(cfg, b, h, w, events.dtype), jnp.zeros_like(heat, dtype=events.dtype)
        else:
            raise ValueError(f"init_mode must be 'ann' or 'zeros', got {init_mode!r}")
        result, new_stats = snn_forward(self.snn_params, self.snn_stats.value, events, v0, out0, cfg,
                                        pure_snn=False, train=train, record_membranes=record_membranes,
                                        convs=BlockConvs.of(cfg))
        if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
            self.snn_stats.value = new_stats
        return ModelOutput(heatmaps=result.outputs, spike_counts=result.spike_counts,
                           spike_rates=result.spike_rates, v_last=result.v_last, ann_heatmap=heat,
                           v_init=v_init, membranes=result.membranes)
