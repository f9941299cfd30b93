"""The official hybrid training step (uzh-rpg/hybrid_ann_snn, PyTorch + SpikingJelly) as a timing baseline.

Nothing of the official code is copied here: :func:`load_official` imports its modules at run time from a
checkout the user names (``--official-repo PATH``; ``git clone https://github.com/uzh-rpg/hybrid_ann_snn``),
and needs what that code imports: torch and ``spikingjelly==0.0.0.0.14`` (``pip install --no-deps`` keeps the
installed torch). Used by ``experiments/benchmark_torch.py --baseline official`` and, through it, by
``experiments/benchmark.py --torch-baseline official`` (alternated with hybridjax's step).

The step follows the official hybrid training loop (``train/train_cnn_snn_hybrid_model.py``) on one batch:

* the model is the official ``Hybrid_CNN_SNN`` built from the official config
  (``configs/hybrid_cnn_snn_config.ini``: tau 3, threshold 1, output decay 0.8), initialised with the official
  ``init_weights_div_last_layer`` and frozen with ``freeze_cnn_weights`` (ANN frozen; state initialisers and
  SNN trained), optimised by ``Adam(model.parameters(), lr)`` with the config's lr (5e-5);
* per step: ``zero_grad``, SpikingJelly's ``functional.reset_net``, the first bin with ``v_init=True`` (ANN +
  initialisers), the other bins with ``v_init=False``, the heatmap loss ``mean_k MSE(out_k, blur(y_k))``,
  the next window's initial membranes (``v_init=True`` on the next ANN frame) against the last step's
  membranes (``nn.MSELoss`` averaged over the 9 layers), ``0.95 * heatmap + 0.05 * membrane``, backward,
  ``optimizer.step()``.

Two departures, both outside the network and both negligible in time: the targets are blurred per bin by the
PyTorch port's :func:`torch_baseline.gaussian_targets` (the official ``my_mse_loss`` calls torchvision's
``gaussian_blur``; the port's blur equals the official targets in ``tests/test_torch_baseline.py``, and this
avoids requiring torchvision, whose PyPI wheel does not load against a CPU-only torch), and the per-bin MPJPE
logging of the official loop (an ``argmax`` and an ``.item()`` per bin, not part of the gradient) is left out.

:func:`check_against_port` verifies that this step and the port's (``torch_baseline.hybrid_loss_and_grads``)
compute the same loss and gradients from the same weights and batch, so that the two baselines time the same
function.
"""
from __future__ import annotations

import configparser
import contextlib
import dataclasses
import pathlib
import sys

import torch
from torch import nn
from torch_baseline import (
    HybridBatch,
    check_step_shape,
    gaussian_targets,
    hybrid_loss_and_grads,
    synthetic_batch,
    timed,
)

from hybridjax.errors import ConfigError, UserError

MODEL_FILE = "models/hybrid_cnn_snn.py"  # the official hybrid model (a path without it is not the checkout)
CONFIG_FILE = "configs/hybrid_cnn_snn_config.ini"  # the official hybrid-stage config (DHP19)
OUT_WEIGHT, MP_WEIGHT = 0.95, 0.05  # the official loop's (1 - mp_loss_ratio) and mp_loss_ratio
NUM_LIF_LAYERS = 9  # the official membrane loss divides each layer's MSE by 9


class OfficialCodeError(UserError):
    """The official code cannot be imported from the given path (the message says what is missing)."""


@dataclasses.dataclass
class OfficialCode:
    """What the benchmark uses of the official checkout (imported from it at run time)."""

    model_class: type  # models.hybrid_cnn_snn.Hybrid_CNN_SNN
    init_weights: object  # torch_utils.network_initialization.init_weights_div_last_layer
    freeze_ann: object  # torch_utils.network_initialization.freeze_cnn_weights
    reset_net: object  # spikingjelly.clock_driven.functional.reset_net
    config: configparser.ConfigParser  # configs/hybrid_cnn_snn_config.ini


def load_official(repo: str | pathlib.Path) -> OfficialCode:
    """Imports the official model, its initialisation and SpikingJelly's reset from the checkout ``repo``."""
    if not (pathlib.Path(repo) / MODEL_FILE).is_file():  # (experiments/benchmark.py checks more files first)
        raise OfficialCodeError(f"--official-repo {repo}: not a checkout of uzh-rpg/hybrid_ann_snn (no {MODEL_FILE})")
    root = str(pathlib.Path(repo).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)  # the official modules import each other as top-level packages (models.*)
    try:
        from models.hybrid_cnn_snn import Hybrid_CNN_SNN
        from spikingjelly.clock_driven import functional
        from torch_utils.network_initialization import freeze_cnn_weights, init_weights_div_last_layer
    except ImportError as error:
        raise OfficialCodeError(f"--official-repo {repo}: cannot import the official model ({error}); it needs "
                                "torch and spikingjelly 0.0.0.0.14 (pip install --no-deps spikingjelly==0.0.0.0.14)"
                                ) from error
    config = configparser.ConfigParser()
    config.read(pathlib.Path(root) / CONFIG_FILE)
    return OfficialCode(model_class=Hybrid_CNN_SNN, init_weights=init_weights_div_last_layer,
                        freeze_ann=freeze_cnn_weights, reset_net=functional.reset_net, config=config)


def build_official(code: OfficialCode, dtype=torch.float32):
    """``(model, optimizer)`` as the official hybrid stage builds them (no pretrained weights: the official
    initialisation, the ANN frozen, Adam with the config's learning rate)."""
    model = code.model_class(kwargs=code.config["model_parameters"])
    with contextlib.redirect_stdout(sys.stderr):  # the official init prints; stdout is the server's channel
        model.apply(code.init_weights)
    code.freeze_ann(model)
    model = model.to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=code.config["training_parameters"].getfloat("lr"))
    return model, optimizer


