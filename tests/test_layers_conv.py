"""Convolution forms of hybridjax.models.layers: the matmul form for small maps equals the canonical convolution."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.eval import macs
from hybridjax.models.layers import conv2d, conv_as_matmul, conv_nhwc


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


# (height, width, kernel, stride, pad): maps smaller than, equal to and larger than the kernel; strides 1, 2.
CASES = [(2, 2, 3, 1, 1), (1, 1, 3, 1, 1), (4, 3, 5, 2, 2), (2, 2, 7, 1, 3), (5, 6, 3, 2, 1), (8, 8, 5, 1, 2)]


@pytest.mark.parametrize("case", CASES)
def test_matmul_form_equals_the_convolution_values_and_gradients(case):
    h, w, k, stride, pad = case
    rng = np.random.default_rng(sum(case))
    x = jnp.asarray(rng.normal(size=(3, h, w, 4)))
    kernel = jnp.asarray(rng.normal(size=(k, k, 4, 5)))
    pads = ((pad, pad), (pad, pad))

    def loss(fn):
        return lambda x, kernel: jnp.sum(jnp.sin(fn(x, kernel, stride, pads)))

    y_ref, y = conv_nhwc(x, kernel, stride, pads), conv_as_matmul(x, kernel, stride, pads)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    grads_ref = jax.grad(loss(conv_nhwc), (0, 1))(x, kernel)
    grads = jax.grad(loss(conv_as_matmul), (0, 1))(x, kernel)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-12)


def _primitives(fn, *args) -> set[str]:
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).eqns}


def test_conv2d_uses_the_matmul_form_only_for_maps_smaller_than_the_kernel():
    params = {"kernel": jnp.ones((3, 3, 8, 4)), "bias": jnp.zeros(4)}
    small, large = jnp.ones((2, 2, 2, 8)), jnp.ones((2, 4, 4, 8))
    assert "dot_general" in _primitives(lambda x: conv2d(x, params), small)
    assert "dot_general" not in _primitives(lambda x: conv2d(x, params), large)
    # Same function either way: the 2x2 map through conv2d equals the canonical convolution plus bias.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 2, 8)))
    np.testing.assert_allclose(conv2d(x, params), conv_nhwc(x, params["kernel"], 1, ((1, 1), (1, 1))), atol=1e-12)


def test_matmul_form_counts_the_same_macs_as_the_convolution():
    # The energy model counts padded taps (the paper's convention); the patches include them, so the MAC
    # counter sees the same number for either form: 2 x 2 x 2 outputs x 9 taps x 8 x 4.
    kernel, x = jnp.ones((3, 3, 8, 4)), jnp.ones((2, 2, 2, 8))
    expected = 2 * 2 * 2 * 9 * 8 * 4
    assert macs.count_macs(lambda x: conv_as_matmul(x, kernel, 1, ((1, 1), (1, 1))), x) == expected
    assert macs.count_macs(lambda x: conv_nhwc(x, kernel, 1, ((1, 1), (1, 1))), x) == expected
