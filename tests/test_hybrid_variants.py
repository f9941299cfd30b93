"""The ablation variants of the hybrid (ModelConfig.hybrid_variant) against hand-derived properties.

B (``output_init``): the SNN starts from zero membranes and integrates its output onto the ANN heatmap, so
``out_k = decay^k * ANN + (the same SNN run from zero membranes and a zero output)_k``.
C (``state_init``): the membranes start from the state initialisers, the output from 0, so the spikes are
the full hybrid's and ``out_k = hybrid_k - decay^k * ANN``; with a leak so slow that a charge cannot move the
membrane (tau -> inf: ``H = V + (X - V) / tau = V``) the membrane after the first step is
``v_init - Heaviside(v_init - 1)``: v_init was the state before the first charge.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.models import LIF_LAYERS, HybridModel, ModelConfig, init_variables

TEN_MS = ModelConfig.preset("tiny_10ms")  # output decay 0.8 per step


def _inputs(t=3, b=2, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    ann = jnp.asarray(rng.uniform(0, 3, (b, h, w, 20)), jnp.float32)
    events = jnp.asarray(rng.poisson(0.6, (t, b, h, w, 2)), jnp.float32)
    return ann, events


VARIANTS = ("full", "output_init", "state_init")


@pytest.fixture(scope="module")
def runs():
    """Every run the tests compare, traced and compiled once (one XLA program: compiling dominates here)."""
    variables = init_variables("hybrid", TEN_MS, jax.random.key(3))
    # Initialisers' output BatchNorm shifted so that v_init crosses the threshold somewhere.
    bn2 = {k: {**v, "bn2": {**v["bn2"], "bias": v["bn2"]["bias"] + 0.6}}
           for k, v in variables["params"]["initialisers"].items()}
    variables = {"params": {**variables["params"], "initialisers": bn2}, "batch_stats": variables["batch_stats"]}
    ann, events = _inputs()

    def all_runs(v, a, e):
        def run(cfg, **kw):
            return HybridModel(cfg).apply(v, a, e, record_membranes=True, **kw)

        out = {name: run(dataclasses.replace(TEN_MS, hybrid_variant=name)) for name in VARIANTS}
        out["zeros"] = run(TEN_MS, init_mode="zeros")
        # A leak so slow that a charge cannot move the membrane.
        out["still"] = run(dataclasses.replace(TEN_MS, hybrid_variant="state_init", hybrid_tau_at_10ms=1e9))
        out["starts"] = {name: HybridModel(dataclasses.replace(TEN_MS, hybrid_variant=name)).apply(
            v, a, method=HybridModel.ann_init) for name in VARIANTS}
        return out

    return jax.device_get(jax.jit(all_runs)(variables, ann, events))


def test_config_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="hybrid_variant"):
        ModelConfig(hybrid_variant="bogus")
    assert (TEN_MS.initialises_state, TEN_MS.initialises_output) == (True, True)


def test_output_init_is_the_zero_state_snn_on_the_ann_heatmap(runs):
    b_out, zeros = runs["output_init"], runs["zeros"]
    assert b_out.v_init is None
    np.testing.assert_array_equal(np.asarray(b_out.spike_counts), np.asarray(zeros.spike_counts))
    assert float(jnp.sum(b_out.spike_counts)) > 0
    heat = np.asarray(b_out.ann_heatmap)
    # First output: the ANN heatmap (decayed once, 0.8 at 10 ms) plus the first head output of the SNN from
    # zero membranes (= the zero-state run's first output, which starts from a zero output).
    np.testing.assert_allclose(np.asarray(b_out.heatmaps[0]), 0.8 * heat + np.asarray(zeros.heatmaps[0]),
                               rtol=1e-5, atol=1e-5)
    for k in range(b_out.heatmaps.shape[0]):
        np.testing.assert_allclose(np.asarray(b_out.heatmaps[k]),
                                   0.8 ** (k + 1) * heat + np.asarray(zeros.heatmaps[k]), rtol=1e-5, atol=1e-5)


def test_state_init_starts_the_membranes_at_v_init_and_the_output_at_zero(runs):
    c_out, full, still = runs["state_init"], runs["full"], runs["still"]
    np.testing.assert_array_equal(np.asarray(c_out.spike_counts), np.asarray(full.spike_counts))
    heat = np.asarray(full.ann_heatmap)
    for k in range(c_out.heatmaps.shape[0]):  # output integration from 0: the hybrid minus the decayed ANN heatmap
        np.testing.assert_allclose(np.asarray(c_out.heatmaps[k]),
                                   np.asarray(full.heatmaps[k]) - 0.8 ** (k + 1) * heat, rtol=1e-4, atol=1e-4)
    # No leak: after the first step the membrane is v_init minus the threshold where v_init >= 1.
    crossed = 0
    for layer in LIF_LAYERS:
        v_init = np.asarray(still.v_init[layer])
        fired = (v_init >= 1.0).astype(np.float32)
        crossed += int(fired.sum())
        np.testing.assert_allclose(np.asarray(still.membranes[layer][0]), v_init - fired, atol=1e-5)
    assert crossed > 0, "the test must exercise spikes at the first step"


def test_ann_init_returns_what_each_variant_starts_from(runs):
    starts = runs["starts"]
    (v_full, out_full), (v_b, out_b), (v_c, out_c) = starts["full"], starts["output_init"], starts["state_init"]
    np.testing.assert_array_equal(np.asarray(out_b), np.asarray(out_full))
    assert not np.any(np.asarray(out_c)) and np.any(np.asarray(out_full))
    for layer in LIF_LAYERS:
        assert v_b[layer].shape == v_full[layer].shape and not np.any(np.asarray(v_b[layer]))
        np.testing.assert_array_equal(np.asarray(v_c[layer]), np.asarray(v_full[layer]))