def official_loss_and_grads(code: OfficialCode, model: nn.Module, batch: HybridBatch) -> dict[str, torch.Tensor]:
    """Forward over the window as the official loop runs it, the official hybrid loss, backward.

    Returns ``{"loss", "out_loss", "mp_loss"}`` (detached); gradients are left in ``.grad``.
    """
    num_bins = batch.events.shape[1]
    if num_bins < 2:
        raise ConfigError(f"num_steps: the official loop needs at least 2 bins (its membrane loss reads the last "
                         f"v_init=False step), got {num_bins}")
    model.train()
    code.reset_net(model)
    out_loss = 0.0
    for i in range(num_bins):
        if i == 0:
            output, _ = model(batch.events[:, i], batch.ann_input, v_init=True)
        else:
            output, mp_vals_snn = model(batch.events[:, i], v_init=False)
        out_loss = out_loss + torch.mean(torch.square(output - gaussian_targets(batch.labels[:, i]))) / num_bins
    mp_vals_cnn = model(x_snn=None, x_cnn=batch.ann_input_next, v_init=True)
    mse = nn.MSELoss()
    mp_loss = sum(mse(mp_vals_cnn[name], mp_vals_snn[name]) / NUM_LIF_LAYERS for name in mp_vals_cnn)
    loss = OUT_WEIGHT * out_loss + MP_WEIGHT * mp_loss
    loss.backward()
    return {"loss": loss.detach(), "out_loss": out_loss.detach(), "mp_loss": mp_loss.detach()}


def official_train_step(code: OfficialCode, model: nn.Module, optimizer: torch.optim.Optimizer,
                        batch: HybridBatch) -> dict[str, torch.Tensor]:
    """One official hybrid training step: zero grads, loss and backward, Adam update."""
    optimizer.zero_grad()
    terms = official_loss_and_grads(code, model, batch)
    optimizer.step()
    return terms


def warm_official_step(repo: str, resolution: int, batch_size: int, num_steps: int, threads: int | None,
                       seed: int = 0):
    """Builds the official model and optimiser in float32 and a synthetic batch (the port's), runs one warm-up
    step and returns ``timed_step() -> (wall_s, cpu_s, loss)`` (as ``torch_baseline``'s server times the port)."""
    check_step_shape(resolution, batch_size, num_steps)
    code = load_official(repo)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, optimizer = build_official(code)
    batch = synthetic_batch(resolution, batch_size, num_steps, seed=seed)
    official_train_step(code, model, optimizer, batch)
    return timed(lambda: official_train_step(code, model, optimizer, batch))


def check_against_port(repo: str, resolution: int = 64, batch_size: int = 2, num_steps: int = 3,
                       dtype=torch.float32, seed: int = 0) -> dict:
    """Loss and gradients of the official step and of the port's from the same weights and the same batch.

    The port (``torch_baseline.HybridCNNSNN``) loads the official model's state_dict with ``strict=True``.
    Returns both sides' loss terms, the largest relative loss difference and, over all trainable parameters,
    the largest ``max|g_official - g_port| / max|g_official|`` (with the parameter's name; see the comment on
    gradients that are zero up to rounding).
    """
    import torch_baseline

    check_step_shape(resolution, batch_size, num_steps)
    code = load_official(repo)
    torch.manual_seed(seed)
    official, _ = build_official(code, dtype)
    port = torch_baseline.HybridCNNSNN().to(dtype)
    port.load_state_dict(official.state_dict(), strict=True)
    port.freeze_ann()
    batch = synthetic_batch(resolution, batch_size, num_steps, dtype=dtype, seed=seed)
    theirs = official_loss_and_grads(code, official, batch)
    ours = hybrid_loss_and_grads(port, batch)
    grads = {name: (param.grad, dict(port.named_parameters())[name].grad)
             for name, param in official.named_parameters() if param.grad is not None}
    global_scale = max(float(g.abs().max()) for g, _ in grads.values())
    # A conv bias followed by BatchNorm has a zero gradient up to rounding: a tensor's error is relative to its
    # largest entry, but never to less than 1e-3 of the largest entry of all gradients.
    worst_name, worst = "", 0.0
    for name, (theirs_grad, ours_grad) in grads.items():
        scale = max(float(theirs_grad.abs().max()), 1e-3 * global_scale)
        error = float((theirs_grad - ours_grad).abs().max()) / scale
        if error >= worst:
            worst_name, worst = name, error
    trained = sum(p.requires_grad for p in official.parameters())
    if trained != len(port.trainable_parameters()):
        raise AssertionError(f"the official model trains {trained} tensors, the port "
                             f"{len(port.trainable_parameters())}")
    return {
        "dtype": str(dtype).removeprefix("torch."), "resolution": resolution, "batch_size": batch_size,
        "num_steps": num_steps, "trained_tensors": trained,
        "official": {k: float(v) for k, v in theirs.items()}, "port": {k: float(v) for k, v in ours.items()},
        "max_loss_rel_diff": max(abs(float(theirs[k]) - float(ours[k])) / abs(float(theirs[k])) for k in theirs),
        "max_grad_rel_diff": worst, "max_grad_rel_diff_param": worst_name,
    }


__all__ = ["OfficialCode", "OfficialCodeError", "build_official", "check_against_port",
           "load_official", "official_loss_and_grads", "official_train_step",
           "warm_official_step"]
