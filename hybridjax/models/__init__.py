"""Models of hybridjax: the ANN U-Net, the spiking U-Net, the state initialisers and the hybrid.

``import hybridjax.models`` gives the Flax modules (:class:`HybridModel`, :class:`SNNModel`,
:class:`ANNUNet`), the typed :class:`ModelConfig` with presets, and the pure functions they call.
"""
from hybridjax.models.ann import ann_forward, init_ann_params
from hybridjax.models.config import PRESETS, ModelConfig
from hybridjax.models.initialisers import INITIALISER_SOURCES, init_initialiser_params, initial_states
from hybridjax.models.modules import ANNUNet, HybridModel, ModelOutput, SNNModel, init_variables
from hybridjax.models.snn_unet import (
    LIF_LAYERS,
    OFFICIAL_LIF_NAMES,
    SNNResult,
    init_snn_params,
    lif_channels,
    lif_shapes,
    snn_forward,
    snn_step,
    zero_state,
)

__all__ = [
    "ANNUNet", "HybridModel", "INITIALISER_SOURCES", "LIF_LAYERS", "ModelConfig", "ModelOutput",
    "OFFICIAL_LIF_NAMES", "PRESETS", "SNNModel", "SNNResult", "ann_forward", "init_ann_params",
    "init_initialiser_params", "init_snn_params", "init_variables", "initial_states", "lif_channels", "lif_shapes",
    "snn_forward", "snn_step", "zero_state",
]
