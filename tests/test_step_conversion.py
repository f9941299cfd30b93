"""Moving a trained spiking U-Net between step lengths (hybridjax.models.step_conversion): closed-form gains,
exact kernel scaling, everything else untouched."""
import jax
import numpy as np
import pytest

from hybridjax.models import ModelConfig, init_snn_params
from hybridjax.models.step_conversion import BLOCK_CONVS, convert_step_length, step_gains


def test_gains_closed_form():
    cfg = ModelConfig.preset("tiny")
    spike, head = step_gains(cfg, 10.0, 1.0, pure_snn=False)
    assert spike == 10.0
    # DC gain of out_k = d out_{k-1} + head_k: 1 / (1 - d); 0.8 per 10 ms -> 0.8 ** 0.1 per 1 ms
    assert head == pytest.approx((1 - 0.8 ** 0.1) / (1 - 0.8), rel=1e-12)
    assert head == pytest.approx(0.110336, abs=1e-6)
    assert step_gains(cfg, 10.0, 1.0, pure_snn=True) == (10.0, 1.0)
    spike_back, head_back = step_gains(cfg, 1.0, 10.0, pure_snn=False)
    assert spike_back * spike == pytest.approx(1.0) and head_back * head == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        step_gains(cfg, 0.0, 1.0, pure_snn=False)


@pytest.mark.parametrize("pure_snn", [False, True])
def test_kernels_scaled_exactly_and_the_rest_kept(pure_snn):
    cfg = ModelConfig.preset("tiny")
    params, _ = init_snn_params(jax.random.PRNGKey(0), cfg, pure_snn=pure_snn)
    converted = convert_step_length(params, cfg, 10.0, 2.0, pure_snn=pure_snn)
    spike, head = step_gains(cfg, 10.0, 2.0, pure_snn=pure_snn)
    assert spike == 5.0
    for name in BLOCK_CONVS:
        np.testing.assert_array_equal(converted[name]["conv"]["kernel"], params[name]["conv"]["kernel"] * 5.0)
        for key in params[name]["bn"]:
            assert converted[name]["bn"][key] is params[name]["bn"][key]
    np.testing.assert_array_equal(converted["head"]["conv"]["kernel"], params["head"]["conv"]["kernel"] * head)
    assert ("bn" in converted["head"]) == pure_snn
    assert convert_step_length(params, cfg, 10.0, 10.0, pure_snn=pure_snn) is params  # same step: untouched
    back = convert_step_length(converted, cfg, 2.0, 10.0, pure_snn=pure_snn)
    for name in (*BLOCK_CONVS, "head"):
        np.testing.assert_allclose(back[name]["conv"]["kernel"], params[name]["conv"]["kernel"], rtol=1e-6)


def test_missing_layers_are_named():
    cfg = ModelConfig.preset("tiny")
    params, _ = init_snn_params(jax.random.PRNGKey(0), cfg, pure_snn=False)
    del params["res2"]
    with pytest.raises(ValueError, match="res2"):
        convert_step_length(params, cfg, 10.0, 1.0, pure_snn=False)
