"""Training configuration: presets, command-line overrides, JSON round trip, clear errors."""
import dataclasses
import pathlib

import numpy as np
import pytest
import tyro

from hybridjax.data.batch import collate, shard_for_devices
from hybridjax.data.loader import BatchLoader
from hybridjax.models import ModelConfig
from hybridjax.train.config import (
    DataConfig,
    StageConfig,
    TrainConfig,
    paper_preset,
    preset,
    preset_choices,
    tiny_preset,
)


def test_paper_preset_follows_the_official_recipe():
    cfg = paper_preset()
    assert (cfg.ann.learning_rate, cfg.ann.batch_size) == (1e-4, 8)
    assert (cfg.snn.learning_rate, cfg.snn.batch_size) == (5e-5, 2)
    assert (cfg.hybrid.learning_rate, cfg.hybrid.batch_size) == (5e-5, 2)
    assert cfg.seed == 2022 and cfg.data.bin_mode == "paper" and cfg.model == ModelConfig.preset("paper")
    assert cfg.model.ann_widths == (32, 64, 128, 256, 512, 512) and cfg.data.downsample == 1
    assert (cfg.output_loss_weight, cfg.membrane_loss_weight) == (0.95, 0.05)
    for fn in (paper_preset, tiny_preset):  # docstrings state command, hardware/time and expected metric
        doc = fn.__doc__
        assert "experiments/train.py" in doc and "Hardware" in doc and "Expected" in doc


def test_cli_overrides_any_field():
    cfg = tyro.extras.overridable_config_cli(
        preset_choices(),
        args=["tiny", "--hybrid.num-steps", "7", "--model.step-ms", "1.0", "--data.downsample", "8",
              "--workdir", "/tmp/x", "--stage", "snn", "--data.cameras", "2", "3"],
    )
    assert cfg.hybrid.num_steps == 7 and cfg.model.step_ms == 1.0 and cfg.data.downsample == 8
    assert cfg.workdir == pathlib.Path("/tmp/x") and cfg.stages() == ("snn",) and cfg.data.cameras == (2, 3)
    assert cfg.ann == tiny_preset().ann  # untouched fields keep the preset's values


def test_json_round_trip_is_exact():
    cfg = dataclasses.replace(tiny_preset(), data_dir=pathlib.Path("/data/x"), num_processes=2,
                              data=DataConfig(cameras=(2, 3), downsample=2))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_json(cfg.to_json().replace('"keep_last"', '"keep_lats"'))


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="downsample 3"):
        TrainConfig(data=DataConfig(downsample=3))
    with pytest.raises(ValueError, match="data_dir"):
        TrainConfig(dataset="dhp19")
    with pytest.raises(ValueError, match="learning_rate"):
        StageConfig(learning_rate=0.0, batch_size=2)
    with pytest.raises(ValueError, match="unknown training preset"):
        preset("huge")


def _step_indices(num_items, batch_size, seed, step):
    return BatchLoader(list(range(num_items)), batch_size, seed=seed).indices(step)


def test_batches_are_a_function_of_seed_and_step():
    a = [_step_indices(10, 3, 2022, s) for s in range(6)]
    b = [_step_indices(10, 3, 2022, s) for s in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # 3 batches per epoch (tail of 1 dropped); each epoch visits distinct items, epochs differ in order.
    epoch0 = np.concatenate(a[:3])
    assert len(set(epoch0.tolist())) == 9
    assert not np.array_equal(epoch0, np.concatenate(a[3:6]))
    assert not np.array_equal(a[0], _step_indices(10, 3, 2023, 0))


def test_collate_and_shard_layouts():
    items = [{"events": np.full((3, 8, 8, 2), i, np.float32), "landmarks": np.full((3, 13, 2), i, np.float32),
              "step_has_label": np.array([True, False, True]), "ann_input": np.ones((8, 8, 20), np.float32)}
             for i in range(4)]
    batch = collate(items, ("events", "landmarks", "step_has_label", "ann_input"), downsample=2)
    assert batch["events"].shape == (3, 4, 4, 4, 2) and batch["landmarks"].shape == (3, 4, 13, 2)
    assert batch["ann_input"].shape == (4, 4, 4, 20) and float(batch["ann_input"][0, 0, 0, 0]) == 4.0  # sum pool
    np.testing.assert_array_equal(batch["events"][0, :, 0, 0, 0], [0, 4, 8, 12])  # item i pooled: 4 i
    shards = shard_for_devices(batch, 2)
    assert shards["events"].shape == (2, 3, 2, 4, 4, 2) and shards["step_has_label"].shape == (2, 3)
    np.testing.assert_array_equal(shards["events"][1, 0, :, 0, 0, 0], [8, 12])  # device 1 gets items 2, 3
    assert shards["ann_input"].shape == (2, 2, 4, 4, 20)
    with pytest.raises(ValueError, match="not divisible by 3 devices"):
        shard_for_devices(batch, 3)


def _run_train_script(args, cwd):
    import os
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(repo / "experiments" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_train_script_without_dhp19_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    missing = tmp_path / "no_such_dhp19"
    run = _run_train_script(["--dataset", "dhp19", "--data-dir", str(missing)], tmp_path)
    assert run.returncode == 2, run.stderr
    message = run.stderr
    assert "Traceback" not in message and message.startswith("error: no dhp19 data in")
    assert str(missing) in message and "does not exist" in message
    assert f"python experiments/convert_dhp19.py RAW_ROOT {missing}" in message
    assert "python experiments/train.py --dataset synthetic" in message
    assert not (tmp_path / "runs").exists()  # nothing written before the data check


def test_cli_preset_is_an_option_with_a_per_dataset_default():
    from hybridjax.errors import ConfigError
    from hybridjax.train.config import parse_cli

    dhp19 = parse_cli(["--dataset", "dhp19"])
    assert dhp19.model == paper_preset().model and dhp19.data_dir == pathlib.Path("data/dhp19")
    h36m = parse_cli(["--dataset", "h36m", "--hybrid.num-steps", "3"])
    assert h36m.ann == paper_preset().ann and h36m.data_dir == pathlib.Path("data/h36m")
    assert h36m.hybrid.num_steps == 3
    assert parse_cli([]) == tiny_preset() == parse_cli(["tiny"]) == parse_cli(["--preset", "tiny"])
    chosen = parse_cli(["--preset=tiny", "--dataset", "dhp19", "--data-dir", "/d"])
    assert chosen.model == tiny_preset().model and chosen.data_dir == pathlib.Path("/d")
    with pytest.raises(ConfigError, match="--preset needs one of"):
        parse_cli(["--preset", "huge"])


def test_cli_help_lists_the_presets_and_their_docs(capsys):
    from hybridjax.train.config import parse_cli

    with pytest.raises(SystemExit):
        parse_cli(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset NAME" in text and "dhp19 -> paper" in text and "synthetic -> tiny" in text
    assert "paper: The paper's setting" in text and "tiny: A CPU-sized end-to-end run" in text
