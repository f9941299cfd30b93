"""The spiking U-Net (pure functions), in two equivalent execution modes.

Blocks are ``conv (no bias) -> BatchNorm -> LIF``:
``static 5x5 -> down1/2/3 5x5 stride 2 -> residual (conv3x3-BN-LIF "res1", conv3x3-BN + input -> LIF "res2")
-> up1/2/3 (concat skip, bilinear x2, conv5x5-BN-LIF) -> head conv1x1 on concat[up3, static]``.
The hybrid's head output is a current integrated into the heatmaps (``out_k = decay * out_{k-1} + head_k``,
``out_0`` = the ANN heatmap); the pure SNN's head is ``conv1x1 -> BN -> leaky integrator`` (a LIF that
never fires) whose membrane is the output.

The network is written once (:func:`_network`), parameterised by how a block computes its current (a
:class:`BlockConvs`: plain conv, the polyphase up-convolution, BatchNorm after the conv or folded into it,
blocks with a kernel of their own such as space-to-depth; chosen by the caller) and by how a LIF layer is
applied:

* ``step`` mode scans the whole network over time: every layer sees ``[B, H, W, C]`` at one step and
  :func:`hybridjax.snn.lif_step` updates its membrane in the scan carry. This is the streaming form.
* ``layer`` mode runs each conv and BatchNorm for all steps at once (time folded into the batch; BatchNorm
  statistics still per step) and scans only the elementwise LIF update of that layer over time. The SNN is
  recurrent only within each neuron, so both modes compute the same function. ``layer`` mode (the default)
  gives XLA big convolutions: on CPU it needs 1.4-1.5x less work per training step for the tiny model, while
  for the paper widths ``step`` mode needs 5-10% less; with ``remat`` step mode's memory grows only by the
  carry per step (numbers in the benchmark notes).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hybridjax.models.config import ModelConfig
from hybridjax.models.layers import (
    batch_norm,
    conv2d,
    init_bn,
    init_conv,
    sample_params,
    update_running_stats,
    upsample_bilinear2x,
)
from hybridjax.models.upconv import FUSED_MIN_SIZE, upsample2x_conv2d, with_polyphase_kernels
from hybridjax.snn.lif import LIFParams, leaky_integrator_step, lif_step
from hybridjax.snn.scan import scan_steps

# LIF layers in forward order (the order of spike counts and firing rates everywhere in hybridjax).
LIF_LAYERS = ("static", "down1", "down2", "down3", "res1", "res2", "up1", "up2", "up3")
# Official SpikingJelly module names of the same layers (hybrid model).
OFFICIAL_LIF_NAMES = (
    "static_conv_snn.activation", "down1_snn.conv.activation", "down2_snn.conv.activation",
    "down3_snn.conv.activation", "residualBlock_snn.activation1", "residualBlock_snn.activation2",
    "up1_snn.activation", "up2_snn.activation", "up3_snn.activation",
)


@dataclasses.dataclass(frozen=True)
class _Conv:
    cin: int
    cout: int
    kernel: int
    stride: int = 1


def snn_convs(cfg: ModelConfig) -> dict[str, _Conv]:
    """Every conv of the spiking U-Net keyed by its parameter name (``res`` holds two)."""
    s0, s1, s2, s3 = cfg.snn_widths
    return {
        "static": _Conv(cfg.snn_in_channels, s0, 5),
        "down1": _Conv(s0, s1, 5, 2), "down2": _Conv(s1, s2, 5, 2), "down3": _Conv(s2, s3, 5, 2),
        "res1": _Conv(s3, s3, 3), "res2": _Conv(s3, s3, 3),
        "up1": _Conv(2 * s3, s2, 5), "up2": _Conv(2 * s2, s1, 5), "up3": _Conv(2 * s1, s0, 5),
        "head": _Conv(2 * s0, cfg.num_joints, 1),
    }


def lif_channels(cfg: ModelConfig) -> dict[str, int]:
    """Channels of every LIF layer."""
    s0, s1, s2, s3 = cfg.snn_widths
    return dict(zip(LIF_LAYERS, (s0, s1, s2, s3, s3, s3, s2, s1, s0)))


def lif_shapes(cfg: ModelConfig, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """``(h, w, c)`` of every LIF layer's membrane for an input of ``height x width``."""
    scale = {"static": 1, "down1": 2, "down2": 4, "down3": 8, "res1": 8, "res2": 8, "up1": 4, "up2": 2, "up3": 1}
    ch = lif_channels(cfg)
    return {n: (height // scale[n], width // scale[n], ch[n]) for n in LIF_LAYERS}


def init_snn_params(key: jax.Array, cfg: ModelConfig, *, pure_snn: bool, dtype=None) -> tuple[dict, dict]:
    """Parameters and running statistics of the spiking U-Net (the head BatchNorm only for the pure SNN)."""
    return sample_params(lambda sampler: _build_snn_params(sampler, cfg, pure_snn), key, dtype or jnp.float32)


def _build_snn_params(sampler, cfg: ModelConfig, pure_snn: bool) -> tuple[dict, dict]:
    params, stats = {}, {}
    convs = snn_convs(cfg)
    for name, c in convs.items():
        params[name] = {"conv": init_conv(sampler, c.kernel, c.cin, c.cout, bias=False)}
        if name != "head" or pure_snn:
            params[name]["bn"], stats[name] = init_bn(c.cout)
    return params, stats


@dataclasses.dataclass
class SNNResult:
    """What a run of the spiking U-Net returns (all time-major)."""

    outputs: jax.Array  # [T, B, H, W, J] heatmaps after each step (integrated)
    v_last: dict  # LIF layer -> membrane after the last step [B, h, w, c]
    spike_counts: jax.Array  # [T, 9, B] spikes per LIF layer per step per sample
    spike_rates: jax.Array  # [T, 9] spikes per neuron per step (batch mean)
    membranes: dict | None = None  # LIF layer -> [T, B, h, w, c] membranes after each step (if recorded)
    output_state: jax.Array | None = None  # [B, H, W, J] last output / integrator state (for streaming)


jax.tree_util.register_dataclass(
    SNNResult, data_fields=["outputs", "v_last", "spike_counts", "spike_rates", "membranes", "output_state"],
    meta_fields=[])


UP_BLOCKS = ("up1", "up2", "up3")  # bilinear x2 + 5x5 conv blocks


@dataclasses.dataclass(frozen=True)
class BlockConvs:
    """How a block of the spiking U-Net computes its LIF layer's input current: a conv implementation, chosen
    by the caller as the neuron is.

    * the plain convolution is :func:`hybridjax.models.layers.conv2d` (which runs maps smaller than the kernel
      as one im2col matrix product);
    * ``polyphase``: the up blocks' bilinear x2 + 5x5 conv as one polyphase convolution on the small map
      (:func:`hybridjax.models.upconv.upsample2x_conv2d`, maps of at least ``FUSED_MIN_SIZE``), its kernels
      prepared once per window by :meth:`prepare`;
    * ``batch_norm``: BatchNorm after the conv (training and evaluation); False for parameters whose eval
      BatchNorm is folded into the conv (:func:`hybridjax.runtime.folding.fold_batch_norms`, the streaming form);
    * ``own_kernels``: blocks whose conv parameter is a callable kernel of its own (``conv(x, stride=...)``,
      e.g. :class:`hybridjax.runtime.folding.SpaceToDepthConv`; it keeps its own type);
    * ``operand_dtype``: mixed precision of the convolutions (:attr:`ModelConfig.operand_dtype`; None: the
      input's type).
    """

    polyphase: bool = True
    batch_norm: bool = True
    own_kernels: tuple[str, ...] = ()
    operand_dtype: object = None

    @classmethod
    def of(cls, cfg: ModelConfig) -> BlockConvs:
        """The training / evaluation form of ``cfg`` (polyphase up blocks when ``cfg.fused_upsample_conv``)."""
        return cls(polyphase=cfg.fused_upsample_conv, operand_dtype=cfg.operand_dtype)

    def prepare(self, params: dict) -> dict:
        """``params`` with the up blocks' polyphase kernels (once per window, outside the time scan: their
        gradients accumulate over the steps and reach the 5x5 kernels once); unchanged without ``polyphase``."""
        if not self.polyphase:
            return params
        return {**params, **{name: {**params[name], "conv": with_polyphase_kernels(params[name]["conv"])}
                             for name in UP_BLOCKS}}

    def conv(self, name: str, conv, x: jax.Array, *, stride: int, upsample: bool) -> jax.Array:
        """The block's convolution of ``x`` (bilinearly upsampled x2 first when ``upsample``)."""
        if name in self.own_kernels:
            return conv(upsample_bilinear2x(x) if upsample else x, stride=stride)
        if upsample and self.polyphase and min(x.shape[-3:-1]) >= FUSED_MIN_SIZE:
            # = conv2d(upsample_bilinear2x(x)) without the x2 map
            return upsample2x_conv2d(x, conv, operand_dtype=self.operand_dtype)
        x = upsample_bilinear2x(x) if upsample else x
        return conv2d(x, conv, stride=stride, padding=conv["kernel"].shape[0] // 2, operand_dtype=self.operand_dtype)


def _network(params, stats, x, neuron: Callable[[str, jax.Array], jax.Array], convs: BlockConvs, *, train: bool,
             bn_axes, pure_snn: bool, bn_axis_name: str | None = None):
    """The spiking U-Net's wiring, once. ``neuron(layer, current) -> spikes``, ``convs`` the blocks' conv
    implementation; returns (head, batch stats).

    ``bn_axis_name``: synchronise train-mode BatchNorm statistics over this pmap axis
    (:attr:`ModelConfig.batch_norm_axis_name`). The head conv takes the blocks' ``convs.operand_dtype``.
    """
    batch_stats = {}

    def block(name, inp, *, stride=1, residual=None, upsample=False):
        p = params[name]
        y = convs.conv(name, p["conv"], inp, stride=stride, upsample=upsample)
        if convs.batch_norm:
            y, batch_stats[name] = batch_norm(y, p["bn"], stats[name], train=train, reduce_axes=bn_axes,
                                              axis_name=bn_axis_name)
        return neuron(name, y if residual is None else y + residual)

    s_static = block("static", x)
    s_down1 = block("down1", s_static, stride=2)
    s_down2 = block("down2", s_down1, stride=2)
    s_down3 = block("down3", s_down2, stride=2)
    s_res1 = block("res1", s_down3)
    s_res2 = block("res2", s_res1, residual=s_down3)
    s_up1 = block("up1", jnp.concatenate([s_res2, s_down3], axis=-1), upsample=True)
    s_up2 = block("up2", jnp.concatenate([s_up1, s_down2], axis=-1), upsample=True)
    s_up3 = block("up3", jnp.concatenate([s_up2, s_down1], axis=-1), upsample=True)
    head = conv2d(jnp.concatenate([s_up3, s_static], axis=-1), params["head"]["conv"],
                  operand_dtype=convs.operand_dtype)
    if pure_snn:
        head, batch_stats["head"] = batch_norm(head, params["head"]["bn"], stats["head"], train=train,
                                               reduce_axes=bn_axes, axis_name=bn_axis_name)
    return head, batch_stats


def _output_update(out_prev, head, *, pure_snn: bool, decay: float, tau: float):
    # Hybrid: out_k = decay * out_{k-1} + head_k. Pure SNN: a non-spiking LIF whose membrane is the output.
    if pure_snn:
        return leaky_integrator_step(out_prev, head, tau)
    return decay * out_prev + head


def _layer_mode(params, stats, events, v0, out0, cfg: ModelConfig, convs: BlockConvs, *, pure_snn: bool,
                train: bool, record_membranes: bool):
    """Layer mode over ``events [T, ...]``: ``((v_last, out_last), (outputs, counts, rates, stats, membranes))``."""
    lif = cfg.lif(pure_snn=pure_snn)
    v_last, membranes, count_list, rate_list = {}, {}, [], []

    def neuron(name, currents):
        def lif_scan_step(v, c_t):
            v_next, s = lif_step(v, c_t, lif)
            return v_next, (s, v_next) if record_membranes else (s,)

        v_last[name], ys = scan_steps(lif_scan_step, v0[name], currents, remat=cfg.remat,
                                      remat_policy=cfg.remat_policy)
        spikes = ys[0]
        if record_membranes:
            membranes[name] = ys[1]
        count_list.append(jnp.sum(spikes, axis=(2, 3, 4)))
        rate_list.append(jnp.mean(spikes, axis=(1, 2, 3, 4)))
        return spikes

    heads, batch_stats = _network(params, stats, events, neuron, convs, train=train, bn_axes=(1, 2, 3),
                                  pure_snn=pure_snn, bn_axis_name=cfg.batch_norm_axis_name)

    def integrate(out_prev, head_t):
        out = _output_update(out_prev, head_t, pure_snn=pure_snn, decay=cfg.output_decay,
                             tau=cfg.snn_output_tau)
        return out, out

    out_last, outputs = scan_steps(integrate, out0, heads)
    counts = jnp.stack(count_list, axis=1)
    rates = jnp.stack(rate_list, axis=1)
    return (v_last, out_last), (outputs, counts, rates, batch_stats, membranes if record_membranes else None)


def _layer_mode_chunked(params, stats, events, v0, out0, cfg: ModelConfig, convs: BlockConvs, *, pure_snn: bool,
                        train: bool, record_membranes: bool):
    """Layer mode in consecutive chunks of ``cfg.time_chunk`` steps, the membranes carried across chunks.

    Within a chunk every conv runs once for all of its steps. The whole chunks are scanned
    (``jax.lax.scan``; each one rematerialised when ``cfg.remat``: the backward pass keeps only the chunk
    boundaries and recomputes one chunk at a time, so the activation memory is that of one chunk instead of
    growing with the window); a shorter last chunk runs after them. The result equals one chunk's.
    """
    steps = events.shape[0]
    chunk = steps if cfg.time_chunk is None else min(cfg.time_chunk, steps)

    def run(events_chunk, v, out):
        return _layer_mode(params, stats, events_chunk, v, out, cfg, convs, pure_snn=pure_snn, train=train,
                           record_membranes=record_membranes)

    if chunk == steps:
        return run(events, v0, out0)
    whole = steps // chunk

    def chunk_step(carry, events_chunk):
        carry, (outputs, counts, rates, batch_stats, membranes) = run(events_chunk, *carry)
        return carry, (outputs, counts, rates, batch_stats if train else None, membranes)

    chunked = events[:whole * chunk].reshape((whole, chunk) + events.shape[1:])
    carry, pieces = scan_steps(chunk_step, (v0, out0), chunked, remat=cfg.remat, remat_policy=cfg.remat_policy)
    pieces = jax.tree_util.tree_map(lambda x: x.reshape((whole * chunk,) + x.shape[2:]), pieces)
    if whole * chunk < steps:
        carry, rest = run(events[whole * chunk:], *carry)
        rest = rest[:3] + (rest[3] if train else None,) + rest[4:]
        pieces = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=0), pieces, rest)
    outputs, counts, rates, batch_stats, membranes = pieces
    return carry, (outputs, counts, rates, batch_stats if train else stats, membranes)


def snn_step(params: dict, stats: dict, carry: tuple[dict, jax.Array], x_t: jax.Array, cfg: ModelConfig, *,
             pure_snn: bool, train: bool = False, record_membranes: bool = False, convs: BlockConvs | None = None):
    """One SNN step of the whole network: ``((v, out), x_t [B,H,W,2]) -> ((v', out'), per-step outputs)``.

    Per-step outputs: ``out'``, spike counts ``[9, B]``, spike rates ``[9]``, BatchNorm batch statistics
    (train) and, if asked, the membranes. This is the function the streaming runtime jits. ``convs``: the
    blocks' conv implementation (default :meth:`BlockConvs.of` ``cfg``); ``params`` as :meth:`BlockConvs.prepare`
    returns them (unprepared polyphase kernels are computed where they are used).
    """
    lif = cfg.lif(pure_snn=pure_snn)
    convs = convs or BlockConvs.of(cfg)
    v, out_prev = carry
    v_new, counts, rates = {}, [], []

    def neuron(name, current):
        v_new[name], s = lif_step(v[name], current, lif)
        counts.append(jnp.sum(s, axis=(1, 2, 3)))
        rates.append(jnp.mean(s))
        return s

    head, batch_stats = _network(params, stats, x_t, neuron, convs, train=train, bn_axes=(0, 1, 2),
                                 pure_snn=pure_snn, bn_axis_name=cfg.batch_norm_axis_name)
    out = _output_update(out_prev, head, pure_snn=pure_snn, decay=cfg.output_decay, tau=cfg.snn_output_tau)
    per_step = {"out": out, "spike_counts": jnp.stack(counts), "spike_rates": jnp.stack(rates),
                "batch_stats": batch_stats}
    if record_membranes:
        per_step["membranes"] = dict(v_new)
    return (v_new, out), per_step


def snn_forward(params: dict, stats: dict, events: jax.Array, v0: dict, out0: jax.Array, cfg: ModelConfig, *,
                pure_snn: bool, train: bool, record_membranes: bool = False,
                convs: BlockConvs | None = None) -> tuple[SNNResult, dict]:
    """Runs the spiking U-Net over ``events [T, B, H, W, Cin]`` from membranes ``v0`` and output ``out0``.

    Returns the result and the new running statistics (``stats`` unchanged when ``train`` is False; in train
    mode each step's BatchNorm uses that step's batch statistics, folded into the running averages in step
    order). The execution mode (``cfg.snn_mode``) does not change the result. ``convs``: the blocks' conv
    implementation (default :meth:`BlockConvs.of` ``cfg``).
    """
    convs = convs or BlockConvs.of(cfg)
    params = convs.prepare(params)  # once per window, outside the scans
    if cfg.snn_mode == "step":
        def step(carry, x_t):
            return snn_step(params, stats, carry, x_t, cfg, pure_snn=pure_snn, train=train,
                            record_membranes=record_membranes, convs=convs)

        (v_last, out_last), per_step = scan_steps(step, (v0, out0), events, remat=cfg.remat,
                                                  remat_policy=cfg.remat_policy)
        outputs, counts, rates = per_step["out"], per_step["spike_counts"], per_step["spike_rates"]
        batch_stats, membranes = per_step["batch_stats"], per_step.get("membranes")
    else:
        (v_last, out_last), (outputs, counts, rates, batch_stats, membranes) = _layer_mode_chunked(
            params, stats, events, v0, out0, cfg, convs, pure_snn=pure_snn, train=train,
            record_membranes=record_membranes)
    new_stats = update_running_stats(stats, batch_stats, sequential_axis=True) if train else stats
    result = SNNResult(outputs=outputs, v_last=v_last, spike_counts=counts, spike_rates=rates,
                       membranes=membranes, output_state=out_last)
    return result, new_stats


def zero_state(cfg: ModelConfig, batch: int, height: int, width: int, dtype=jnp.float32) -> dict:
    """All-zero membranes for every LIF layer (the SNN's state without an ANN)."""
    return {n: jnp.zeros((batch, h, w, c), dtype) for n, (h, w, c) in lif_shapes(cfg, height, width).items()}


__all__ = ["LIF_LAYERS", "OFFICIAL_LIF_NAMES", "UP_BLOCKS", "BlockConvs", "LIFParams", "SNNResult", "init_snn_params",
           "lif_channels", "lif_shapes", "snn_forward", "snn_step", "zero_state"]
