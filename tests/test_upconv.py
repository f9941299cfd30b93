"""The polyphase upsample-then-5x5-conv (hybridjax.models.upconv) equals the literal composition, borders included."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.eval import macs
from hybridjax.models import ModelConfig, init_snn_params, snn_forward, snn_unet, zero_state
from hybridjax.models.layers import conv2d, upsample_bilinear2x
from hybridjax.models.upconv import (
    PHASE_COEFFICIENTS,
    conv_padded,
    edge_pad1,
    phase_kernels,
    polyphase_kernels,
    upsample2x_conv2d,
    with_polyphase_kernels,
)


@pytest.fixture(autouse=True)
def _float64():
    # Every test here compares in float64. A context per test, not jax.config.update at import: a global
    # switch made at collection time would turn on x64 for the whole session and change other files' tests.
    with jax.enable_x64(True):
        yield


def _reference(x, params):
    return conv2d(upsample_bilinear2x(x), params, padding=2)


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# Low-resolution shapes [..., H, W, Cin]: tiny maps (1x1, 2x2, 3x5), odd/even sizes, a leading time axis.
SHAPES = [(1, 1, 1, 3), (2, 2, 2, 3), (1, 3, 5, 3), (2, 4, 6, 3), (1, 7, 4, 3), (3, 2, 5, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_the_composition_in_float64(shape):
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.standard_normal(shape))
    params = {"kernel": jnp.asarray(rng.standard_normal((5, 5, 3, 4))), "bias": jnp.asarray(rng.standard_normal(4))}
    got = jax.jit(upsample2x_conv2d)(x, params)
    want = jax.jit(_reference)(x, params)
    assert got.shape == shape[:-3] + (2 * shape[-3], 2 * shape[-2], 4)
    assert _rel(got, want) < 1e-13
    # Precomputed kernels (the scan path) give the same numbers as kernels built in the call.
    assert _rel(jax.jit(upsample2x_conv2d)(x, with_polyphase_kernels(params)), got) < 1e-14


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 5, 2), (2, 1, 4, 4, 2)])
def test_gradients_equal_the_composition(shape):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal(shape))
    params = {"kernel": jnp.asarray(rng.standard_normal((5, 5, 2, 3))), "bias": jnp.asarray(rng.standard_normal(3))}
    cot = jnp.asarray(rng.standard_normal(shape[:-3] + (2 * shape[-3], 2 * shape[-2], 3)))
    def pullback(fn):
        return jax.jit(lambda x, params, cot: jax.vjp(fn, x, params)[1](cot))

    (gx, gp), (rx, rp) = pullback(upsample2x_conv2d)(x, params, cot), pullback(_reference)(x, params, cot)
    assert _rel(gx, rx) < 1e-12
    assert _rel(gp["kernel"], rp["kernel"]) < 1e-12
    assert _rel(gp["bias"], rp["bias"]) < 1e-12


def test_border_closed_form():
    """Constant input c, all-ones 1x1-channel kernel: the output counts the in-range taps of the x2 map."""
    h, w = 3, 4
    y = np.asarray(jax.jit(upsample2x_conv2d)(jnp.full((1, h, w, 1), 2.0), {"kernel": jnp.ones((5, 5, 1, 1))}))
    y = y[0, ..., 0]
    in_range = np.minimum(np.arange(2 * h) + 2, 2 * h - 1) - np.maximum(np.arange(2 * h) - 2, 0) + 1
    in_range_w = np.minimum(np.arange(2 * w) + 2, 2 * w - 1) - np.maximum(np.arange(2 * w) - 2, 0) + 1
    np.testing.assert_allclose(y, 2.0 * np.outer(in_range, in_range_w), rtol=1e-14)
    assert y[0, 0] == pytest.approx(2.0 * 9) and y[2, 3] == pytest.approx(2.0 * 25) and y[1, 4] == pytest.approx(40.0)


def test_phase_kernels_are_the_coefficient_products():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((5, 5, 2, 3))
    phases = phase_kernels(jnp.asarray(kernel))
    for a in (0, 1):
        for b in (0, 1):
            want = np.einsum("td,se,deio->tsio", PHASE_COEFFICIENTS[a], PHASE_COEFFICIENTS[b], kernel)
            np.testing.assert_allclose(np.asarray(phases[a][b]), want, rtol=1e-14, atol=1e-14)
    # Each upsampled sample is a convex combination: every kernel tap's weights sum to 1 over the phase taps.
    np.testing.assert_array_equal(PHASE_COEFFICIENTS.sum(axis=1), np.ones((2, 5)))
    kernels = polyphase_kernels(jnp.asarray(kernel))
    assert set(kernels) == {"phases", "top", "bottom", "left", "right", "flipped"}
    # The four phase kernels side by side (phase 2a + b in features [(2a + b) Cout, (2a + b + 1) Cout)).
    assert kernels["phases"].shape == (4, 4, 2, 4 * 3)
    for a in (0, 1):
        for b in (0, 1):
            np.testing.assert_array_equal(kernels["phases"][..., (2 * a + b) * 3:(2 * a + b + 1) * 3], phases[a][b])


@pytest.mark.parametrize("pads", [((1, 0), (0, 1)), ((0, 0), (2, 2)), ((2, 1), (0, 0))])
def test_conv_padded_gradients_are_autodiff_exactly(pads):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, 3)))
    kernel = jnp.asarray(rng.standard_normal((4, 3, 3, 2)))

    def plain(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, vjp = jax.vjp(lambda x, k: conv_padded(x, k, pads), x, kernel)
    y_ref, vjp_ref = jax.vjp(plain, x, kernel)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    cot = jnp.asarray(rng.standard_normal(y.shape))
    for got, want in zip(vjp(cot), vjp_ref(cot), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-13, atol=1e-13)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="5x5 kernel"):
        upsample2x_conv2d(jnp.zeros((1, 2, 2, 3)), {"kernel": jnp.zeros((3, 3, 3, 4))})
    with pytest.raises(ValueError, match="padding 2"):
        upsample2x_conv2d(jnp.zeros((1, 2, 2, 3)), {"kernel": jnp.zeros((5, 5, 3, 4))}, padding=1)
    with pytest.raises(ValueError, match=r"does not end in \[H, W, 3\]"):
        upsample2x_conv2d(jnp.zeros((1, 2, 2, 5)), {"kernel": jnp.zeros((5, 5, 3, 4))})


def test_counted_macs_of_the_fused_block():
    """4 phases x 16 taps on the low-resolution grid plus the four 1x5 / 5x1 ring corrections (2 outputs each)."""
    n, h, w, cin, cout = 2, 8, 6, 16, 8
    counted = macs.count_macs(upsample2x_conv2d, jax.ShapeDtypeStruct((n, h, w, cin), jnp.float32),
                              {"kernel": jax.ShapeDtypeStruct((5, 5, cin, cout), jnp.float32)})
    main = n * (h + 1) * (w + 1) * 16 * cin * (4 * cout)  # one conv for the four phases, one extra row/column
    ring = 2 * n * (2 * w) * 5 * cin * (2 * cout) + 2 * n * (2 * h) * 5 * cin * (2 * cout)
    dense = n * (2 * h) * (2 * w) * 25 * cin * cout
    assert counted == main + ring
    assert main / dense == pytest.approx(0.64 * (h + 1) * (w + 1) / (h * w))


def test_hybrid_macs_count_the_literal_up_blocks_either_way():
    """The evaluation's MAC table (and so the energy model) keeps the paper's dense count with the switch on."""
    on = macs.hybrid_macs(ModelConfig.preset("tiny"), 64, 32)
    off = macs.hybrid_macs(dataclasses.replace(ModelConfig.preset("tiny"), fused_upsample_conv=False), 64, 32)
    assert on == off
    assert on.snn_per_step["up1"] == 16 * 8 * 16 * 25 * 48  # out 16x8x16 (64x32 input / 4), 5x5 x 48 in


def _snn_run(cfg, params, stats, events, v0, out0):
    def loss(p):
        result, new_stats = snn_forward(p, stats, events, v0, out0, cfg, pure_snn=False, train=True)
        return jnp.sum(result.outputs ** 2) + jnp.sum(result.spike_counts), (result, new_stats)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def test_snn_uses_the_polyphase_form_from_the_minimum_size():
    """64x64 input: up1 runs on 8x8 (< FUSED_MIN_SIZE: dense), up2 / up3 on 16x16 / 32x32 (polyphase)."""
    cfg = ModelConfig.preset("tiny")
    params, stats = init_snn_params(jax.random.key(0), cfg, pure_snn=False)
    events = jax.ShapeDtypeStruct((1, 1, 64, 64, 2), jnp.float32)
    v0 = zero_state(cfg, 1, 64, 64)
    out0 = jnp.zeros((1, 64, 64, cfg.num_joints))

    def kernels(cfg):
        records = macs.mac_records(lambda e: snn_forward(params, stats, e, v0, out0, cfg, pure_snn=False,
                                                         train=False)[0].outputs, events)
        return [r.operand_shapes[1] for r in records]

    fused = kernels(cfg)
    assert snn_unet.FUSED_MIN_SIZE == 16
    assert (5, 5, 48, 16) in fused  # up1, dense
    assert fused.count((4, 4, 32, 4 * 12)) == 1 and fused.count((4, 4, 24, 4 * 8)) == 1  # up2, up3: 4 phases
    assert (4, 4, 32, 4 * 12) not in kernels(dataclasses.replace(cfg, fused_upsample_conv=False))


@pytest.mark.parametrize("snn_mode", ["layer", "step"])
def test_snn_with_the_switch_on_equals_off(snn_mode, monkeypatch):
    monkeypatch.setattr(snn_unet, "FUSED_MIN_SIZE", 1)  # every up block in polyphase form on this small input
    base = dataclasses.replace(ModelConfig.preset("tiny"), snn_mode=snn_mode, step_ms=10.0)
    params, stats = init_snn_params(jax.random.key(0), base, pure_snn=False, dtype=jnp.float64)
    params = jax.tree_util.tree_map(lambda p: 3.0 * p, params)  # enough drive for spikes in every layer
    rng = np.random.default_rng(5)
    t, b, h, w = 2, 2, 16, 24
    events = jnp.asarray(rng.poisson(0.6, (t, b, h, w, 2)).astype(np.float64))
    v0 = jax.tree_util.tree_map(lambda v: v + 0.5, zero_state(base, b, h, w, jnp.float64))
    out0 = jnp.zeros((b, h, w, base.num_joints), jnp.float64)
    runs = [_snn_run(dataclasses.replace(base, fused_upsample_conv=fused), params, stats, events, v0, out0)
            for fused in (True, False)]
    ((value_on, (res_on, stats_on)), grads_on), ((value_off, (res_off, stats_off)), grads_off) = runs
    assert float(jnp.sum(res_off.spike_counts[:, 6:])) > 0  # the up layers fire
    np.testing.assert_array_equal(np.asarray(res_on.spike_counts), np.asarray(res_off.spike_counts))
    assert _rel(res_on.outputs, res_off.outputs) < 1e-11
    assert value_on == pytest.approx(float(value_off), rel=1e-11)
    for a, b_ in zip(jax.tree_util.tree_leaves(stats_on), jax.tree_util.tree_leaves(stats_off), strict=True):
        assert _rel(a, b_) < 1e-11
    for name in ("up1", "up2", "up3", "static"):
        assert _rel(grads_on[name]["conv"]["kernel"], grads_off[name]["conv"]["kernel"]) < 1e-9, name
    # The parameters (and so the state_dict layout) are untouched by the switch.
    assert jax.tree_util.tree_structure(grads_on) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 2), (1, 1, 4, 2), (3, 2, 1, 1)])
def test_edge_pad_and_its_in_place_backward_equal_jnp_pad(shape):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal(shape))

    def reference(x):
        return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")

    np.testing.assert_array_equal(edge_pad1(x), reference(x))
    g = jnp.asarray(rng.standard_normal(reference(x).shape))
    np.testing.assert_allclose(jax.vjp(edge_pad1, x)[1](g)[0], jax.vjp(reference, x)[1](g)[0], rtol=0, atol=1e-14)
