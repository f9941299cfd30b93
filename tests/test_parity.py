"""Parity with the official PyTorch + SpikingJelly models: float64 golden outputs and gradients.

Weights are rebuilt with ../shared/reference/official_weights.py and converted by hybridjax.convert.
"""
from __future__ import annotations

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax import convert, layout, losses
from hybridjax.models import (
    INITIALISER_SOURCES,
    LIF_LAYERS,
    OFFICIAL_LIF_NAMES,
    ANNUNet,
    HybridModel,
    SNNModel,
)

REL_EVAL = 1e-9
REL_TRAIN = 1e-7


def _official_weights(shared_dir, keys_file):
    spec = importlib.util.spec_from_file_location("official_weights", shared_dir / "reference" / "official_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_weights(module.load_keys(shared_dir / "reference" / keys_file), seed=0)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def golden(shared_dir):
    root = shared_dir / "reference" / "golden"
    return {name: dict(np.load(root / f"{name}.npz")) for name in
            ("hybrid_eval", "hybrid_train", "snn_eval", "cnn_eval", "heatmap_targets")}


@pytest.fixture(scope="module")
def hybrid_setup(shared_dir):
    sd = _official_weights(shared_dir, "hybrid_cnn_snn.keys.txt")
    variables = convert.convert_state_dict(sd, "hybrid")
    cfg = dataclasses.replace(convert.infer_config(sd, "hybrid"), step_ms=10.0)
    return sd, variables, cfg


def _inputs(g):
    return (jnp.asarray(layout.from_official_image(g["ann_input"])),
            jnp.asarray(layout.from_official_sequence(g["snn_input"])))


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_hybrid_eval_matches_official(hybrid_setup, golden, mode):
    _, variables, cfg = hybrid_setup
    g = golden["hybrid_eval"]
    assert tuple(g["lif_layers"]) == OFFICIAL_LIF_NAMES
    model = HybridModel(dataclasses.replace(cfg, snn_mode=mode))
    with jax.enable_x64(True):
        ann_input, events = _inputs(g)
        out = jax.jit(model.apply)(variables, ann_input, events)
        assert out.heatmaps.dtype == jnp.float64
        # Spikes are binary: compare counts exactly (a flipped spike would show up here first).
        np.testing.assert_array_equal(np.asarray(out.spike_counts), g["spike_counts"])
        assert _rel(out.heatmaps, np.moveaxis(g["heatmaps"], 2, -1)) <= REL_EVAL
        assert _rel(out.ann_heatmap, layout.from_official_image(g["ann_heatmap"])) <= REL_EVAL
        for layer, (_, _, key) in INITIALISER_SOURCES.items():
            assert _rel(out.v_init[layer], layout.from_official_image(g[f"v_init:{key}"])) <= REL_EVAL, layer
        for layer, official in zip(LIF_LAYERS, OFFICIAL_LIF_NAMES):
            assert _rel(out.v_last[layer], layout.from_official_image(g[f"v_last:{official}"])) <= REL_EVAL, layer


def _hybrid_train_loss(model, ann_params, stats, ann_input, events, ann_next, targets):
    def loss_fn(trainable):
        variables = {"params": {"ann": ann_params, **trainable}, "batch_stats": stats}
        out, _ = model.apply(variables, ann_input, events, train=True, mutable=["batch_stats"])
        v_next, _ = model.apply(variables, ann_next, train=True, method=HybridModel.initial_states,
                                mutable=["batch_stats"])
        return losses.hybrid_loss(out.heatmaps, targets, v_next, out.v_last)

    return loss_fn


def test_hybrid_train_loss_and_gradients_match_official(hybrid_setup, golden):
    _, variables, cfg = hybrid_setup
    g, gt = golden["hybrid_eval"], golden["hybrid_train"]
    steps = int(gt["train_steps"])
    model = HybridModel(cfg)  # the ANN is frozen inside the model (stop_gradient) and not trained here
    with jax.enable_x64(True):
        ann_input, events = _inputs(g)
        ann_next = jnp.asarray(layout.from_official_image(gt["ann_input_next"]))
        targets = losses.gaussian_targets(jnp.asarray(np.transpose(gt["labels"], (1, 0, 3, 4, 2))))
        trainable = {k: variables["params"][k] for k in ("initialisers", "snn")}

        @jax.jit
        def value_and_grad(trainable, ann_params, stats, ann_input, events, ann_next, targets):
            loss_fn = _hybrid_train_loss(model, ann_params, stats, ann_input, events, ann_next, targets)
            return jax.value_and_grad(loss_fn, has_aux=True)(trainable)

        (loss, parts), grads = value_and_grad(trainable, variables["params"]["ann"], variables["batch_stats"],
                                              ann_input, events[:steps], ann_next, targets)
    for name, value in (("loss", loss), ("out_loss", parts["out_loss"]), ("mp_loss", parts["mp_loss"])):
        assert abs(float(value) - float(gt[name])) <= REL_TRAIN * abs(float(gt[name])), name
    official = convert.export_state_dict({"params": grads}, "hybrid")
    norms = {k[5:]: float(v) for k, v in gt.items() if k.startswith("norm:")}
    assert set(norms) == set(official), "every trainable parameter has a golden gradient norm"
    largest = max(norms.values())
    for key, want in norms.items():
        got = float(np.linalg.norm(official[key]))
        if want < 1e-12 * largest:
            # Conv biases followed by BatchNorm have an analytically zero gradient; both sides are rounding noise.
            assert got < 1e-12 * largest, key
        else:
            assert abs(got - want) <= REL_TRAIN * want, (key, got, want)
        if f"grad:{key}" in gt and want >= 1e-12 * largest:
            assert _rel(official[key], gt[f"grad:{key}"]) <= REL_TRAIN, key


def test_pure_snn_eval_matches_official(shared_dir, golden):
    sd = _official_weights(shared_dir, "snn.keys.txt")
    variables = convert.convert_state_dict(sd, "snn")
    cfg = dataclasses.replace(convert.infer_config(sd, "snn"), step_ms=10.0)
    g = golden["snn_eval"]
    with jax.enable_x64(True):
        events = jnp.asarray(layout.from_official_sequence(golden["hybrid_eval"]["snn_input"]))
        out = jax.jit(SNNModel(cfg).apply)(variables, events)
    np.testing.assert_array_equal(np.asarray(out.spike_counts), g["spike_counts"])
    assert _rel(out.heatmaps, np.moveaxis(g["heatmaps"], 2, -1)) <= REL_EVAL


def test_cnn_eval_matches_official(shared_dir, golden):
    sd = _official_weights(shared_dir, "cnn.keys.txt")
    variables = convert.convert_state_dict(sd, "cnn")
    cfg = convert.infer_config(sd, "cnn")
    g = golden["cnn_eval"]
    with jax.enable_x64(True):
        heat = jax.jit(ANNUNet(cfg).apply)(variables, jnp.asarray(layout.from_official_image(g["ann_input"])))
    assert _rel(heat, layout.from_official_image(g["heatmap"])) <= REL_EVAL


def test_blurred_targets_match_official(golden):
    g = golden["heatmap_targets"]
    with jax.enable_x64(True):
        targets = losses.gaussian_targets(jnp.asarray(layout.from_official_image(g["labels"])))
    want = layout.from_official_image(g["targets"])
    np.testing.assert_allclose(np.asarray(targets), want, rtol=0, atol=1e-12)
    assert np.all(np.asarray(targets).max(axis=(1, 2))[want.max(axis=(1, 2)) > 0] == pytest.approx(1.0))


def test_float32_stays_close_to_float64(hybrid_setup, golden):
    """The same hybrid in float32: heatmaps within 1e-4 relative of the float64 golden (measured ~1e-6)."""
    _, variables, cfg = hybrid_setup
    g = golden["hybrid_eval"]
    v32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), variables)
    ann_input, events = (jnp.asarray(a, jnp.float32) for a in _inputs(g))
    out = jax.jit(HybridModel(cfg).apply)(v32, ann_input, events)
    assert out.heatmaps.dtype == jnp.float32
    deviation = _rel(out.heatmaps, np.moveaxis(g["heatmaps"], 2, -1))
    assert deviation <= 1e-4, deviation
    counts_off = np.abs(np.asarray(out.spike_counts) - g["spike_counts"]).sum() / g["spike_counts"].sum()
    assert counts_off <= 1e-3, counts_off


