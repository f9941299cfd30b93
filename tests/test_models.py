"""Models: execution modes agree, BatchNorm modes, shapes and layout checks, losses and metrics."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax import losses, metrics
from hybridjax.models import LIF_LAYERS, HybridModel, ModelConfig, SNNModel, init_variables, lif_shapes
from hybridjax.models.layers import BN_MOMENTUM, update_running_stats, upsample_bilinear2x

TINY = ModelConfig.preset("tiny")


def _inputs(t=4, b=2, h=32, w=64, seed=0):
    rng = np.random.default_rng(seed)
    ann = jnp.asarray(rng.uniform(0, 3, (b, h, w, 20)), jnp.float32)
    events = jnp.asarray(rng.poisson(0.6, (t, b, h, w, 2)), jnp.float32)
    return ann, events


@pytest.fixture(scope="module")
def tiny_hybrid():
    ann, events = _inputs()
    variables = init_variables("hybrid", TINY, jax.random.key(1))
    # Non-trivial running statistics so eval mode differs from train mode.
    variables = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if "mean" in jax.tree_util.keystr(p) else x, variables)
    return variables, ann, events


def _train_loss_and_grads(cfg, variables, ann, events):
    model = HybridModel(cfg)

    def loss_fn(params):
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        out, new = model.apply(v, ann, events, train=True, mutable=["batch_stats"])
        target = jnp.linspace(0, 1, out.heatmaps.size).reshape(out.heatmaps.shape)
        loss = jnp.mean((out.heatmaps - target) ** 2) + 0.1 * sum(jnp.mean(x ** 2) for x in out.v_last.values())
        return loss, (out, new)

    return jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])


@pytest.fixture(scope="module")
def train_results(tiny_hybrid):
    """Loss, outputs, new statistics and gradients per (snn_mode, remat), each compiled once."""
    variables, ann, events = tiny_hybrid
    cache = {}

    def get(mode, remat=False):
        if (mode, remat) not in cache:
            cfg = dataclasses.replace(TINY, snn_mode=mode, remat=remat)
            cache[mode, remat] = jax.jit(lambda v, a, e: _train_loss_and_grads(cfg, v, a, e))(variables, ann, events)
        return cache[mode, remat]

    return get


def test_layer_mode_equals_step_mode_outputs_and_gradients(tiny_hybrid, train_results):
    (l1, (o1, s1)), g1 = train_results("layer")
    (l2, (o2, s2)), g2 = train_results("step")
    assert float(l1) == pytest.approx(float(l2), rel=1e-5)
    np.testing.assert_array_equal(np.asarray(o1.spike_counts), np.asarray(o2.spike_counts))
    assert float(jnp.sum(o1.spike_counts)) > 0, "the test must exercise spikes"
    np.testing.assert_allclose(np.asarray(o1.heatmaps), np.asarray(o2.heatmaps), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves((g1, s1)), jax.tree_util.tree_leaves((g2, s2))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)
    # Eval mode (running statistics) agrees too.
    variables, ann, events = tiny_hybrid
    e1, e2 = (jax.jit(HybridModel(dataclasses.replace(TINY, snn_mode=m)).apply)(variables, ann, events)
              for m in ("layer", "step"))
    np.testing.assert_array_equal(np.asarray(e1.spike_counts), np.asarray(e2.spike_counts))
    np.testing.assert_allclose(np.asarray(e1.heatmaps), np.asarray(e2.heatmaps), rtol=1e-4, atol=1e-5)


def test_remat_does_not_change_gradients(train_results):
    (_, _), g1 = train_results("step")
    (_, _), g2 = train_results("step", remat=True)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_hybrid_shapes_and_bookkeeping(tiny_hybrid):
    variables, ann, events = tiny_hybrid
    out = jax.jit(lambda v, a, e: HybridModel(TINY).apply(v, a, e, record_membranes=True))(variables, ann, events)
    t, b, h, w, _ = events.shape
    assert out.heatmaps.shape == (t, b, h, w, 13)
    assert out.ann_heatmap.shape == (b, h, w, 13)
    assert out.spike_counts.shape == (t, 9, b) and out.spike_rates.shape == (t, 9)
    shapes = lif_shapes(TINY, h, w)
    for i, layer in enumerate(LIF_LAYERS):
        assert out.v_init[layer].shape == (b,) + shapes[layer]
        assert out.membranes[layer].shape == (t, b) + shapes[layer]
        np.testing.assert_array_equal(np.asarray(out.membranes[layer][-1]), np.asarray(out.v_last[layer]))
        neurons = np.prod(shapes[layer])
        np.testing.assert_allclose(np.asarray(out.spike_rates[:, i]),
                                   np.asarray(out.spike_counts[:, i].mean(axis=-1)) / neurons, rtol=1e-5)
    # Output integration: out_0 = decay * ANN + head_0, so with the ANN output subtracted the rest is the SNN's.
    zeros = HybridModel(TINY).apply(variables, ann, events, init_mode="zeros")
    assert not np.allclose(np.asarray(zeros.heatmaps), np.asarray(out.heatmaps))
    with pytest.raises(ValueError, match="init_mode"):
        HybridModel(TINY).apply(variables, ann, events, init_mode="bogus")


def test_output_integration_closed_form(tiny_hybrid):
    variables, ann, events = tiny_hybrid
    cfg = dataclasses.replace(TINY, step_ms=10.0)
    out = HybridModel(cfg).apply(variables, ann, events)
    # Zero the head: the output is the ANN heatmap decayed by 0.8 per 10 ms step.
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    params["snn"]["head"]["conv"]["kernel"] = jnp.zeros_like(params["snn"]["head"]["conv"]["kernel"])
    silent = HybridModel(cfg).apply({"params": params, "batch_stats": variables["batch_stats"]}, ann, events)
    for k in range(events.shape[0]):
        np.testing.assert_allclose(np.asarray(silent.heatmaps[k]), 0.8 ** (k + 1) * np.asarray(out.ann_heatmap),
                                   rtol=1e-5, atol=1e-6)


def test_batchnorm_train_mode_returns_updated_running_statistics(tiny_hybrid):
    variables, ann, events = tiny_hybrid
    model = HybridModel(TINY)
    out_eval = model.apply(variables, ann, events)
    out_train, updated = model.apply(variables, ann, events, train=True, mutable=["batch_stats"])
    assert not np.allclose(np.asarray(out_eval.heatmaps), np.asarray(out_train.heatmaps))
    old = variables["batch_stats"]["snn"]["static"]["mean"]
    new = updated["batch_stats"]["snn"]["static"]["mean"]
    assert not np.allclose(np.asarray(old), np.asarray(new))
    # The static layer's conv input is the event tensor: its per-step batch means are computable by hand.
    conv = jax.lax.conv_general_dilated(events.reshape((-1,) + events.shape[2:]),
                                        variables["params"]["snn"]["static"]["conv"]["kernel"], (1, 1),
                                        ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    step_means = conv.reshape(events.shape[:2] + conv.shape[1:]).mean(axis=(1, 2, 3))
    want = old
    for t in range(events.shape[0]):
        want = (1 - BN_MOMENTUM) * want + BN_MOMENTUM * step_means[t]
    np.testing.assert_allclose(np.asarray(new), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_sequential_running_stats_closed_form():
    running = {"mean": jnp.array([0.5, -1.0]), "var": jnp.array([1.0, 2.0])}
    batch = {"mean": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "var": jnp.array([[1.0, 1.0]] * 3)}
    got = update_running_stats(running, batch, sequential_axis=True)
    want = dict(running)
    for t in range(3):
        want = {k: 0.9 * want[k] + 0.1 * batch[k][t] for k in want}
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-6)


def test_pure_snn_shapes_and_integrator():
    _, events = _inputs(t=3, b=1, h=32, w=32)
    model = SNNModel(dataclasses.replace(TINY, step_ms=10.0))
    variables = init_variables("snn", TINY, jax.random.key(0))
    assert "head" in variables["params"]["snn"] and "bn" in variables["params"]["snn"]["head"]
    out = jax.jit(model.apply)(variables, events)
    assert out.heatmaps.shape == (3, 1, 32, 32, 13)
    assert out.spike_counts.shape == (3, 9, 1)


def test_layout_and_resolution_errors(tiny_hybrid):
    variables, ann, events = tiny_hybrid
    model = HybridModel(TINY)
    with pytest.raises(ValueError, match="events.*time-major"):
        model.apply(variables, ann, events[0])
    with pytest.raises(ValueError, match="ann_input.*channels"):
        model.apply(variables, ann[..., :3], events)
    with pytest.raises(ValueError, match="multiple of 32"):
        model.apply(variables, ann[:, :20], events[:, :, :20])
    with pytest.raises(ValueError, match="snn_mode"):
        ModelConfig(snn_mode="fast")
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")


def test_presets_reproduce_official_neuron_numbers():
    paper = ModelConfig.preset("paper")
    assert paper.lif().tau == 3.0 and paper.lif(pure_snn=True).tau == 2.0 and paper.output_decay == 0.8
    assert paper.ann_widths == (32, 64, 128, 256, 512, 512) and paper.snn_widths == (32, 64, 128, 256)
    one_ms = ModelConfig.preset("paper_1ms")
    assert one_ms.output_decay ** 10 == pytest.approx(0.8)
    assert (1 - 1 / one_ms.lif().tau) ** 10 == pytest.approx(2 / 3)


def test_upsample_matches_align_corners_false():
    x = jnp.arange(12.0).reshape(1, 3, 4, 1)
    y = np.asarray(upsample_bilinear2x(x))[0, ..., 0]
    # Reference: PyTorch align_corners=False samples source (i + 0.5) / 2 - 0.5, clamped to the border.
    def ref_axis(n):
        src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, src - lo
    r_lo, r_hi, r_f = ref_axis(3)
    c_lo, c_hi, c_f = ref_axis(4)
    xn = np.asarray(x)[0, ..., 0]
    rows = xn[r_lo] * (1 - r_f)[:, None] + xn[r_hi] * r_f[:, None]
    want = rows[:, c_lo] * (1 - c_f) + rows[:, c_hi] * c_f
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_landmarks_to_onehot_and_targets():
    lm = jnp.array([[[3.7, 5.2], [jnp.nan, 1.0], [40.0, 2.0]]])  # (u, v); NaN and out-of-range are missing
    maps = losses.landmarks_to_onehot(lm, 16, 32)
    assert maps.shape == (1, 16, 32, 3)
    assert float(maps[0, 5, 3, 0]) == 1.0 and float(maps.sum()) == 1.0
    targets = losses.gaussian_targets(maps)
    assert float(targets[0, 5, 3, 0]) == pytest.approx(1.0)
    assert float(targets[0, 5, 4, 0]) == pytest.approx(np.exp(-1 / 8), rel=1e-5)  # one pixel away, sigma 2
    assert float(jnp.abs(targets[..., 1:]).sum()) == 0.0


def test_hybrid_loss_weights_and_step_mask():
    t, b, h, w, j = 3, 1, 8, 8, 2
    pred = jnp.zeros((t, b, h, w, j))
    target = jnp.stack([jnp.full((b, h, w, j), float(k + 1)) for k in range(t)])
    v = {n: jnp.ones((b, 2, 2, 1)) for n in LIF_LAYERS}
    v_t = {n: jnp.zeros((b, 2, 2, 1)) for n in LIF_LAYERS}
    loss, parts = losses.hybrid_loss(pred, target, v_t, v)
    assert float(parts["out_loss"]) == pytest.approx((1 + 4 + 9) / 3)
    assert float(parts["mp_loss"]) == pytest.approx(1.0)
    assert float(loss) == pytest.approx(0.95 * 14 / 3 + 0.05)
    _, masked = losses.hybrid_loss(pred, target, v_t, v, step_mask=jnp.array([False, True, False]))
    assert float(masked["out_loss"]) == pytest.approx(4.0)


def test_argmax_landmarks_and_nan_aware_mpjpe():
    heat = jnp.zeros((2, 8, 10, 2))
    heat = heat.at[0, 3, 7, 0].set(1.0).at[0, 5, 1, 1].set(1.0).at[1, 0, 0, 0].set(1.0).at[1, 7, 9, 1].set(1.0)
    uv = metrics.argmax_landmarks(heat)
    np.testing.assert_array_equal(np.asarray(uv), [[[7, 3], [1, 5]], [[0, 0], [9, 7]]])
    true = jnp.array([[[7.0, 6.0], [jnp.nan, jnp.nan]], [[4.0, 0.0], [9.0, 7.0]]])
    assert float(metrics.mpjpe_2d(uv, true)) == pytest.approx((3 + 4 + 0) / 3)
    np.testing.assert_allclose(np.asarray(metrics.mpjpe_2d(uv, true, axis=-1)), [3.0, 2.0])
    assert np.isnan(float(metrics.mpjpe_2d(uv[:1, 1:], true[:1, 1:])))
