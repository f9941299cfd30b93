"""The ablation study: its training plan, the scoring of the first ANN period, the report, the command end to end."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hybridjax.ablation_study import AblationConfig, recipe_matches, stage_config
from hybridjax.eval import plots
from hybridjax.eval.ablation import VARIANTS, ablation_markdown, evaluate_ablation
from hybridjax.train.config import tiny_preset

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_each_variant_trains_with_the_same_recipe_and_shares_the_stages(tmp_path):
    config = AblationConfig(train=tiny_preset(), workdir=tmp_path)
    plans = {v: stage_config(config, v) for v in VARIANTS}
    assert plans["snn"].workdir == plans["full"].workdir == tmp_path / "base"
    assert (plans["snn"].stage, plans["full"].stage) == ("snn", "hybrid")
    assert {v: plans[v].model.hybrid_variant for v in VARIANTS} == {
        "snn": "full", "output_init": "output_init", "state_init": "state_init", "full": "full", "scratch": "full"}
    assert [plans[v].hybrid_from_snn for v in ("output_init", "state_init", "full", "scratch")] == [True] * 3 + [False]
    for v in VARIANTS:  # nothing but the variant, the folder and the stage differs from the recipe
        assert plans[v].seed == 2022 and plans[v].hybrid == config.train.hybrid and plans[v].data == config.train.data
    with pytest.raises(ValueError, match="variants"):
        AblationConfig(train=tiny_preset(), variants=("bogus",))


def test_a_workdir_is_reused_only_when_it_trained_the_same_recipe(tmp_path):
    recipe = tiny_preset()
    (tmp_path / "config.json").write_text(recipe.to_json())
    assert recipe_matches(tmp_path, recipe) == (True, "same recipe")
    other = dataclasses.replace(recipe, seed=1)
    ok, why = recipe_matches(tmp_path, other)
    assert not ok and "seed" in why
    assert not recipe_matches(tmp_path / "missing", recipe)[0]


@pytest.fixture(scope="module")
def fixture_dataset(shared_dir):
    from hybridjax.data import DHP19Dataset

    return DHP19Dataset(shared_dir / "fixtures" / "dhp19_mini", "test", cameras=(3,), bin_mode="exact",
                        step_ms=10.0)


def test_first_period_scoring_with_constant_predictions(fixture_dataset, tmp_path):
    # Predict-function stand-ins: every joint at one pixel (B) or at a pixel per step (C); the errors follow
    # from the labels alone.
    def constant(ann_input, events):
        return np.full(events.shape[:2] + (13, 2), 100.0)

    def moving(ann_input, events):
        uv = np.full(events.shape[:2] + (13, 2), 100.0)
        return uv + np.arange(events.shape[0])[:, None, None, None]

    result = evaluate_ablation({"output_init": constant, "state_init": moving, "full": moving}, fixture_dataset,
                               batch_size=3)
    items = [fixture_dataset[i] for i in range(len(fixture_dataset))]
    truth = np.stack([it["landmarks"][:10] for it in items])  # [N, 10, J, 2]
    err_b = np.linalg.norm(100.0 - truth, axis=-1)
    err_c = np.linalg.norm(100.0 + np.arange(10)[None, :, None, None] - truth, axis=-1)
    b, c = result["variants"]["output_init"], result["variants"]["state_init"]
    assert result["setup"]["num_windows"] == len(items) and b["windows"] == len(items)
    assert b["first_period"]["mean"] == pytest.approx(np.nanmean(err_b))
    assert b["first_step"]["mean"] == pytest.approx(np.nanmean(err_b[:, 0]))
    assert c["last_step"]["mean"] == pytest.approx(np.nanmean(err_c[:, 9]))
    assert [s["time_ms"] for s in c["per_step"]] == [10.0 * (k + 1) for k in range(10)]
    assert c["first_period"]["ci_low"] <= c["first_period"]["mean"] <= c["first_period"]["ci_high"]
    # Paired with D (here = C's predictions): B - D is the difference of the means, C - D exactly 0.
    assert b["minus_full"]["first_period"]["mean"] == pytest.approx(np.nanmean(err_b) - np.nanmean(err_c))
    assert c["minus_full"]["last_step"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "windows": len(items)}
    assert "minus_full" not in result["variants"]["full"]
    table = "\n".join(ablation_markdown(result))
    assert "| B: output init only (OI) | " + f"{b['first_period']['mean']:.2f} [" in table
    assert "5.1 -> 7.2" in table  # the paper's C beside ours
    assert plots.plot_ablation(result, tmp_path / "ablation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_ablation_command_end_to_end_on_the_fixture(shared_dir, tmp_path):
    """Every variant trained for 2 steps on the fixture at 32 x 32: ~14 XLA compilations, 92 s (quieter) to
    13 min (load 15) wall on the shared 2-core VM, hence slow."""
    args = ["tiny_10ms", "--train.dataset", "dhp19", "--train.data-dir", str(shared_dir / "fixtures" / "dhp19_mini"),
            "--train.data.downsample", "8", "--train.data.max-val-items", "1", "--workdir", str(tmp_path),
            "--max-eval-items", "1", "--eval-batch-size", "1"]
    for stage, batch in (("ann", 2), ("snn", 1), ("hybrid", 1)):
        args += [f"--train.{stage}.num-steps", "2", f"--train.{stage}.batch-size", str(batch)]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "ablation.py"), *args], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "results.json").read_text())
    assert list(result["variants"]) == list(VARIANTS)
    assert all(v["windows"] == 1 for v in result["variants"].values())
    for folder in ("output_init", "state_init", "scratch"):
        assert os.readlink(tmp_path / folder / "ann") == os.path.join("..", "base", "ann")
    assert "SNN weights from" not in run.stdout.split("training scratch")[1]  # scratch: fresh SNN
    rows = [json.loads(line) for line in (tmp_path / "output_init" / "hybrid" / "metrics.jsonl").open()]
    assert [r["mp_loss"] for r in rows if "mp_loss" in r] == [0.0]  # B has no state initialisers, no L_mp
    assert (tmp_path / "report" / "ablation.png").is_file()
    assert "| D: hybrid (output + state init) |" in (tmp_path / "report" / "report.md").read_text()
