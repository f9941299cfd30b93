"""The Colab TPU notebook runs end to end on CPU (2 forced devices, so the pmap path runs) in smoke mode."""
import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "hybridjax_colab_tpu.ipynb"


def test_notebook_defines_no_library_code():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "def " not in source and "class " not in source
    assert "from hybridjax.train import train" in source and "REPO_URL" in source


def test_notebook_runs_in_smoke_mode(shared_dir, tmp_path, monkeypatch):
    # In the default suite so the notebook cannot rot. Smoke mode: 32 x 32 inputs, 2 steps per stage, one
    # validation and one evaluation window; compiling the pmapped steps dominates, so the kernel runs XLA
    # at a lower optimisation level (about half the compile time; the few steps run slower).
    workdir = tmp_path / "run"
    env = {
        "HYBRIDJAX_NOTEBOOK_SMOKE": "1",
        "HYBRIDJAX_NOTEBOOK_DATA": "dhp19",
        "HYBRIDJAX_NOTEBOOK_DATA_DIR": str(shared_dir / "fixtures" / "dhp19_mini"),
        "HYBRIDJAX_NOTEBOOK_WORKDIR": str(workdir),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                        for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    assert "2 local devices" in outputs
    summary = json.loads((workdir / "summary.json").read_text())
    assert [summary[s]["final_step"] for s in ("ann", "snn", "hybrid")] == [2, 2, 2]
    assert (workdir / "report" / "report.md").is_file() and (workdir / "report" / "mpjpe_over_time.png").is_file()
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for cell in nb.cells for o in cell.get("outputs", []))
