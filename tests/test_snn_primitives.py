"""Spiking primitives: surrogate closed forms, the LIF custom VJP, time constants, the scan helper."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax import snn
from hybridjax.snn.scan import python_loop_steps

POINTS = np.array([-2.0, -0.7, -0.25, -0.1, 0.0, 0.1, 0.25, 0.49, 0.7, 2.0], np.float32)


def _closed_form(name, x, a):
    if name == "atan":
        return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-a * x))
        return a * s * (1 - s)
    if name == "superspike":
        return 1 / (1 + a * np.abs(x)) ** 2
    if name == "piecewise_quadratic":
        return np.where(np.abs(x) <= 1 / a, a - a * a * np.abs(x), 0.0)
    if name == "rect":
        return np.where(np.abs(x) < 0.5 / a, a, 0.0)
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(snn.SURROGATE_GRADS))
@pytest.mark.parametrize("alpha", [None, 3.0])
def test_surrogate_forward_is_heaviside_and_backward_is_closed_form(name, alpha):
    fn = getattr(snn, name)
    a = snn.DEFAULT_ALPHA[name] if alpha is None else alpha
    x = jnp.asarray(POINTS)
    np.testing.assert_array_equal(np.asarray(fn(x, alpha)), (POINTS >= 0).astype(np.float32))
    grad = jax.vmap(jax.grad(lambda v: fn(v, alpha)))(x)
    np.testing.assert_allclose(np.asarray(grad), _closed_form(name, POINTS.astype(np.float64), a), rtol=1e-5, atol=1e-6)
    # The backward scales the incoming cotangent.
    _, vjp = jax.vjp(lambda v: fn(v, alpha), x)
    np.testing.assert_allclose(np.asarray(vjp(2.5 * jnp.ones_like(x))[0]), 2.5 * np.asarray(grad), rtol=1e-6)


def test_surrogate_defaults_follow_spikingjelly():
    assert snn.DEFAULT_ALPHA == {"atan": 2.0, "sigmoid": 4.0, "superspike": 10.0, "piecewise_quadratic": 1.0,
                                 "rect": 1.0}
    # ATan at 0 with alpha 2 peaks at alpha / 2 = 1; each box/triangle surrogate integrates to 1.
    assert float(snn.surrogate_grad("atan", jnp.float32(0.0))) == pytest.approx(1.0)
    xs = jnp.linspace(-3, 3, 600001)
    for name in ("piecewise_quadratic", "rect", "sigmoid"):
        area = float(jnp.trapezoid(snn.surrogate_grad(name, xs), xs))
        assert area == pytest.approx(1.0, abs=1e-3), name
    # ATan's tails are heavy: its integral over [-3, 3] is (2 / pi) atan(pi / 2 * alpha * 3).
    area = float(jnp.trapezoid(snn.surrogate_grad("atan", xs), xs))
    assert area == pytest.approx(2 / math.pi * math.atan(math.pi / 2 * 2.0 * 3), abs=1e-4)
    with pytest.raises(ValueError, match="unknown surrogate"):
        snn.surrogate_grad("nope", xs)


def test_lif_step_forward_closed_form():
    p = snn.LIFParams(tau=2.0)
    v = jnp.array([0.0, 0.5, 1.0, -1.0])
    x = jnp.array([2.0, 1.5, 1.0, 0.0])
    h = v + (x - v) / 2.0  # [1.0, 1.0, 1.0, -0.5]; H(0) = 1 at exactly the threshold
    v_new, s = snn.lif_step(v, x, p)
    np.testing.assert_array_equal(np.asarray(s), [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(np.asarray(v_new), np.asarray(h) - np.asarray(s) * 1.0)
    v_hard, _ = snn.lif_step(v, x, snn.LIFParams(tau=2.0, reset="hard", v_reset=-0.2))
    np.testing.assert_allclose(np.asarray(v_hard), [-0.2, -0.2, -0.2, -0.5])


def _lif_loss(step_fn, params):
    def loss(v, x):
        total = 0.0
        for t in range(3):  # a few steps so gradients pass through the reset and the leak
            v, s = step_fn(v, x * (1.0 + 0.3 * t), params)
            total = total + jnp.sum(jnp.sin(1.7 * v + 0.3)) + jnp.sum(s * jnp.linspace(0.5, 1.5, s.size))
        return total

    return loss


LIF_VARIANTS = [(reset, detach) for reset in ("soft", "hard") for detach in (False, True)]


@pytest.mark.parametrize("reset,detach", LIF_VARIANTS)
def test_lif_custom_vjp_equals_autodiff_reference(reset, detach):
    params = snn.LIFParams(tau=3.0, reset=reset, detach_reset=detach, v_reset=0.1)
    key1, key2 = jax.random.split(jax.random.key(1))
    v = jax.random.normal(key1, (64,)) * 0.8
    x = jax.random.normal(key2, (64,)) * 1.5 + 0.8
    got = jax.grad(_lif_loss(snn.lif_step, params), argnums=(0, 1))(v, x)
    want = jax.grad(_lif_loss(snn.lif_step_autodiff, params), argnums=(0, 1))(v, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset,detach", LIF_VARIANTS)
@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_lif_custom_vjp_matches_finite_differences_with_smooth_forward(reset, detach, surrogate):
    params = snn.LIFParams(tau=3.0, reset=reset, detach_reset=detach, v_reset=0.1, surrogate=surrogate,
                           alpha=snn.DEFAULT_ALPHA[surrogate], smooth_forward=True)
    with jax.enable_x64(True):
        key1, key2 = jax.random.split(jax.random.key(2))
        v = jax.random.normal(key1, (16,), jnp.float64) * 0.8
        x = jax.random.normal(key2, (16,), jnp.float64) * 1.5 + 0.8
        loss = _lif_loss(snn.lif_step, params)
        if detach:
            # Finite differences see the true derivative; detach_reset removes the spike's reset term from
            # the gradient on purpose, so compare with the autodiff reference that does the same instead.
            want_v, want_x = jax.grad(_lif_loss(snn.lif_step_autodiff, params), argnums=(0, 1))(v, x)
        else:
            eps = 1e-6
            eye = jnp.eye(v.size, dtype=jnp.float64)
            want_v = jnp.array([(loss(v + eps * e, x) - loss(v - eps * e, x)) / (2 * eps) for e in eye])
            want_x = jnp.array([(loss(v, x + eps * e) - loss(v, x - eps * e)) / (2 * eps) for e in eye])
        got_v, got_x = jax.grad(loss, argnums=(0, 1))(v, x)
        np.testing.assert_allclose(np.asarray(got_v), np.asarray(want_v), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.asarray(got_x), np.asarray(want_x), rtol=1e-6, atol=1e-8)


def test_detach_reset_changes_only_the_reset_path():
    v, x = jnp.array([0.9]), jnp.array([1.4])
    g_attached = jax.grad(lambda x: snn.lif_step(v, x, snn.LIFParams())[0].sum())(x)
    g_detached = jax.grad(lambda x: snn.lif_step(v, x, snn.LIFParams(detach_reset=True))[0].sum())(x)
    h = 0.9 + (1.4 - 0.9) / 3.0
    sg = (2.0 / 2) / (1 + (math.pi / 2 * 2.0 * (h - 1.0)) ** 2)
    assert float(g_detached[0]) == pytest.approx(1 / 3.0, rel=1e-6)
    assert float(g_attached[0]) == pytest.approx((1 - sg) / 3.0, rel=1e-5)


def test_time_constants_share_one_physical_meaning():
    assert snn.tau_in_steps(3.0, 10.0) == 3.0  # the official numbers, bit-exact at 10 ms
    assert snn.per_step_retention(0.8, 10.0) == 0.8
    tau_1ms = snn.tau_in_steps(3.0, 1.0)
    # Ten 1 ms leaks equal one 10 ms leak: (1 - 1/tau_1)^10 = 1 - 1/3.
    assert (1 - 1 / tau_1ms) ** 10 == pytest.approx(2 / 3, rel=1e-12)
    assert snn.per_step_retention(0.8, 1.0) ** 10 == pytest.approx(0.8, rel=1e-12)
    assert snn.tau_in_steps(3.0, 5.0) == pytest.approx(1 / (1 - (2 / 3) ** 0.5))
    # A constant input charges a 1 ms neuron over 10 steps exactly as a 10 ms neuron in one step.
    v1 = 0.0
    for _ in range(10):
        v1 = v1 + (1.0 - v1) / tau_1ms
    assert v1 == pytest.approx(0.0 + (1.0 - 0.0) / 3.0, rel=1e-12)
    with pytest.raises(ValueError):
        snn.tau_in_steps(0.5, 1.0)


def _toy_step(w):
    params = snn.LIFParams(tau=2.5)

    def step(carry, x_t):
        v, acc = carry
        v, s = snn.lif_step(v, x_t @ w, params)
        return (v, acc + s.sum()), (s, v)

    return step


@pytest.mark.parametrize("remat", [False, True])
def test_scan_equals_python_loop_outputs_and_gradients(remat):
    key1, key2, key3 = jax.random.split(jax.random.key(3), 3)
    xs = jax.random.normal(key1, (7, 4, 5)) + 0.5
    w = jax.random.normal(key2, (5, 6))
    v0 = jax.random.normal(key3, (4, 6)) * 0.3

    def run(w, v0, looper):
        (v, acc), (s, vs) = looper(_toy_step(w), (v0, 0.0), xs)
        return jnp.sum(v * v) + acc + jnp.sum(jnp.cos(vs)), (v, s, vs)

    def scanned(step, init, xs):
        return snn.scan_steps(step, init, xs, remat=remat)

    (l1, o1), g1 = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(w, v0, scanned)
    (l2, o2), g2 = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(w, v0, python_loop_steps)
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves((o1, g1)), jax.tree_util.tree_leaves((o2, g2))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="remat_policy"):
        snn.scan_steps(_toy_step(w), (v0, 0.0), xs, remat=True, remat_policy="bogus")
