"""The data check: exact statistics on the fixture, and every problem of a broken copy found in one run."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hybridjax.data.check import check_data, format_report

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "check_data.py"


@pytest.fixture()
def fixture_dir(shared_dir) -> pathlib.Path:
    return shared_dir / "fixtures" / "dhp19_mini"


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("check_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_data", module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_fixture_statistics(fixture_dir, shared_dir, tmp_path, monkeypatch, capsys):
    module = load_script(monkeypatch)
    code = module.main(module.CheckArgs(data_dir=fixture_dir, json=tmp_path / "report.json"))
    text = capsys.readouterr().out
    assert code == 0 and "OK: 0 error(s)" in text
    report = json.loads((tmp_path / "report.json").read_text())
    expected = np.load(shared_dir / "fixtures" / "dhp19_mini_expected.npz")
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert train["recordings"] == test["recordings"] == 1
    # Camera channel 3 has as many windows as the official loader gives (8 train, 7 test).
    assert train["windows_per_camera"]["3"] == int(expected["snn_train_len"])
    assert test["windows_per_camera"]["3"] == int(expected["snn_test_len"])
    assert train["windows"] == sum(train["windows_per_camera"].values())
    # Events per second from the files themselves: events / (len(ms_to_idx) ms).
    with h5py.File(fixture_dir / "S1_session1_mov1_events.h5") as events:
        for camera in range(4):
            count, ms = events[f"cam{camera}_events/t"].shape[0], events[f"cam{camera}_ms_to_idx"].shape[0]
            assert train["events"][str(camera)] == count
            assert train["seconds"][str(camera)] == pytest.approx(ms / 1000)
            assert f"{count / (ms / 1000):,.0f} events/s" in text
    with h5py.File(fixture_dir / "S1_session1_mov1_events_label.h5") as labels:
        stamps = labels["XYZ/timestamps"][:]
        nan = np.isnan(labels["XYZ/3d_poses"][:]).any(axis=1).mean()
    assert train["label_coverage"] == [pytest.approx(min(stamps[-1] / 1000 + 10, 1001) / 1001)]
    assert train["label_nan"] == [pytest.approx(nan)]
    assert report["findings"] == [] and report["errors"] == 0


def break_copy(source: pathlib.Path, target: pathlib.Path) -> None:
    """A copy of the fixture with one problem per file (the test split's recording is left intact but one)."""
    shutil.copytree(source, target)
    s1 = target / "S1_session1_mov1"

    def clone(name):
        for suffix in ("_events.h5", "_events_label.h5"):
            shutil.copy(f"{s1}{suffix}", target / f"{name}{suffix}")
        return target / f"{name}_events.h5", target / f"{name}_events_label.h5"

    with h5py.File(target / "S13_session1_mov1_events.h5", "r+") as file:  # x out of range
        x = file["cam2_events/x"]
        x[5] = 400
    events, labels = clone("S2_session1_mov1")
    labels.unlink()  # missing label file
    events, _ = clone("S3_session1_mov1")
    with h5py.File(events, "r+") as file:  # unsorted timestamps in camera 1
        t = file["cam1_events/t"]
        first, second = int(t[100]), int(t[5000])
        t[100], t[5000] = second, first
    _, labels = clone("S4_session1_mov1")
    with h5py.File(labels, "r+") as file:  # 5 labels (50 ms): no complete window: skipped
        poses, stamps = file["XYZ/3d_poses"][:5], file["XYZ/timestamps"][:5]
        del file["XYZ/3d_poses"], file["XYZ/timestamps"]
        file["XYZ/3d_poses"], file["XYZ/timestamps"] = poses, stamps
    events, _ = clone("S5_session1_mov1")
    with h5py.File(events, "r+") as file:  # ms_to_idx that disagrees with t
        table = file["cam0_ms_to_idx"]
        table[10:20] = table[10:20] + 3
    _, labels = clone("S6_session1_mov1")
    with h5py.File(labels, "r+") as file:  # a Vicon gap: 10 of 100 labels lose the head
        poses = file["XYZ/3d_poses"]
        poses[20:30, :, 0] = np.nan
    shutil.copy(f"{s1}_events.h5", target / "notes_events.h5")  # not a recording name: ignored
    (target / "P_matrices" / "P2.npy").unlink()


def test_broken_copy_reports_every_problem_at_once(fixture_dir, tmp_path):
    broken = tmp_path / "broken"
    break_copy(fixture_dir, broken)
    report = check_data(broken)
    text = format_report(report)
    errors = {f.where: f.what for f in report.errors}
    assert any("P2.npy" in where and "does not exist" in what for where, what in errors.items())
    assert "camera 2: x outside [1, 346]" in errors["test S13_session1_mov1"]
    assert "events file without its label file S2_session1_mov1_events_label.h5" in errors["train S2_session1_mov1"]
    assert "timestamps not sorted" in errors["train S3_session1_mov1"]
    assert "cam0_ms_to_idx[10]" in errors["train S5_session1_mov1"]
    assert "the test split has no recording with a complete window" in errors["test"]
    assert len(report.errors) == 6
    skipped = {f.where: f.what for f in report.findings if f.level == "skipped"}
    assert "no complete 100 ms window" in skipped["train S4_session1_mov1"]
    warnings = [f for f in report.findings if f.level == "warning"]
    assert [w.where for w in warnings] == [str(broken / "notes_events.h5")]
    # The good recordings are still counted: S1 and S6 (with its NaN labels) in train.
    train = report.splits["train"]
    assert train.recordings == 2 and train.windows_per_camera[3] == 16
    assert sorted(train.label_nan) == [0.0, pytest.approx(10 * 1 / (100 * 13))]
    assert report.splits["test"].recordings == 0  # its only recording is broken
    assert "2-D joints not projected" in text  # no camera matrices: no masked fractions
    assert text.endswith("FAILED: 6 error(s)")


def test_command_exit_codes(fixture_dir, tmp_path):
    broken = tmp_path / "broken"
    break_copy(fixture_dir, broken)
    for folder, code in ((broken, 1), (tmp_path / "missing", 1)):  # exit 0 on the fixture: test_fixture_statistics
        done = subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr
    assert "data folder does not exist" in done.stdout


def test_event_human36m_folder(tmp_path):
    from hybridjax.data.synthetic.h36m_writer import write_synthetic_event_h36m

    root = tmp_path / "eh36m"
    summary = write_synthetic_event_h36m(root)
    report = check_data(root)
    train, test = report.splits["train"], report.splits["test"]
    sequences = [(s["split"], n) for s in summary["sequences"] for n in s["events_per_view"].values()]
    assert train.recordings == sum(1 for split, _ in sequences if split == "train") == 4
    assert test.recordings == sum(1 for split, _ in sequences if split == "test") == 4
    assert sum(train.events.values()) == sum(n for split, n in sequences if split == "train")
    # Subjects of the official split without a folder are skipped (as the loader does), nothing else.
    assert {f.level for f in report.findings} == {"skipped"} and not report.errors
    with h5py.File(root / "labels.h5", "r+") as labels:  # break one sequence's labels
        subject = next(iter(labels))
        action = next(iter(labels[subject]))
        del labels[f"{subject}/{action}/timestamps_ms"]
    broken = check_data(root)
    assert len(broken.errors) >= 1 and all("timestamps_ms" in f.what for f in broken.errors)
