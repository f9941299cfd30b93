r"""A PyTorch re-implementation of the official hybrid ANN-SNN and its training step: the timing baseline.

The official code (uzh-rpg/hybrid_ann_snn, PyTorch + SpikingJelly) cannot run here, so this module rebuilds
its hybrid model ``Hybrid_CNN_SNN`` the way that code runs on a CPU: NCHW tensors, ``nn.Conv2d`` /
``nn.BatchNorm2d`` modules, ``F.interpolate`` for the bilinear x2 upsampling, stateful single-step LIF
neurons (SpikingJelly style: the membrane is an attribute of the neuron module, the spike a
``torch.autograd.Function``) and a Python loop over the SNN steps, with backpropagation through time by
autograd. Its ``state_dict()`` has the official keys and shapes in the official order, so official weights
load with ``strict=True``; ``tests/test_torch_baseline.py`` proves it computes the official function against
the float64 golden files. It is a benchmark baseline (``experiments/benchmark_torch.py``), not part of the
JAX library: it lives outside the importable package (``benchmarks/``), needs torch (the ``torch`` extra), and
nothing in ``hybridjax`` imports it.

Semantics (``SPEC.md`` sections 1-3):

.. math::

    H_k &= V_{k-1} + (X_k - V_{k-1}) / \tau, \quad S_k = \Theta(H_k - V_{th}), \quad V_k = H_k - S_k V_{th}\\
    \partial S / \partial x &= (\alpha / 2) / (1 + (\pi \alpha x / 2)^2) \quad (x = H - V_{th}, \alpha = 2)\\
    out_0 &= \text{ANN heatmap (no gradient)}, \quad out_k = d \cdot out_{k-1} + \text{head}_k\\
    L &= 0.95 \cdot \tfrac{1}{T}\sum_k \mathrm{MSE}(out_k, y_k)
        + 0.05 \cdot \tfrac{1}{9}\sum_l \mathrm{MSE}(V^{l}_{init}(\text{next window}), V^{l}_T)

with ``V_0 = V_init`` from the state initialisers, ``tau = 3``, ``V_th = 1``, ``d = 0.8``; ``y_k`` the one-hot
joint maps blurred by a Gaussian (sigma 2, 11 taps, reflect padding) and divided by their maximum.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1  # LeakyReLU slope of the ANN and of the state initialisers
HYBRID_TAU = 3.0  # LIF time constant in 10 ms steps (hybrid)
V_THRESHOLD = 1.0  # firing threshold
ATAN_ALPHA = 2.0  # SpikingJelly ATan surrogate sharpness
OUTPUT_DECAY = 0.8  # heatmap integration decay per 10 ms step
OUT_WEIGHT = 0.95  # hybrid loss weight of the heatmap MSE
MP_WEIGHT = 0.05  # hybrid loss weight of the membrane-potential loss L_mp
LEARNING_RATE = 5e-5  # official hybrid-stage Adam learning rate
BLUR_SIGMA = 2.0  # target heatmap Gaussian sigma (pixels)
BLUR_TAPS = 11  # target heatmap Gaussian kernel size
RESOLUTION_MULTIPLE = 32  # the ANN U-Net pools five times

# The 9 LIF layers in forward order, named like the official modules (the golden files' ``lif_layers``).
LIF_NAMES = (
    "static_conv_snn.activation", "down1_snn.conv.activation", "down2_snn.conv.activation",
    "down3_snn.conv.activation", "residualBlock_snn.activation1", "residualBlock_snn.activation2",
    "up1_snn.activation", "up2_snn.activation", "up3_snn.activation",
)
# State initialiser of each LIF layer (same order), the ANN feature it reads and its official v_init key.
INITIALISERS = (
    ("states_in", "conv2", "v_in"), ("states_1", "down1", "v_1"), ("states_2", "down2", "v_2"),
    ("states_3", "down3", "v_3"), ("states_4", "up1", "v_4"), ("states_5", "up2", "v_5"),
    ("states_6", "up3", "v_6"), ("states_7", "up4", "v_7"), ("states_8", "up5", "v_8"),
)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, ``align_corners=False`` (the official ``F.interpolate`` call)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- spiking neuron


class ATanSpike(torch.autograd.Function):
    """``S = Theta(x)`` with ``Theta(0) = 1``; backward ``g * (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        surrogate = (alpha / 2.0) / (1.0 + torch.square(math.pi / 2.0 * alpha * x))
        return grad_spike * surrogate, None


class LIFNeuron(nn.Module):
    """Single-step LIF (SpikingJelly ``LIFNode(tau, decay_input=True, v_reset=None)``, soft reset).

    The membrane ``v`` is a plain attribute (not in the state_dict): set it before a window
    (:meth:`set_membrane`), then every call advances one step and returns the spikes.
    """

    def __init__(self, tau: float = HYBRID_TAU, v_threshold: float = V_THRESHOLD, alpha: float = ATAN_ALPHA):
        super().__init__()
        self.tau = tau
        self.v_threshold = v_threshold
        self.alpha = alpha
        self.v: torch.Tensor | float = 0.0
        self.record_spikes = False
        self.spike_counts: list[torch.Tensor] = []  # per step [B] spikes, when record_spikes

    def set_membrane(self, v: torch.Tensor | float, record_spikes: bool = False) -> None:
        """Starts a window from membrane ``v`` (the state initialiser's output keeps its gradient)."""
        self.v = v
        self.record_spikes = record_spikes
        self.spike_counts = []

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        charged = self.v + (current - self.v) / self.tau
        spikes = ATanSpike.apply(charged - self.v_threshold, self.alpha)
        self.v = charged - spikes * self.v_threshold
        if self.record_spikes:
            self.spike_counts.append(spikes.detach().sum(dim=(1, 2, 3)))
        return spikes


# --------------------------------------------------------------------------- SNN blocks


class SpikingConv(nn.Module):
    """``[bilinear x2] -> conv (no bias) -> BatchNorm -> LIF`` (official ``conv2d`` / ``norm_layer`` /
    ``activation``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm_layer = nn.BatchNorm2d(cout)
        self.activation = LIFNeuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = upsample2x(x)
        return self.activation(self.norm_layer(self.conv2d(x)))


class SpikingDown(nn.Module):
    """A stride-2 spiking conv block, wrapped like the official ``down*_snn.conv``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = SpikingConv(cin, cout, 5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpikingResidual(nn.Module):
    """``conv3x3 -> BN -> LIF1 -> conv3x3 -> BN -> + input -> LIF2`` (modules registered in the official order)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.activation1 = LIFNeuron()
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.activation2 = LIFNeuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.activation1(self.bn1(self.conv1(x)))
        return self.activation2(self.bn2(self.conv2(mid)) + x)


class HeadConv(nn.Module):
    """The hybrid's head: conv1x1 without bias, no BatchNorm, no neuron (its output is a current)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


# --------------------------------------------------------------------------- ANN and initialisers


class AnnDown(nn.Module):
    """``avgpool2 -> conv k -> LReLU -> conv k -> LReLU``."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(cout, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(F.avg_pool2d(x, 2)), LEAKY_SLOPE)
        return F.leaky_relu(self.conv2(x), LEAKY_SLOPE)


class AnnUp(nn.Module):
    """``bilinear x2 -> conv3x3 -> LReLU -> concat skip -> conv3x3 -> LReLU``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(2 * cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(upsample2x(x)), LEAKY_SLOPE)
        return F.leaky_relu(self.conv2(torch.cat([x, skip], dim=1)), LEAKY_SLOPE)


class StateInitialiser(nn.Module):
    """``[bilinear x2 if cin > cout] -> conv1x1 -> BN -> LReLU -> conv1x1 -> BN``: an ANN map -> a membrane.

    The only initialiser with more input than output channels (``states_4``: 512 -> 256) reads an ANN map of
    half its membrane's resolution; the official module keys its upsampling on the channel counts.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample = cin > cout
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 1)
        self.norm_layer = nn.BatchNorm2d(cout)
        self.norm_layer2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = upsample2x(x)
        x = F.leaky_relu(self.norm_layer(self.conv1(x)), LEAKY_SLOPE)
        return self.norm_layer2(self.conv2(x))


# --------------------------------------------------------------------------- the hybrid


@dataclasses.dataclass
class HybridOutput:
    """What :meth:`HybridCNNSNN.forward` returns (official layouts)."""

    heatmaps: torch.Tensor  # [T, B, J, H, W] integrated prediction after every SNN step
    ann_heatmap: torch.Tensor  # [B, J, H, W] (no gradient)
    v_init: dict[str, torch.Tensor]  # official v_init key -> initial membrane [B, C, h, w]
    v_last: dict[str, torch.Tensor]  # official LIF name -> membrane after the last step
    spike_counts: torch.Tensor | None  # [T, 9, B] spikes per LIF layer per step (when recorded)


class HybridCNNSNN(nn.Module):
    """The official ``Hybrid_CNN_SNN`` (paper widths, 20-channel ANN input, 2-channel events, 13 joints).

    Submodules are registered in the official order, so ``state_dict()`` keys, shapes and order equal
    ``reference/hybrid_cnn_snn.keys.txt``.
    """

    def __init__(self, num_joints: int = 13, ann_in_channels: int = 20, snn_in_channels: int = 2,
                 output_decay: float = OUTPUT_DECAY):
        super().__init__()
        self.output_decay = output_decay
        s0, s1, s2, s3 = 32, 64, 128, 256
        c0, c1, c2, c3, c4, c5 = 32, 64, 128, 256, 512, 512
        self.static_conv_snn = SpikingConv(snn_in_channels, s0, 5)
        self.down1_snn = SpikingDown(s0, s1)
        self.down2_snn = SpikingDown(s1, s2)
        self.down3_snn = SpikingDown(s2, s3)
        self.residualBlock_snn = SpikingResidual(s3)
        self.up1_snn = SpikingConv(2 * s3, s2, 5, upsample=True)
        self.up2_snn = SpikingConv(2 * s2, s1, 5, upsample=True)
        self.up3_snn = SpikingConv(2 * s1, s0, 5, upsample=True)
        self.temporalflat_snn = HeadConv(2 * s0, num_joints)
        self.conv1_cnn = nn.Conv2d(ann_in_channels, c0, 7, padding=3)
        self.conv2_cnn = nn.Conv2d(c0, c0, 7, padding=3)
        self.states_in = StateInitialiser(c0, s0)
        self.down1_cnn = AnnDown(c0, c1, 5)
        self.states_1 = StateInitialiser(c1, s1)
        self.down2_cnn = AnnDown(c1, c2, 3)
        self.states_2 = StateInitialiser(c2, s2)
        self.down3_cnn = AnnDown(c2, c3, 3)
        self.states_3 = StateInitialiser(c3, s3)
        self.down4_cnn = AnnDown(c3, c4, 3)
        self.down5_cnn = AnnDown(c4, c5, 3)
        self.up1_cnn = AnnUp(c5, c4)
        self.states_4 = StateInitialiser(c4, s3)
        self.up2_cnn = AnnUp(c4, c3)
        self.states_5 = StateInitialiser(c3, s3)
        self.up3_cnn = AnnUp(c3, c2)
        self.states_6 = StateInitialiser(c2, s2)
        self.up4_cnn = AnnUp(c2, c1)
        self.states_7 = StateInitialiser(c1, s1)
        self.up5_cnn = AnnUp(c1, c0)
        self.states_8 = StateInitialiser(c0, s0)
        self.conv3_cnn = nn.Conv2d(c0, num_joints, 3, padding=1)

    # ----- parts

    def lif_neurons(self) -> list[LIFNeuron]:
        """The 9 LIF layers in forward order (:data:`LIF_NAMES`)."""
        modules = dict(self.named_modules())
        return [modules[name] for name in LIF_NAMES]

    def ann_modules(self) -> list[nn.Module]:
        """The ANN U-Net's modules (frozen in the hybrid stage)."""
        names = ["conv1_cnn", "conv2_cnn", "conv3_cnn"] + [f"{d}{i}_cnn" for d in ("down", "up") for i in range(1, 6)]
        return [getattr(self, n) for n in names]

    def freeze_ann(self) -> None:
        """The hybrid stage trains the initialisers and the SNN only."""
        for module in self.ann_modules():
            module.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def ann(self, ann_input: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The ANN U-Net: ``(heatmap [B, J, H, W], feature maps the initialisers read)``."""
        feats = {}
        x = F.leaky_relu(self.conv1_cnn(ann_input), LEAKY_SLOPE)
        x = feats["conv2"] = F.leaky_relu(self.conv2_cnn(x), LEAKY_SLOPE)
        for i in range(1, 5):
            x = feats[f"down{i}"] = getattr(self, f"down{i}_cnn")(x)
        x = self.down5_cnn(x)
        skips = (feats["down4"], feats["down3"], feats["down2"], feats["down1"], feats["conv2"])
        for i, skip in enumerate(skips, start=1):
            x = feats[f"up{i}"] = getattr(self, f"up{i}_cnn")(x, skip)
        return self.conv3_cnn(x), feats

    def initial_states(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{v_init key: membrane}`` of the 9 LIF layers (in :data:`LIF_NAMES` order) from ANN features."""
        return {key: getattr(self, name)(features[feature]) for name, feature, key in INITIALISERS}

    def snn_step(self, x: torch.Tensor) -> torch.Tensor:
        """One step of the spiking U-Net on events ``[B, 2, H, W]``; returns the head current ``[B, J, H, W]``."""
        s_static = self.static_conv_snn(x)
        s_down1 = self.down1_snn(s_static)
        s_down2 = self.down2_snn(s_down1)
        s_down3 = self.down3_snn(s_down2)
        s_res = self.residualBlock_snn(s_down3)
        s_up1 = self.up1_snn(torch.cat([s_res, s_down3], dim=1))
        s_up2 = self.up2_snn(torch.cat([s_up1, s_down2], dim=1))
        s_up3 = self.up3_snn(torch.cat([s_up2, s_down1], dim=1))
        return self.temporalflat_snn(torch.cat([s_up3, s_static], dim=1))

    # ----- the whole window

    def forward(self, ann_input: torch.Tensor, events: torch.Tensor, record_spikes: bool = False) -> HybridOutput:
        """Runs the ANN once (no gradient) and the SNN over ``events [B, T, 2, H, W]``.

        The initial membranes keep their gradient (they are trained through the SNN loss and L_mp).
        """
        if events.dim() != 5 or ann_input.dim() != 4 or events.shape[0] != ann_input.shape[0] \
                or events.shape[-2:] != ann_input.shape[-2:]:
            raise ValueError(f"events must be [B, T, 2, H, W] and ann_input [B, 20, H, W] with the same B, H, W; "
                             f"got {tuple(events.shape)} and {tuple(ann_input.shape)}")
        with torch.no_grad():
            ann_heatmap, feats = self.ann(ann_input)
        v_init = self.initial_states(feats)
        neurons = self.lif_neurons()
        for neuron, v in zip(neurons, v_init.values()):
            neuron.set_membrane(v, record_spikes)
        out = ann_heatmap
        heatmaps = []
        for t in range(events.shape[1]):
            out = self.output_decay * out + self.snn_step(events[:, t])
            heatmaps.append(out)
        counts = None
        if record_spikes:
            counts = torch.stack([torch.stack(n.spike_counts) for n in neurons], dim=1)
        return HybridOutput(heatmaps=torch.stack(heatmaps), ann_heatmap=ann_heatmap, v_init=v_init,
                            v_last={name: n.v for name, n in zip(LIF_NAMES, neurons)}, spike_counts=counts)


def xavier_init_(model: nn.Module) -> nn.Module:
    """The official weight init: Xavier-normal conv kernels; zero conv biases; BatchNorm at its defaults."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------- loss and training step


def gaussian_targets(labels: torch.Tensor, sigma: float = BLUR_SIGMA, taps: int = BLUR_TAPS) -> torch.Tensor:
    """Blurred, max-normalised targets from one-hot maps ``[..., H, W]`` (all-zero maps stay zero).

    Kernel ``k(x) = exp(-x^2 / (2 sigma^2)) / sum`` on ``x = -(taps//2) .. taps//2``, separable, reflect padding.
    """
    half = taps // 2
    x = torch.arange(taps, dtype=labels.dtype, device=labels.device) - half
    kernel = torch.exp(-torch.square(x) / (2.0 * sigma * sigma))
    kernel = kernel / kernel.sum()
    lead, (h, w) = labels.shape[:-2], labels.shape[-2:]
    maps = labels.reshape(-1, 1, h, w)
    maps = F.conv2d(F.pad(maps, (0, 0, half, half), mode="reflect"), kernel.view(1, 1, taps, 1))
    maps = F.conv2d(F.pad(maps, (half, half, 0, 0), mode="reflect"), kernel.view(1, 1, 1, taps))
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    maps = torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))
    return maps.reshape(*lead, h, w)


def hybrid_loss(heatmaps: torch.Tensor, targets: torch.Tensor, v_target: dict[str, torch.Tensor],
                v_last: dict[str, torch.Tensor], out_weight: float = OUT_WEIGHT, mp_weight: float = MP_WEIGHT
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, out_loss, mp_loss)``: ``out_weight * mean_k MSE(out_k, y_k) + mp_weight * L_mp``.

    heatmaps, targets ``[T, B, J, H, W]``; ``v_target`` keyed by v_init key and ``v_last`` by LIF name, both in
    :data:`LIF_NAMES` order (the target is not detached).
    """
    out_loss = torch.stack([F.mse_loss(heatmaps[t], targets[t]) for t in range(heatmaps.shape[0])]).mean()
    pairs = zip(v_target.values(), v_last.values(), strict=True)
    mp_loss = torch.stack([F.mse_loss(last, target) for target, last in pairs]).mean()
    return out_weight * out_loss + mp_weight * mp_loss, out_loss, mp_loss


@dataclasses.dataclass
class HybridBatch:
    """One hybrid training batch in the official layouts."""

    ann_input: torch.Tensor  # [B, 20, H, W] constant-count frame at the window start
    ann_input_next: torch.Tensor  # [B, 20, H, W] the frame 100 ms later (the L_mp target)
    events: torch.Tensor  # [B, T, 2, H, W] event counts per bin
    labels: torch.Tensor  # [B, T, J, H, W] one-hot joint maps (all zero where a joint is missing)


def hybrid_loss_and_grads(model: HybridCNNSNN, batch: HybridBatch) -> dict[str, torch.Tensor]:
    """Forward over the window, the official hybrid loss, backward (gradients left in ``.grad``).

    Train mode: every BatchNorm uses its call's batch statistics (the SNN's once per step). The L_mp target
    is the initialisers' output on the next window's ANN features (ANN without gradient, initialisers with).
    """
    model.train()
    out = model(batch.ann_input, batch.events)
    with torch.no_grad():
        _, next_features = model.ann(batch.ann_input_next)
    v_target = model.initial_states(next_features)
    targets = gaussian_targets(batch.labels).transpose(0, 1)
    loss, out_loss, mp_loss = hybrid_loss(out.heatmaps, targets, v_target, out.v_last)
    loss.backward()
    return {"loss": loss.detach(), "out_loss": out_loss.detach(), "mp_loss": mp_loss.detach()}


def hybrid_train_step(model: HybridCNNSNN, optimizer: torch.optim.Optimizer, batch: HybridBatch
                      ) -> dict[str, torch.Tensor]:
    """One training step of the hybrid stage: zero grads, loss and backward, Adam update."""
    optimizer.zero_grad(set_to_none=True)
    terms = hybrid_loss_and_grads(model, batch)
    optimizer.step()
    return terms


def synthetic_batch(resolution: int, batch_size: int, num_steps: int, *, num_joints: int = 13,
                    event_rate: float = 0.02, dtype=torch.float32, seed: int = 0) -> HybridBatch:
    """A batch of the loader's shapes: Poisson event counts and ANN frames, one-hot labels inside the image.

    Same statistics as :func:`hybridjax.bench.training.synthetic_batch` (events Poisson(0.02), frames
    Poisson(0.3), landmarks uniform at least 4 px from the border).
    """
    rng = np.random.default_rng(seed)
    h = w = resolution

    def frame():
        return torch.as_tensor(rng.poisson(0.3, (batch_size, 20, h, w)), dtype=dtype)

    events = torch.as_tensor(rng.poisson(event_rate, (batch_size, num_steps, 2, h, w)), dtype=dtype)
    uv = rng.uniform(4, resolution - 4, (batch_size, num_steps, num_joints, 2)).astype(np.int64)
    labels = np.zeros((batch_size, num_steps, num_joints, h, w))
    b, t, j = np.meshgrid(np.arange(batch_size), np.arange(num_steps), np.arange(num_joints), indexing="ij")
    labels[b, t, j, uv[..., 1], uv[..., 0]] = 1.0
    return HybridBatch(ann_input=frame(), ann_input_next=frame(), events=events,
                       labels=torch.as_tensor(labels, dtype=dtype))


# --------------------------------------------------------------------------- timing


def check_step_shape(resolution: int, batch_size: int, num_steps: int) -> None:
    """``ValueError`` unless the resolution fits the ANN's five poolings and batch and steps are positive."""
    if resolution <= 0 or resolution % RESOLUTION_MULTIPLE:
        raise ValueError(f"resolution {resolution} is not a positive multiple of {RESOLUTION_MULTIPLE} "
                         "(the ANN U-Net pools five times)")
    if batch_size < 1 or num_steps < 1:
        raise ValueError(f"batch_size and num_steps must be >= 1, got {batch_size}, {num_steps}")


def timed(train_once):
    """``timed_step() -> (wall_s, cpu_s, loss)`` around ``train_once() -> {"loss": tensor, ...}``."""

    def timed_step() -> tuple[float, float, float]:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        terms = train_once()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return wall, cpu, float(terms["loss"])

    return timed_step


def warm_hybrid_step(resolution: int, batch_size: int, num_steps: int, threads: int | None = None, seed: int = 0):
    """Builds the float32 model, optimiser and a synthetic batch, runs one warm-up step (allocator, oneDNN
    primitives, Adam state) and returns ``timed_step() -> (wall_s, cpu_s, loss)`` for that model and batch."""
    check_step_shape(resolution, batch_size, num_steps)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = xavier_init_(HybridCNNSNN()).to(torch.float32)
    model.freeze_ann()
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=LEARNING_RATE)
    batch = synthetic_batch(resolution, batch_size, num_steps, seed=seed)
    hybrid_train_step(model, optimizer, batch)
    return timed(lambda: hybrid_train_step(model, optimizer, batch))


def time_hybrid_step(resolution: int, batch_size: int, num_steps: int = 10, repeats: int = 5,
                     threads: int | None = None, seed: int = 0) -> dict:
    """Times the hybrid training step (float32, CPU) after one warm-up step.

    Returns ``median_wall_s`` / ``min_wall_s`` (seconds per step), ``median_cpu_s`` (process CPU seconds per
    step, all threads), ``wall_s`` (every timed step), ``torch_version``, ``num_threads``
    (``torch.get_num_threads()``), ``resolution``, ``batch_size``, ``num_steps``, ``repeats`` and ``loadavg``
    (``os.getloadavg()`` after the run).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = time_steps(warm_hybrid_step(resolution, batch_size, num_steps, threads, seed), repeats)
    result.update(resolution=resolution, batch_size=batch_size, num_steps=num_steps)
    return result


def time_steps(timed_step, repeats: int) -> dict:
    """Calls ``timed_step() -> (wall_s, cpu_s, loss)`` ``repeats`` times: the fields of :func:`time_hybrid_step`
    except the shape."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    walls, cpus, losses = zip(*(timed_step() for _ in range(repeats)))
    if not math.isfinite(losses[-1]):
        raise FloatingPointError(f"the timed hybrid step produced a non-finite loss {losses[-1]}")
    return {
        "median_wall_s": statistics.median(walls), "min_wall_s": min(walls), "median_cpu_s": statistics.median(cpus),
        "wall_s": list(walls), "torch_version": torch.__version__, "num_threads": torch.get_num_threads(),
        "repeats": repeats, "loadavg": list(os.getloadavg()),
    }


def serve_hybrid_steps(resolution: int, batch_size: int, num_steps: int = 10, threads: int | None = None,
                       seed: int = 0, commands=None, replies=None) -> None:
    """Keeps one model and batch alive and times one hybrid step per ``step`` command (interleaved benchmarks).

    The protocol is :func:`serve_timed_steps`'s; the step is this module's (``warm_hybrid_step``).
    """
    serve_timed_steps(warm_hybrid_step(resolution, batch_size, num_steps, threads, seed), commands, replies)


def serve_timed_steps(timed_step, commands=None, replies=None) -> None:
    """Answers ``step`` commands with one call of ``timed_step() -> (wall_s, cpu_s, loss)`` each.

    Reads lines from ``commands`` (default stdin): ``step`` runs and times one training step and answers one JSON
    line ``{"wall_s", "cpu_s", "loss"}`` on ``replies`` (default stdout); ``quit`` (or end of input) stops. First
    (the model built and warmed up by the caller) it answers ``{"ready": true, "torch_version", "num_threads"}``.
    A caller that alternates these steps with its own sees both under the same machine conditions.
    """
    import sys

    commands = sys.stdin if commands is None else commands
    replies = sys.stdout if replies is None else replies

    def reply(record):
        replies.write(json.dumps(record) + "\n")
        replies.flush()

    reply({"ready": True, "torch_version": torch.__version__, "num_threads": torch.get_num_threads()})
    for line in commands:
        command = line.strip()
        if command == "quit":
            break
        if command != "step":
            raise ValueError(f"serve_hybrid_steps: unknown command {command!r} (expected 'step' or 'quit')")
        wall, cpu, loss = timed_step()
        reply({"wall_s": wall, "cpu_s": cpu, "loss": loss})


__all__ = [
    "ATanSpike", "HybridBatch", "HybridCNNSNN", "HybridOutput", "INITIALISERS", "LIFNeuron", "LIF_NAMES",
    "check_step_shape", "gaussian_targets", "hybrid_loss", "hybrid_loss_and_grads", "hybrid_train_step",
    "serve_hybrid_steps", "serve_timed_steps", "synthetic_batch", "time_hybrid_step", "time_steps", "timed",
    "warm_hybrid_step", "xavier_init_",
]
