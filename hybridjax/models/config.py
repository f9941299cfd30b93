"""Typed model configuration with named presets.

Time constants are stored per 10 ms (the official bin length) and converted to the configured SNN step
(:attr:`ModelConfig.step_ms`) by :mod:`hybridjax.snn.lif`, so the 10 ms and the 1 ms models share one
physical meaning (the same leak over any 10 ms) and ``step_ms=10`` reproduces the official numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from hybridjax.snn.lif import LIFParams, per_step_retention, tau_in_steps
from hybridjax.snn.surrogate import DEFAULT_ALPHA, SURROGATE_GRADS

# ModelConfig.hybrid_variant values: the full hybrid, output initialisation only, state initialisation only.
HYBRID_VARIANTS = ("full", "output_init", "state_init")
COMPUTE_DTYPES = ("float32", "bfloat16")  # ModelConfig.compute_dtype choices


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and neuron settings of the ANN, the spiking U-Net and the hybrid."""

    num_joints: int = 13  # output heatmaps (DHP19: 13 joints)
    ann_in_channels: int = 20  # ANN input: 2 polarities x 10 constant-count bins
    snn_in_channels: int = 2  # SNN input per step: ON / OFF event counts
    # ANN widths: conv1/conv2, down1, down2, down3, down4, down5 (the up path mirrors them)
    ann_widths: tuple[int, int, int, int, int, int] = (32, 64, 128, 256, 512, 512)
    # SNN widths: static_conv, down1, down2, down3 (residual = down3; up1/up2/up3 = down2/down1/static)
    snn_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    step_ms: float = 1.0  # SNN step length in ms (10 = the official bins; 1 = hybridjax's default)
    hybrid_tau_at_10ms: float = 3.0  # hybrid LIF tau in 10 ms steps (official 3.0)
    snn_tau_at_10ms: float = 2.0  # pure SNN LIF and output-integrator tau in 10 ms steps (official 2.0)
    output_decay_at_10ms: float = 0.8  # hybrid output integration decay per 10 ms (official 0.8)
    v_threshold: float = 1.0  # LIF firing threshold
    reset: str = "soft"  # "soft" (official) or "hard"
    v_reset: float = 0.0  # membrane after a spike with the hard reset
    detach_reset: bool = False  # official False
    surrogate: str = "atan"  # surrogate gradient (official SpikingJelly ATan)
    surrogate_alpha: float | None = None  # None = the surrogate's default (ATan: 2)
    # "layer": convs for all steps at once, LIF scanned per layer (1.4-1.5x less CPU work for the tiny model,
    # big convs for accelerators); "step": whole net scanned per step (5-10% less CPU work for paper widths)
    snn_mode: str = "layer"
    remat: bool = False  # rematerialise each scanned step (bounded memory for long 1 ms windows)
    remat_policy: str | None = None  # jax.checkpoint policy name (hybridjax.snn.scan.REMAT_POLICIES)
    # layer mode: steps per chunk (convs batched within a chunk, membranes carried across chunks); with remat
    # each chunk is rematerialised, so training memory stays that of one chunk for any window. None = whole.
    time_chunk: int | None = None
    # SNN up blocks: bilinear x2 + 5x5 conv computed on the low-resolution map (hybridjax.models.upconv: same
    # function, 36% fewer conv MACs, only the summation order differs); False = the literal composition
    fused_upsample_conv: bool = True
    # pmap/shard axis over which train-mode BatchNorm statistics are averaged (synchronised BatchNorm: the
    # statistics of the global batch); None = per device. Set only at trace time inside a pmapped training
    # step (hybridjax.train.steps), never in saved configurations, which stay device-count independent.
    batch_norm_axis_name: str | None = None
    # What the ANN hands the hybrid's SNN (the paper's ablation, SPEC section 5): "full" = the membranes and the
    # output (the hybrid, D); "output_init" = only the output (SNN deltas on the ANN heatmap, membranes from 0,
    # B, no state initialisers run); "state_init" = only the membranes (output integration from 0, C)
    hybrid_variant: Literal["full", "output_init", "state_init"] = "full"
    # operand type of every convolution and matmul: "float32", or "bfloat16" (mixed precision: bf16 operands,
    # float32 accumulation and results; parameters, membranes, output integration, BatchNorm, losses and the
    # optimiser stay float32; spikes and event counts < 256 are exact in bf16)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        if len(self.ann_widths) != 6:
            raise ValueError(f"ModelConfig.ann_widths needs 6 entries, got {self.ann_widths}")
        if len(self.snn_widths) != 4:
            raise ValueError(f"ModelConfig.snn_widths needs 4 entries, got {self.snn_widths}")
        if self.snn_mode not in ("layer", "step"):
            raise ValueError(f"ModelConfig.snn_mode must be 'layer' or 'step', got {self.snn_mode!r}")
        if self.surrogate not in SURROGATE_GRADS:
            raise ValueError(f"ModelConfig.surrogate {self.surrogate!r} is not one of {sorted(SURROGATE_GRADS)}")
        if self.time_chunk is not None and self.time_chunk < 1:
            raise ValueError(f"ModelConfig.time_chunk must be a positive step count or None, got {self.time_chunk}")
        if self.step_ms <= 0:
            raise ValueError(f"ModelConfig.step_ms must be positive, got {self.step_ms}")
        if self.batch_norm_axis_name is not None and (not isinstance(self.batch_norm_axis_name, str)
                                                      or not self.batch_norm_axis_name):
            raise ValueError("ModelConfig.batch_norm_axis_name must be a non-empty axis name or None, got "
                             f"{self.batch_norm_axis_name!r}")
        if self.hybrid_variant not in HYBRID_VARIANTS:
            raise ValueError(f"ModelConfig.hybrid_variant must be one of {HYBRID_VARIANTS}, "
                             f"got {self.hybrid_variant!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"ModelConfig.compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if not 0.0 <= self.output_decay_at_10ms <= 1.0:
            raise ValueError(f"ModelConfig.output_decay_at_10ms must be in [0, 1], got {self.output_decay_at_10ms}")

    @property
    def initialises_state(self) -> bool:
        """Whether the hybrid's membranes start from the state initialisers (else from 0)."""
        return self.hybrid_variant in ("full", "state_init")

    @property
    def initialises_output(self) -> bool:
        """Whether the hybrid's output integration starts from the ANN heatmap (else from 0)."""
        return self.hybrid_variant in ("full", "output_init")

    # ---- derived, per configured step -------------------------------------------------------------
    def lif(self, *, pure_snn: bool = False) -> LIFParams:
        """The LIF settings at the configured step length (hybrid or pure-SNN tau)."""
        tau10 = self.snn_tau_at_10ms if pure_snn else self.hybrid_tau_at_10ms
        alpha = DEFAULT_ALPHA[self.surrogate] if self.surrogate_alpha is None else float(self.surrogate_alpha)
        return LIFParams(tau=tau_in_steps(tau10, self.step_ms), v_threshold=self.v_threshold, reset=self.reset,
                         v_reset=self.v_reset, detach_reset=self.detach_reset, surrogate=self.surrogate,
                         alpha=alpha)

    @property
    def operand_dtype(self):
        """The type convolution and matmul operands are rounded to: None for ``compute_dtype="float32"``
        (operands keep the input's type: float32 in training, float64 in the parity tests), else bfloat16."""
        return None if self.compute_dtype == "float32" else jnp.bfloat16

    @property
    def output_decay(self) -> float:
        """Hybrid output decay per configured step (0.8 at 10 ms, 0.8 ** 0.1 at 1 ms)."""
        return per_step_retention(self.output_decay_at_10ms, self.step_ms)

    @property
    def snn_output_tau(self) -> float:
        """Pure-SNN output integrator tau in configured steps."""
        return tau_in_steps(self.snn_tau_at_10ms, self.step_ms)

    @staticmethod
    def preset(name: str) -> ModelConfig:
        """A named preset: ``paper``, ``paper_1ms``, ``paper_1ms_step``, ``tiny`` or ``tiny_10ms`` (see
        :data:`PRESETS`)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: dict[str, ModelConfig] = {
    # The official architecture and neuron settings with the official 10 ms bins.
    "paper": ModelConfig(step_ms=10.0),
    # The official architecture scanned over 1 ms steps (same physical time constants), set up for long windows:
    # layer mode in rematerialised chunks of 5 steps keeps a 100-step 256x256 training step at 3.6 GiB (35 GiB
    # without remat) for ~10% more compute (measurements in the benchmark notes).
    "paper_1ms": ModelConfig(step_ms=1.0, snn_mode="layer", remat=True, time_chunk=5),
    # The same at 1 ms steps for windows that fit in memory without rematerialisation: step mode, nothing
    # recomputed (paper_1ms recomputes 29% more conv work). 64x64, batch 2, 100 steps on the 2-core CPU VM
    # (python experiments/benchmark.py --preset paper_1ms_step --num-steps 100 --stages hybrid): 2.70 GiB,
    # 14.1 s median step against 17.1 s for paper_1ms and 20.3 s for the PyTorch port, alternated at load 8-9.
    # Memory grows with steps x pixels x batch: use paper_1ms at 256x256.
    "paper_1ms_step": ModelConfig(step_ms=1.0, snn_mode="step", remat=False),
    # A narrow model for CPU tests and quick runs (same depth and resolution logic).
    "tiny": ModelConfig(ann_widths=(8, 12, 16, 24, 32, 32), snn_widths=(8, 12, 16, 24), step_ms=1.0),
    "tiny_10ms": ModelConfig(ann_widths=(8, 12, 16, 24, 32, 32), snn_widths=(8, 12, 16, 24), step_ms=10.0),
}
