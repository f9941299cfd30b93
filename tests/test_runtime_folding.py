"""Inference-time parameter rewrites (BatchNorm folding, space-to-depth conv) and the streaming arg-max."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.metrics import argmax_landmarks
from hybridjax.models import ModelConfig, init_variables, snn_step
from hybridjax.models.layers import batch_norm, conv2d
from hybridjax.models.snn_unet import lif_shapes
from hybridjax.runtime.folding import (
    SpaceToDepthConv,
    fold_batch_norm,
    fold_batch_norms,
    folded_convs,
    space_to_depth_conv,
    streaming_snn_params,
)
from hybridjax.runtime.streaming import first_argmax_uv

CFG = ModelConfig.preset("tiny")


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


def _random_snn(rng):
    """Tiny hybrid SNN parameters in float64 with non-trivial BatchNorm affine maps and running statistics."""
    variables = init_variables("hybrid", CFG, jax.random.key(1))
    params, stats = {}, {}
    for name, block in variables["params"]["snn"].items():
        params[name] = {"conv": {"kernel": jnp.asarray(4.0 * np.asarray(block["conv"]["kernel"]), jnp.float64)}}
        if "bn" in block:
            c = block["bn"]["scale"].shape[0]
            params[name]["bn"] = {"scale": jnp.asarray(rng.uniform(0.5, 2.0, c)),
                                  "bias": jnp.asarray(rng.normal(0.0, 0.5, c))}
            stats[name] = {"mean": jnp.asarray(rng.normal(0.0, 0.5, c)), "var": jnp.asarray(rng.uniform(0.2, 3.0, c))}
    return params, stats


def test_fold_batch_norm_equals_conv_then_eval_batch_norm(float64):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)))
    conv = {"kernel": jnp.asarray(rng.normal(size=(3, 3, 3, 5))), "bias": jnp.asarray(rng.normal(size=5))}
    bn = {"scale": jnp.asarray(rng.uniform(0.5, 2, 5)), "bias": jnp.asarray(rng.normal(size=5))}
    stats = {"mean": jnp.asarray(rng.normal(size=5)), "var": jnp.asarray(rng.uniform(0.1, 2, 5))}
    expected, _ = batch_norm(conv2d(x, conv), bn, stats, train=False, reduce_axes=(0, 1, 2))
    folded = fold_batch_norm(conv, bn, stats)
    np.testing.assert_allclose(conv2d(x, folded), expected, rtol=0, atol=1e-12)
    # closed form of one channel: bias' = beta + (b - mu) * gamma / sqrt(var + eps)
    gain = float(bn["scale"][2]) / np.sqrt(float(stats["var"][2]) + 1e-5)
    assert float(folded["bias"][2]) == pytest.approx(float(bn["bias"][2]) + (float(conv["bias"][2])
                                                                            - float(stats["mean"][2])) * gain)


@pytest.mark.parametrize("kernel,stride,cin", [(5, 1, 2), (5, 2, 3), (3, 1, 4), (3, 2, 2), (1, 1, 3)])
def test_space_to_depth_conv_equals_conv2d(float64, kernel, stride, cin):
    rng = np.random.default_rng(kernel + stride)
    x = jnp.asarray(rng.normal(size=(2, 3, 12, 8, cin)))  # leading [T, B] axes, as conv2d accepts
    conv = {"kernel": jnp.asarray(rng.normal(size=(kernel, kernel, cin, 6))), "bias": jnp.asarray(rng.normal(size=6))}
    s2d = space_to_depth_conv(conv, stride=stride)
    assert isinstance(s2d, SpaceToDepthConv) and s2d.kernel.shape[2] == 4 * cin
    np.testing.assert_allclose(s2d(x, stride=stride), conv2d(x, conv, stride=stride), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="stride"):
        s2d(x, stride=stride + 1)
    with pytest.raises(ValueError, match="multiple of the block size"):
        s2d(x[..., :11, :, :], stride=stride)


def test_folded_snn_step_equals_the_eval_step(float64):
    rng = np.random.default_rng(2)
    params, stats = _random_snn(rng)
    h = w = 32
    v = {n: jnp.asarray(rng.normal(0.0, 0.7, (1,) + s)) for n, s in lif_shapes(CFG, h, w).items()}
    out = jnp.asarray(rng.normal(size=(1, h, w, CFG.num_joints)))
    x = jnp.asarray(rng.poisson(1.0, (1, h, w, 2)).astype(np.float64))
    (v_ref, out_ref), ref = snn_step(params, stats, (v, out), x, CFG, pure_snn=False)
    assert float(jnp.min(ref["spike_counts"])) > 0  # every layer fires: the comparison exercises the spikes
    folded = ((fold_batch_norms(params, stats), folded_convs(CFG)),
              (streaming_snn_params(params, stats), folded_convs(CFG, space_to_depth=("static",))))
    for (folded_params, folded_stats), convs in folded:
        assert all("bn" not in block for block in folded_params.values()) and folded_stats == {}
        (v_new, out_new), new = snn_step(folded_params, folded_stats, (v, out), x, CFG, pure_snn=False,
                                         convs=convs)
        np.testing.assert_array_equal(new["spike_counts"], ref["spike_counts"])
        np.testing.assert_allclose(out_new, out_ref, rtol=0, atol=1e-12)
        for name in v_ref:
            np.testing.assert_allclose(v_new[name], v_ref[name], rtol=0, atol=1e-12)
    assert isinstance(streaming_snn_params(params, stats)[0]["static"]["conv"], SpaceToDepthConv)


def test_pure_snn_head_batch_norm_is_kept():
    variables = init_variables("snn", CFG, jax.random.key(0))
    folded, kept = fold_batch_norms(variables["params"]["snn"], variables["batch_stats"]["snn"])
    assert "bn" in folded["head"] and set(kept) == {"head"} and "bn" not in folded["up3"]


def test_first_argmax_uv_equals_argmax_landmarks_with_ties_and_nan():
    rng = np.random.default_rng(3)
    maps = rng.integers(0, 4, size=(2, 6, 5, 4)).astype(np.float32)  # many ties of the maximum
    maps[1, 3, 2, 1] = np.nan
    maps[0, :, :, 3] = -np.inf
    got, expected = first_argmax_uv(jnp.asarray(maps)), argmax_landmarks(jnp.asarray(maps))
    np.testing.assert_array_equal(got, expected)
    assert got[1, 1].tolist() == [2.0, 3.0] and got[0, 3].tolist() == [0.0, 0.0]
