"""The PyTorch baseline (benchmarks/torch_baseline.py) computes the official hybrid: float64 golden parity.

Runs only where torch is installed (the ``torch`` extra); skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_baseline as tb  # noqa: E402  (needs torch; outside the importable package)

REL_EVAL = 1e-9
REL_TRAIN = 1e-7


def _rel(got, want) -> float:
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _official_weights(shared_dir) -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("official_weights", shared_dir / "reference" / "official_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_weights(module.load_keys(shared_dir / "reference" / "hybrid_cnn_snn.keys.txt"), seed=0)


@pytest.fixture(scope="module")
def golden(shared_dir):
    root = shared_dir / "reference" / "golden"
    return {name: dict(np.load(root / f"{name}.npz")) for name in ("hybrid_eval", "hybrid_train", "heatmap_targets")}


def _official_model(shared_dir) -> tb.HybridCNNSNN:
    model = tb.HybridCNNSNN().to(torch.float64)
    weights = {k: torch.as_tensor(v) for k, v in _official_weights(shared_dir).items()}
    model.load_state_dict(weights, strict=True)  # official keys, shapes (and order, checked below)
    model.freeze_ann()
    return model


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float64))


def test_state_dict_has_the_official_keys_in_order(shared_dir):
    lines = (shared_dir / "reference" / "hybrid_cnn_snn.keys.txt").read_text().splitlines()
    want = [tuple(line.split("\t")) for line in lines if line]
    got = [(k, ",".join(str(d) for d in v.shape)) for k, v in tb.HybridCNNSNN().state_dict().items()]
    assert got == want


def test_eval_matches_official(shared_dir, golden):
    g = golden["hybrid_eval"]
    assert tuple(g["lif_layers"]) == tb.LIF_NAMES
    model = _official_model(shared_dir).eval()
    with torch.no_grad():
        out = model(_t(g["ann_input"]), _t(g["snn_input"]), record_spikes=True)
    assert out.heatmaps.dtype == torch.float64
    # Spikes are binary: a flipped spike would show up here first.
    np.testing.assert_array_equal(out.spike_counts.numpy(), g["spike_counts"])
    assert _rel(out.heatmaps, g["heatmaps"]) <= REL_EVAL
    assert _rel(out.ann_heatmap, g["ann_heatmap"]) <= REL_EVAL
    for key, v in out.v_init.items():
        assert _rel(v, g[f"v_init:{key}"]) <= REL_EVAL, key
    for name, v in out.v_last.items():
        assert _rel(v, g[f"v_last:{name}"]) <= REL_EVAL, name


def test_blurred_targets_match_official(golden):
    g = golden["heatmap_targets"]
    targets = tb.gaussian_targets(_t(g["labels"])).numpy()
    np.testing.assert_allclose(targets, g["targets"], rtol=0, atol=1e-12)
    peaks = targets.max(axis=(-2, -1))
    np.testing.assert_allclose(peaks[g["targets"].max(axis=(-2, -1)) > 0], 1.0, rtol=0, atol=1e-15)


def test_train_loss_and_gradients_match_official(shared_dir, golden):
    g, gt = golden["hybrid_eval"], golden["hybrid_train"]
    steps = int(gt["train_steps"])
    model = _official_model(shared_dir)
    batch = tb.HybridBatch(ann_input=_t(g["ann_input"]), ann_input_next=_t(gt["ann_input_next"]),
                           events=_t(g["snn_input"][:, :steps]), labels=_t(gt["labels"]))
    terms = tb.hybrid_loss_and_grads(model, batch)
    for name in ("loss", "out_loss", "mp_loss"):
        assert abs(float(terms[name]) - float(gt[name])) <= REL_TRAIN * abs(float(gt[name])), name
    params = dict(model.named_parameters())
    trainable = {k for k, p in params.items() if p.requires_grad}
    norms = {k[5:]: float(v) for k, v in gt.items() if k.startswith("norm:")}
    assert set(norms) == trainable, "the trainable set is the initialisers + SNN, every one has a golden norm"
    assert all(params[k].grad is None for k in params if k not in trainable), "the frozen ANN gets no gradient"
    largest = max(norms.values())
    for key, want in norms.items():
        grad = params[key].grad
        got = float(torch.linalg.vector_norm(grad))
        if want < 1e-12 * largest:
            # Conv biases followed by BatchNorm have an analytically zero gradient; both sides are rounding noise.
            assert got < 1e-12 * largest, key
            continue
        assert abs(got - want) <= REL_TRAIN * want, (key, got, want)
        if f"grad:{key}" in gt:
            assert _rel(grad, gt[f"grad:{key}"]) <= REL_TRAIN, key


def test_train_step_updates_only_the_trainable_parameters():
    torch.manual_seed(0)
    model = tb.xavier_init_(tb.HybridCNNSNN())
    model.freeze_ann()
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=tb.LEARNING_RATE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    terms = tb.hybrid_train_step(model, optimizer, tb.synthetic_batch(32, 1, 2))
    assert np.isfinite(float(terms["loss"]))
    after = model.state_dict()
    assert torch.equal(after["conv1_cnn.weight"], before["conv1_cnn.weight"])
    assert torch.equal(after["up5_cnn.conv2.bias"], before["up5_cnn.conv2.bias"])
    # Adam's first step moves every parameter with a non-zero gradient by about lr.
    moved = (after["states_8.conv2.weight"] - before["states_8.conv2.weight"]).abs().max()
    assert 0.5 * tb.LEARNING_RATE < float(moved) <= 1.01 * tb.LEARNING_RATE
    assert float((after["up3_snn.conv2d.weight"] - before["up3_snn.conv2d.weight"]).abs().max()) > 0
    # Train-mode BatchNorm folded two steps of batch statistics into the SNN's running averages.
    assert int(after["up3_snn.norm_layer.num_batches_tracked"]) == 2


def test_time_hybrid_step_reports_the_documented_fields(tmp_path, experiment_script):
    script = experiment_script("benchmark_torch")
    threads = torch.get_num_threads()
    cfg = script.TorchBenchmarkConfig(resolution=32, batch_size=1, num_steps=2, repeats=1,
                                      output=str(tmp_path / "torch.json"))
    lines = []
    result = script.run(cfg, log=lines.append)
    assert torch.get_num_threads() == threads
    assert {"median_wall_s", "min_wall_s", "median_cpu_s", "wall_s", "torch_version", "num_threads", "resolution",
            "batch_size", "num_steps", "repeats", "loadavg"} <= set(result)
    assert result["median_wall_s"] > 0 and result["min_wall_s"] > 0 and result["median_cpu_s"] > 0
    assert result["min_wall_s"] <= result["median_wall_s"]
    assert (result["resolution"], result["batch_size"], result["num_steps"], result["repeats"]) == (32, 1, 2, 1)
    assert len(result["wall_s"]) == 1 and len(result["loadavg"]) == 3
    assert result["torch_version"] == torch.__version__ and result["num_threads"] == threads
    assert json.loads((tmp_path / "torch.json").read_text())["median_wall_s"] == result["median_wall_s"]
    assert lines[0].startswith(f"torch {torch.__version__} hybrid train step 32x32 b1 T2: median ")
    with pytest.raises(ValueError, match="multiple of 32"):
        tb.time_hybrid_step(resolution=16, batch_size=1, num_steps=2, repeats=1)


def test_serve_times_one_step_per_command_and_stops_on_quit():
    import io

    replies = io.StringIO()
    tb.serve_hybrid_steps(32, 1, num_steps=2, commands=io.StringIO("step\nstep\nquit\nstep\n"), replies=replies)
    lines = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert lines[0]["ready"] is True and lines[0]["torch_version"] == torch.__version__
    assert len(lines) == 3  # ready + two steps; nothing after quit
    for reply in lines[1:]:
        assert reply["wall_s"] > 0 and reply["cpu_s"] > 0 and np.isfinite(reply["loss"])
    with pytest.raises(ValueError, match="unknown command 'go'"):
        tb.serve_hybrid_steps(32, 1, num_steps=2, commands=io.StringIO("go\n"), replies=io.StringIO())


def test_official_baseline_names_a_bad_checkout_in_one_line(tmp_path, monkeypatch):
    import official_baseline

    from hybridjax.errors import UserError

    not_a_checkout = r"not_there: not a checkout of uzh-rpg/hybrid_ann_snn \(no models/hybrid_cnn_snn.py\)"
    with pytest.raises(official_baseline.OfficialCodeError, match=not_a_checkout):
        official_baseline.load_official(tmp_path / "not_there")
    assert issubclass(official_baseline.OfficialCodeError, UserError)
    # A checkout whose model cannot be imported (here: a dependency that is not installed) names the cause.
    checkout = tmp_path / "hybrid_ann_snn"
    (checkout / "models").mkdir(parents=True)
    (checkout / "models" / "hybrid_cnn_snn.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_official prepends the checkout
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(official_baseline.OfficialCodeError, match="cannot import the official model .*"
                                                                  "a_dependency_that_is_not_installed.*spikingjelly"):
        official_baseline.load_official(checkout)
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        monkeypatch.delitem(sys.modules, name)  # the fake checkout's package must not outlive the test


def test_benchmark_torch_refuses_inconsistent_baseline_settings(tmp_path, monkeypatch, experiment_script):
    script = experiment_script("benchmark_torch")
    for argv, message in ((["--baseline", "official"], "--baseline official needs --official-repo PATH"),
                          (["--check-port"], "--check-port compares the official step with the port"),
                          (["--baseline", "original"], "--baseline 'original': choose one of port, official")):
        monkeypatch.setattr(sys, "argv", ["benchmark_torch.py", *argv, "--output", str(tmp_path / "t.json")])
        with pytest.raises(script.ConfigError, match=message):
            script.main()
