"""bfloat16 mixed precision (ModelConfig.compute_dtype): error bounds of the convolutions, golden-file agreement.

Operands rounded to bfloat16 (8 significant bits: unit roundoff u = 2^-8) and products accumulated in float32
give, for a bilinear map F (a convolution) of x and W,

    |F_mixed(x, W) - F(x, W)| <= (2u + u^2) F(|x|, |W|) + (float32 accumulation, ~K 2^-24 F(|x|, |W|)),

and the same for each gradient (the cotangent g is rounded too): |g_x error| <= (2u + u^2) F^T_x(|g|, |W|),
|g_W error| <= (2u + u^2) F^T_W(|x|, |g|). The bounds are computed in float64 by applying the same map (and its
VJP) to absolute values. For the whole hybrid, against the official float64 golden outputs, see the model tests.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_parity import _hybrid_train_loss, _official_weights  # tests/ is on the path (pytest rootdir)

from hybridjax import convert, layout, losses
from hybridjax.models import INITIALISER_SOURCES, HybridModel, ModelConfig
from hybridjax.models.layers import conv2d, upsample_bilinear2x
from hybridjax.models.snn_unet import BlockConvs
from hybridjax.models.upconv import upsample2x_conv2d

U_BF16 = 2.0 ** -8
MIXED_BOUND = 2 * U_BF16 + U_BF16 ** 2 + 1e-5  # + float32 accumulation over <= 1e3 terms


def _dense_upconv(x, params):
    return conv2d(upsample_bilinear2x(x), params, padding=2)


CASES = {
    "conv5x5": (lambda x, p, od=None: conv2d(x, p, operand_dtype=od), (2, 12, 12, 6), (5, 5, 6, 10), 1.0),
    "conv5x5_stride2": (lambda x, p, od=None: conv2d(x, p, stride=2, operand_dtype=od), (2, 12, 12, 6),
                        (5, 5, 6, 10), 1.0),
    "conv3x3_small_map_im2col": (lambda x, p, od=None: conv2d(x, p, operand_dtype=od), (2, 2, 2, 8),
                                 (3, 3, 8, 5), 1.0),
    # the polyphase form rounds its phase and ring kernels (non-negative combinations of K) and subtracts the
    # ring corrections: at most twice the dense composition's bound
    "upsample_conv_polyphase": (lambda x, p, od=None: upsample2x_conv2d(x, p, operand_dtype=od)
                                if od is not None else _dense_upconv(x, p), (2, 16, 16, 6), (5, 5, 6, 4), 2.0),
}


def _value_and_vjp(fn):
    """``(x, kernel, g) -> (fn(x, kernel), g^T d/dx, g^T d/dkernel)``, compiled once."""
    def run(x, kernel, g):
        y, vjp = jax.vjp(lambda x, k: fn(x, {"kernel": k}), x, kernel)
        return (y, *vjp(g))

    return jax.jit(run)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_convolutions_and_their_gradients_stay_within_the_operand_rounding_bound(name):
    fn, x_shape, k_shape, factor = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape)
    kernel = rng.normal(size=k_shape) * 0.2
    # the same bilinear maps on absolute values (the dense composition for the up-convolution) give the bounds
    if name == "upsample_conv_polyphase":
        dense = _dense_upconv
    elif name == "conv5x5_stride2":
        def dense(x, p):
            return conv2d(x, p, stride=2)
    else:
        dense = conv2d
    with jax.enable_x64(True):
        g = rng.normal(size=jax.eval_shape(fn, jnp.asarray(x), {"kernel": jnp.asarray(kernel)}).shape)
        exact = _value_and_vjp(fn)(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(g))
        bounds = _value_and_vjp(dense)(*(jnp.abs(jnp.asarray(a)) for a in (x, kernel, g)))
        exact, bounds = (tuple(np.asarray(a) for a in t) for t in (exact, bounds))
    mixed = _value_and_vjp(lambda x, p: fn(x, p, jnp.bfloat16))(
        *(jnp.asarray(a, jnp.float32) for a in (x, kernel, g)))
    assert all(a.dtype == jnp.float32 for a in mixed)
    for got, want, bound in zip(mixed, exact, bounds):
        err = np.abs(np.asarray(got, np.float64) - want)
        limit = factor * MIXED_BOUND * bound + 1e-6
        assert np.all(err <= limit), float(np.max(err / limit))
        # and bf16 really was used: the error is far above float32 rounding somewhere
        assert np.max(err / (bound + 1e-12)) > 1e-4


def test_compute_dtype_is_validated_and_maps_to_the_operand_type():
    assert ModelConfig().operand_dtype is None
    assert ModelConfig(compute_dtype="bfloat16").operand_dtype == jnp.bfloat16
    # the spiking U-Net's conv implementation takes it (BlockConvs: the SNN blocks and the head)
    assert BlockConvs.of(ModelConfig(compute_dtype="bfloat16")).operand_dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="compute_dtype"):
        ModelConfig(compute_dtype="float16")


@pytest.fixture(scope="module")
def golden_hybrid(shared_dir):
    sd = _official_weights(shared_dir, "hybrid_cnn_snn.keys.txt")
    variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), convert.convert_state_dict(sd, "hybrid"))
    cfg = dataclasses.replace(convert.infer_config(sd, "hybrid"), step_ms=10.0, compute_dtype="bfloat16")
    root = shared_dir / "reference" / "golden"
    return variables, cfg, dict(np.load(root / "hybrid_eval.npz")), dict(np.load(root / "hybrid_train.npz"))


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_bf16_hybrid_eval_against_the_float64_golden(golden_hybrid):
    """Measured (paper widths, 64x64, batch 2, 5 steps): ANN heatmap 6.2e-3 and v_init 8.7e-3 max relative error
    (no thresholds in between: bf16 rounding through 21 convolutions); 0.26% of all spikes flipped (per layer at
    most 1.0%), heatmap relative L2 error 0.12-0.14 per step. The golden weights make 30-53% of the neurons fire
    per step with BatchNorm gains of 4.5-10 (running variances 0.01-0.05), so every flipped spike moves hundreds of
    downstream membranes by O(1): the heatmap error is that of the flips (float32 flips none: 1.3e-7)."""
    variables, cfg, g, _ = golden_hybrid
    ann_input = jnp.asarray(layout.from_official_image(g["ann_input"]), jnp.float32)
    events = jnp.asarray(layout.from_official_sequence(g["snn_input"]), jnp.float32)
    out = jax.jit(HybridModel(cfg).apply)(variables, ann_input, events)
    assert out.heatmaps.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in out.v_last.values())
    ann_error = _max_rel(out.ann_heatmap, layout.from_official_image(g["ann_heatmap"]))
    assert 1e-4 < ann_error <= 2e-2  # bf16 really reached the ANN (float32: 9.6e-7)
    for layer, (_, _, key) in INITIALISER_SOURCES.items():
        assert _max_rel(out.v_init[layer], layout.from_official_image(g[f"v_init:{key}"])) <= 2e-2, layer
    counts, want = np.asarray(out.spike_counts), g["spike_counts"]
    flipped = np.abs(counts - want)
    assert 0 < flipped.sum() / want.sum() <= 1e-2  # bf16 really reached the SNN (float32 flips none)
    assert np.all(flipped.sum(axis=(0, 2)) <= 2.5e-2 * want.sum(axis=(0, 2)))
    heat = np.moveaxis(g["heatmaps"], 2, -1)
    per_step = heat.shape[0], -1
    rel_l2 = (np.linalg.norm((np.asarray(out.heatmaps) - heat).reshape(per_step), axis=1)
              / np.linalg.norm(heat.reshape(per_step), axis=1))
    assert np.all(rel_l2 <= 0.3), rel_l2


@pytest.mark.slow  # ~35 CPU-s (paper widths, forward + backward); the tiny bf16 training step runs in test_bench_suite
def test_bf16_hybrid_training_loss_and_gradients_against_the_float64_golden(golden_hybrid):
    """Train mode (BatchNorm batch statistics per step), the official loss over 3 steps. Measured: loss 5.6e-3
    relative error (float32: 2.7e-3; spikes flip in train mode in float32 too), median relative error of the 88
    gradient norms 2.6% (float32: 1.8%); every gradient float32."""
    variables, cfg, g, gt = golden_hybrid
    steps = int(gt["train_steps"])
    ann_input = jnp.asarray(layout.from_official_image(g["ann_input"]), jnp.float32)
    events = jnp.asarray(layout.from_official_sequence(g["snn_input"]), jnp.float32)[:steps]
    ann_next = jnp.asarray(layout.from_official_image(gt["ann_input_next"]), jnp.float32)
    targets = losses.gaussian_targets(jnp.asarray(np.transpose(gt["labels"], (1, 0, 3, 4, 2)), jnp.float32))
    trainable = {k: variables["params"][k] for k in ("initialisers", "snn")}
    loss_fn = _hybrid_train_loss(HybridModel(cfg), variables["params"]["ann"], variables["batch_stats"], ann_input,
                                 events, ann_next, targets)
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(trainable)
    assert loss.dtype == jnp.float32 and all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(grads))
    assert abs(float(loss) - float(gt["loss"])) <= 2e-2 * float(gt["loss"])
    official = convert.export_state_dict({"params": grads}, "hybrid")
    norms = {k[5:]: float(v) for k, v in gt.items() if k.startswith("norm:")}
    largest = max(norms.values())
    rel = [abs(float(np.linalg.norm(official[k])) - w) / w for k, w in norms.items() if w >= 1e-12 * largest]
    assert np.median(rel) <= 0.1 and max(rel) <= 0.5, (np.median(rel), max(rel))
