"""Spiking primitives: surrogate spike functions, the LIF step (custom VJPs) and the scan helper."""
from hybridjax.snn.lif import (
    LIFParams,
    charge,
    leaky_integrator_step,
    lif_step,
    lif_step_autodiff,
    per_step_retention,
    tau_in_steps,
)
from hybridjax.snn.scan import scan_steps
from hybridjax.snn.surrogate import (
    DEFAULT_ALPHA,
    SURROGATE_GRADS,
    atan,
    heaviside,
    piecewise_quadratic,
    rect,
    sigmoid,
    spike,
    superspike,
    surrogate_grad,
)

__all__ = [
    "DEFAULT_ALPHA", "LIFParams", "SURROGATE_GRADS", "atan", "charge", "heaviside", "leaky_integrator_step",
    "lif_step", "lif_step_autodiff", "per_step_retention", "piecewise_quadratic", "rect", "scan_steps",
    "sigmoid", "spike", "superspike", "surrogate_grad", "tau_in_steps",
]