def test_converter_names_bad_keys(shared_dir):
    sd = _official_weights(shared_dir, "hybrid_cnn_snn.keys.txt")
    broken = dict(sd)
    del broken["down2_snn.conv.conv2d.weight"]
    broken["extra.weight"] = np.zeros(3)
    with pytest.raises(convert.CheckpointKeyError, match=r"down2_snn\.conv\.conv2d\.weight.*extra\.weight"):
        convert.convert_state_dict(broken, "hybrid")
    misshaped = dict(sd)
    misshaped["up1_snn.norm_layer.running_var"] = np.ones(7)
    with pytest.raises(convert.CheckpointKeyError, match=r"up1_snn\.norm_layer\.running_var"):
        convert.convert_state_dict(misshaped, "hybrid")
    wrong_width = dict(sd)
    wrong_width["up2_snn.conv2d.weight"] = np.ones((64, 200, 5, 5))
    with pytest.raises(convert.CheckpointKeyError, match=r"up2"):
        convert.convert_state_dict(wrong_width, "hybrid")


def test_compose_hybrid_from_parts_follows_official_renaming(shared_dir):
    cnn = _official_weights(shared_dir, "cnn.keys.txt")
    snn = _official_weights(shared_dir, "snn.keys.txt")
    composed = convert.compose_hybrid_state_dict(cnn, snn)
    hybrid_keys = {line.split("\t")[0] for line in
                   (shared_dir / "reference" / "hybrid_cnn_snn.keys.txt").read_text().splitlines() if line}
    assert set(composed) == {k for k in hybrid_keys if not k.startswith("states_")}
    np.testing.assert_array_equal(composed["static_conv_snn.norm_layer.running_var"], snn["static_conv.1.running_var"])
    np.testing.assert_array_equal(composed["up5_cnn.conv2.weight"], cnn["up5.conv2.weight"])
    variables = convert.convert_state_dict(composed, "hybrid", allow_missing=("states_",))
    assert "initialisers" not in variables["params"]
    # The same composition on hybridjax variables.
    cnn_v, snn_v = convert.convert_state_dict(cnn, "cnn"), convert.convert_state_dict(snn, "snn")
    fresh = convert.convert_state_dict(_official_weights(shared_dir, "hybrid_cnn_snn.keys.txt"), "hybrid")
    merged = convert.compose_hybrid_variables(cnn_v, snn_v, fresh)
    back = convert.export_state_dict(merged, "hybrid")
    for key, value in composed.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)
