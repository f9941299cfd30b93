r"""Leaky integrate-and-fire dynamics as small pure functions.

One step of a LIF neuron with input current ``X`` (conv -> BatchNorm output), membrane ``V``, time
constant ``tau`` (in steps) and threshold ``V_th``, as SpikingJelly's ``LIFNode(decay_input=True,
v_reset=None)`` computes it:

.. math::

    H &= V + (X - V) / \tau                      &\text{(charge: leak toward X)}\\
    S &= \Theta(H - V_{th})                      &\text{(fire, } \Theta(0) = 1)\\
    V' &= H - S\,V_{th}                          &\text{(soft reset)}\\
    V' &= (1 - S)\,H + S\,V_{reset}              &\text{(hard reset)}

``detach_reset`` treats ``S`` as a constant inside the reset term (its gradient still flows through the
spike output). :func:`lif_step` is a ``jax.custom_vjp`` primitive with the backward pass written out:
with ``sg = dS/dx`` the surrogate derivative at ``x = H - V_th`` and cotangents ``gV'`` and ``gS``,

.. math::

    g_H &= gV' \frac{\partial V'}{\partial H} + (gS + gV' \frac{\partial V'}{\partial S})\, sg\\
    \text{soft: } & \partial V'/\partial H = 1,\ \partial V'/\partial S = -V_{th}\\
    \text{hard: } & \partial V'/\partial H = 1 - S,\ \partial V'/\partial S = V_{reset} - H\\
    g_V &= g_H (1 - 1/\tau), \quad g_X = g_H / \tau

(``partial V'/partial S = 0`` under ``detach_reset``).

Time constants carry one physical meaning across step lengths: :class:`LIFParams` is built from the
official per-10-ms values, and :func:`per_step_retention` converts a retention factor (the fraction of
the membrane kept over one step, ``1 - 1/tau``) to another step length so that the leak over 10 ms is the
same at 1 ms or 10 ms steps. At 10 ms steps the official numbers come out exactly.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from hybridjax.snn.surrogate import SURROGATE_PRIMITIVES, heaviside, spike, surrogate_grad

# The official bin length: the paper's tau and output decay are given per 10 ms step.
REFERENCE_STEP_MS = 10.0


def per_step_retention(retention_at_reference: float, step_ms: float,
                       reference_ms: float = REFERENCE_STEP_MS) -> float:
    """Retention per step of ``step_ms`` for a leak that keeps ``retention_at_reference`` per ``reference_ms``.

    ``r_step = r_ref ** (step_ms / reference_ms)``; returns ``r_ref`` itself (bit-exact) when the steps agree.
    """
    if step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms}")
    if step_ms == reference_ms:
        return float(retention_at_reference)
    return float(retention_at_reference) ** (step_ms / reference_ms)


def tau_in_steps(tau_at_reference: float, step_ms: float, reference_ms: float = REFERENCE_STEP_MS) -> float:
    """The LIF ``tau`` (in steps of ``step_ms``) with the same leak over ``reference_ms`` as ``tau_at_reference``.

    ``1 - 1/tau_step = (1 - 1/tau_ref) ** (step_ms / reference_ms)``; e.g. the hybrid's tau 3 at 10 ms is
    tau 25.16 at 1 ms.
    """
    if tau_at_reference < 1.0:
        raise ValueError(f"tau must be >= 1 step (the charge overshoots otherwise), got {tau_at_reference}")
    if step_ms == reference_ms:
        return float(tau_at_reference)
    retention = per_step_retention(1.0 - 1.0 / tau_at_reference, step_ms, reference_ms)
    return 1.0 / (1.0 - retention)


@dataclasses.dataclass(frozen=True)
class LIFParams:
    """Static neuron settings (hashable: they are ``nondiff`` arguments of the primitives)."""

    tau: float = 3.0  # membrane time constant in steps (charge H = V + (X - V) / tau)
    v_threshold: float = 1.0  # firing threshold V_th
    reset: str = "soft"  # "soft" (subtract V_th) or "hard" (set to v_reset)
    v_reset: float = 0.0  # membrane after a spike under the hard reset
    detach_reset: bool = False  # treat the spike as a constant in the reset term
    surrogate: str = "atan"  # surrogate gradient name (hybridjax.snn.surrogate)
    alpha: float = 2.0  # surrogate sharpness
    # Forward with the surrogate's smooth primitive instead of the Heaviside (atan / sigmoid only): the
    # backward pass is then the exact derivative; used to check the hand-written VJP by finite differences.
    smooth_forward: bool = False

    def __post_init__(self):
        if self.reset not in ("soft", "hard"):
            raise ValueError(f"LIFParams.reset must be 'soft' or 'hard', got {self.reset!r}")
        if self.tau < 1.0:
            raise ValueError(f"LIFParams.tau must be >= 1, got {self.tau}")
        if self.smooth_forward and self.surrogate not in SURROGATE_PRIMITIVES:
            raise ValueError(f"LIFParams.smooth_forward needs one of {sorted(SURROGATE_PRIMITIVES)}")


def charge(v: jax.Array, x: jax.Array, tau: float) -> jax.Array:
    """``H = V + (X - V) / tau``: the leaky charge toward the input current (no resting potential)."""
    return v + (x - v) / tau


def _fire_and_reset(h: jax.Array, p: LIFParams) -> tuple[jax.Array, jax.Array]:
    if p.smooth_forward:
        s = SURROGATE_PRIMITIVES[p.surrogate](h - p.v_threshold, p.alpha)
    else:
        s = heaviside(h - p.v_threshold)
    if p.reset == "soft":
        v_new = h - s * p.v_threshold
    else:
        v_new = (1.0 - s) * h + s * p.v_reset
    return v_new, s


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def lif_step(v: jax.Array, x: jax.Array, params: LIFParams) -> tuple[jax.Array, jax.Array]:
    """One LIF step: returns ``(V', S)`` (see the module docstring for the equations and the backward)."""
    return _fire_and_reset(charge(v, x, params.tau), params)


def _lif_fwd(v, x, params):
    h = charge(v, x, params.tau)
    v_new, s = _fire_and_reset(h, params)
    return (v_new, s), (h, s)


def _lif_bwd(params, residuals, cotangents):
    h, s = residuals
    g_v_new, g_s = cotangents
    sg = surrogate_grad(params.surrogate, h - params.v_threshold, params.alpha)
    if params.reset == "soft":
        dv_dh = 1.0
        dv_ds = -params.v_threshold
    else:
        dv_dh = 1.0 - s
        dv_ds = params.v_reset - h
    if params.detach_reset:
        dv_ds = 0.0
    g_h = g_v_new * dv_dh + (g_s + g_v_new * dv_ds) * sg
    return g_h * (1.0 - 1.0 / params.tau), g_h / params.tau


lif_step.defvjp(_lif_fwd, _lif_bwd)


def lif_step_autodiff(v: jax.Array, x: jax.Array, params: LIFParams) -> tuple[jax.Array, jax.Array]:
    """The same step written for plain autodiff (a reference for tests of :func:`lif_step`'s backward)."""
    h = charge(v, x, params.tau)
    if params.smooth_forward:
        s = SURROGATE_PRIMITIVES[params.surrogate](h - params.v_threshold, params.alpha)
    else:
        s = spike(h - params.v_threshold, params.surrogate, params.alpha)
    s_reset = jax.lax.stop_gradient(s) if params.detach_reset else s
    if params.reset == "soft":
        v_new = h - s_reset * params.v_threshold
    else:
        v_new = (1.0 - s_reset) * h + s_reset * params.v_reset
    return v_new, s


def leaky_integrator_step(v: jax.Array, x: jax.Array, tau: float) -> jax.Array:
    """A non-spiking LIF (threshold +inf, no reset): ``V' = V + (X - V) / tau``; the pure SNN's output."""
    return charge(v, x, tau)


def zeros_like_state(state):
    """A state pytree of zeros with the same shapes and dtypes (the SNN's default initial state)."""
    return jax.tree_util.tree_map(jnp.zeros_like, state)
