r"""Surrogate spike functions: Heaviside forward, smooth derivative backward.

Every surrogate here is a ``jax.custom_vjp`` primitive ``spike(x) -> H(x)`` with ``H(0) = 1`` and a
hand-written backward pass ``g * dS/dx`` where ``dS/dx`` is the surrogate derivative below. ``x`` is the
distance of the membrane to the threshold, ``x = H - V_th``. The conventions (names and default alphas)
are SpikingJelly's, the library the official hybrid ANN-SNN code uses; other libraries use the same names
for different scalings (Spyx's "arctan" is ``1 / (pi (1 + (k pi x)^2))``), so check the formula, not the
name.

=====================  ======================================================  ==============
name                   surrogate derivative dS/dx                              default alpha
=====================  ======================================================  ==============
``atan``               (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)              2
``sigmoid``            alpha * sig(alpha x) * (1 - sig(alpha x))               4
``superspike``         1 / (1 + alpha * |x|)^2       (fast sigmoid)            10
``piecewise_quadratic`` alpha - alpha^2 |x| for |x| <= 1/alpha, else 0  (triangle)  1
``rect``               alpha for |x| < 1 / (2 alpha), else 0                   1
=====================  ======================================================  ==============
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

SurrogateGrad = Callable[[jax.Array, float], jax.Array]


def heaviside(x: jax.Array) -> jax.Array:
    """``H(x) = 1 if x >= 0 else 0`` in the dtype of ``x`` (SpikingJelly's convention H(0) = 1)."""
    return (x >= 0).astype(x.dtype)


def atan_grad(x: jax.Array, alpha: float) -> jax.Array:
    """dS/dx = (alpha / 2) / (1 + (pi / 2 * alpha * x)^2); the derivative of atan(pi/2 alpha x)/pi + 1/2."""
    return (alpha / 2.0) / (1.0 + jnp.square(math.pi / 2.0 * alpha * x))


def sigmoid_grad(x: jax.Array, alpha: float) -> jax.Array:
    """dS/dx = alpha * sig(alpha x) * (1 - sig(alpha x)); the derivative of sig(alpha x)."""
    s = jax.nn.sigmoid(alpha * x)
    return alpha * s * (1.0 - s)


def superspike_grad(x: jax.Array, alpha: float) -> jax.Array:
    """dS/dx = 1 / (1 + alpha |x|)^2 (SuperSpike, Zenke & Ganguli 2018; the "fast sigmoid")."""
    return 1.0 / jnp.square(1.0 + alpha * jnp.abs(x))


def piecewise_quadratic_grad(x: jax.Array, alpha: float) -> jax.Array:
    """dS/dx = alpha - alpha^2 |x| inside |x| <= 1/alpha, zero outside (a triangle of area 1)."""
    return jnp.where(jnp.abs(x) <= 1.0 / alpha, alpha - alpha * alpha * jnp.abs(x), 0.0).astype(x.dtype)


def rect_grad(x: jax.Array, alpha: float) -> jax.Array:
    """dS/dx = alpha inside |x| < 1 / (2 alpha), zero outside (a box of area 1)."""
    return jnp.where(jnp.abs(x) < 0.5 / alpha, alpha, 0.0).astype(x.dtype)


def atan_primitive(x: jax.Array, alpha: float) -> jax.Array:
    """S(x) = 1/2 + atan(pi/2 alpha x) / pi, whose derivative is :func:`atan_grad`."""
    return 0.5 + jnp.arctan(math.pi / 2.0 * alpha * x) / math.pi


def sigmoid_primitive(x: jax.Array, alpha: float) -> jax.Array:
    """S(x) = sig(alpha x), whose derivative is :func:`sigmoid_grad`."""
    return jax.nn.sigmoid(alpha * x)


# Smooth spike functions whose exact derivative is the surrogate (for a smooth forward pass).
SURROGATE_PRIMITIVES: dict[str, SurrogateGrad] = {"atan": atan_primitive, "sigmoid": sigmoid_primitive}

SURROGATE_GRADS: dict[str, SurrogateGrad] = {
    "atan": atan_grad,
    "sigmoid": sigmoid_grad,
    "superspike": superspike_grad,
    "piecewise_quadratic": piecewise_quadratic_grad,
    "rect": rect_grad,
}
DEFAULT_ALPHA: dict[str, float] = {
    "atan": 2.0,
    "sigmoid": 4.0,
    "superspike": 10.0,
    "piecewise_quadratic": 1.0,
    "rect": 1.0,
}


def surrogate_grad(name: str, x: jax.Array, alpha: float | None = None) -> jax.Array:
    """The surrogate derivative ``dS/dx`` of the named surrogate at ``x``."""
    return _grad_fn(name)(x, DEFAULT_ALPHA[name] if alpha is None else alpha)


def _grad_fn(name: str) -> SurrogateGrad:
    try:
        return SURROGATE_GRADS[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATE_GRADS)}") from None


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def spike(x: jax.Array, name: str = "atan", alpha: float | None = None) -> jax.Array:
    """``S = H(x)`` forward; backward ``g * dS/dx`` with the named surrogate (see the module table)."""
    _grad_fn(name)
    return heaviside(x)


def _spike_fwd(x, name, alpha):
    return spike(x, name, alpha), x


def _spike_bwd(name, alpha, x, g):
    return (g * surrogate_grad(name, x, alpha),)


spike.defvjp(_spike_fwd, _spike_bwd)


def _named(name: str):
    def fn(x: jax.Array, alpha: float | None = None) -> jax.Array:
        return spike(x, name, DEFAULT_ALPHA[name] if alpha is None else float(alpha))

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = (
        f"Heaviside spike with the ``{name}`` surrogate gradient (default alpha "
        f"{DEFAULT_ALPHA[name]}): {SURROGATE_GRADS[name].__doc__}"
    )
    return fn


atan = _named("atan")
sigmoid = _named("sigmoid")
superspike = _named("superspike")
piecewise_quadratic = _named("piecewise_quadratic")
rect = _named("rect")
