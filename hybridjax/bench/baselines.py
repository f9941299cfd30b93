"""The PyTorch baselines of the speed comparison and the check of their settings (no jax, no torch: the
baseline's own process imports this too)."""
from __future__ import annotations

import pathlib

from hybridjax.errors import ConfigError

BASELINES = ("port", "official")  # benchmarks/torch_baseline.py, or the official code (benchmarks/official_baseline.py)
# Files of an official checkout that the official baseline (benchmarks/official_baseline.py) reads.
OFFICIAL_FILES = ("models/hybrid_cnn_snn.py", "models/neurons.py", "torch_utils/network_initialization.py",
                  "configs/hybrid_cnn_snn_config.ini")


class BaselineError(ConfigError, RuntimeError):
    """The PyTorch baseline cannot start with these settings (the message names the setting or the interpreter)."""


def check_baseline(baseline: str, official_repo: str | None, flag: str = "--torch-baseline") -> None:
    """:class:`BaselineError` for an unknown baseline, or an official baseline without a usable checkout
    (``flag``: the command line's name of the baseline option, for the message)."""
    if baseline not in BASELINES:
        raise BaselineError(f"{flag} {baseline!r}: choose one of {', '.join(BASELINES)}")
    if baseline != "official":
        if official_repo is not None:
            raise BaselineError(f"--official-repo is only read with {flag} official")
        return
    if official_repo is None:
        raise BaselineError(f"{flag} official needs --official-repo PATH (a checkout of "
                            "https://github.com/uzh-rpg/hybrid_ann_snn)")
    missing = [name for name in OFFICIAL_FILES if not (pathlib.Path(official_repo) / name).is_file()]
    if missing:
        raise BaselineError(f"--official-repo {official_repo}: not a checkout of uzh-rpg/hybrid_ann_snn "
                            f"(missing {', '.join(missing)})")
