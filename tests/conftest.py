"""Test configuration: force the CPU backend, locate ../shared, import the experiments/ entry points."""
import importlib.util
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    if not SHARED.is_dir():
        pytest.fail(f"ground-truth folder {SHARED} is missing (it must sit beside the repository root)")
    return SHARED


@pytest.fixture(scope="session")
def experiment_script():
    """``load(name)``: the entry point ``experiments/<name>.py`` imported as a module (scripts are not in the
    package), registered in ``sys.modules`` so that its dataclasses resolve their module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"experiments_{name}", REPO_ROOT / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
