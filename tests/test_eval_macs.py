"""MAC counter: closed forms on plain lax convolutions and matmuls, sub-jaxpr recursion, scope attribution."""
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from hybridjax.eval import macs


def _spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _conv_nhwc(x, w, stride=1, padding="SAME", groups=1, dilation=1):
    return lax.conv_general_dilated(
        x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, groups, expected",
    [
        # out 2x16x16x8, kernel 3x3x4: 2*16*16*8 * 9*4
        ((2, 16, 16, 4), (3, 3, 4, 8), 1, "SAME", 1, 2 * 16 * 16 * 8 * 9 * 4),
        # stride 2 halves the output: 1*8*8*6 * 25*3
        ((1, 16, 16, 3), (5, 5, 3, 6), 2, "SAME", 1, 8 * 8 * 6 * 25 * 3),
        # VALID: out 12x12
        ((1, 16, 16, 3), (5, 5, 3, 6), 1, "VALID", 1, 12 * 12 * 6 * 25 * 3),
        # depthwise (groups = 4): each output sees 9 * 1 inputs
        ((1, 8, 8, 4), (3, 3, 1, 4), 1, "SAME", 4, 8 * 8 * 4 * 9),
    ],
)
def test_conv_closed_forms(shape, kernel, stride, padding, groups, expected):
    fn = lambda x, w: _conv_nhwc(x, w, stride, padding, groups)  # noqa: E731
    assert macs.count_macs(fn, _spec(*shape), _spec(*kernel)) == expected


def test_nchw_layout_and_dilation():
    def fn(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))  # NCHW / OIHW default

    assert macs.count_macs(fn, _spec(2, 3, 10, 10), _spec(7, 3, 3, 3)) == 2 * 7 * 10 * 10 * 3 * 9


def test_dot_general_and_dense():
    assert macs.count_macs(lambda a, b: a @ b, _spec(5, 7), _spec(7, 11)) == 5 * 7 * 11
    batched = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)  # noqa: E731
    assert macs.count_macs(batched, _spec(3, 4, 5), _spec(3, 5, 6)) == 3 * 4 * 5 * 6


def test_recursion_scan_remat_jit_custom_vjp_cond():
    x, w = _spec(1, 8, 8, 2), _spec(3, 3, 2, 4)
    single = 8 * 8 * 4 * 9 * 2

    def scanned(x, w):
        def body(carry, _):
            return carry, jax.checkpoint(_conv_nhwc)(x, w)

        return lax.scan(body, 0.0, None, length=5)[1]

    assert macs.count_macs(scanned, x, w) == 5 * single
    assert macs.count_macs(jax.jit(_conv_nhwc), x, w) == single

    @jax.custom_vjp
    def custom(x, w):
        return _conv_nhwc(x, w)

    custom.defvjp(lambda x, w: (custom(x, w), (x, w)), lambda res, g: (g[..., :2], jnp.zeros((3, 3, 2, 4))))
    assert macs.count_macs(custom, x, w) == single

    @jax.custom_jvp
    def smooth(x, w):
        return _conv_nhwc(x, w)

    smooth.defjvp(lambda primals, tangents: (smooth(*primals), smooth(tangents[0], primals[1])))
    assert macs.count_macs(smooth, x, w) == single

    def looped(x, w):  # a while loop's trip count is unknown at trace time: its body counts once
        return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, _conv_nhwc(c[1], w)), (0, x))[1]

    assert macs.count_macs(looped, x, _spec(3, 3, 2, 2)) == 8 * 8 * 2 * 9 * 2

    def branchy(x, w, flag):
        return lax.cond(flag, lambda: _conv_nhwc(x, w) @ jnp.ones((4, 4)), lambda: _conv_nhwc(x, w))

    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    assert macs.count_macs(branchy, x, w, flag) == single + 8 * 8 * 4 * 4  # most expensive branch


def test_scope_attribution_and_grouping():
    def fn(x, w1, w2):
        with jax.named_scope("encoder"):
            with jax.named_scope("conv_a"):
                h = _conv_nhwc(x, w1)
        with jax.named_scope("decoder"):
            return _conv_nhwc(h, w2)

    records = macs.mac_records(fn, _spec(1, 4, 4, 1), _spec(3, 3, 1, 2), _spec(1, 1, 2, 3))
    assert [r.scope for r in records] == ["encoder/conv_a", "decoder"]
    assert macs.macs_by_scope(records) == {"encoder/conv_a": 16 * 2 * 9, "decoder": 16 * 3 * 2}
    assert macs.macs_by_scope(records, depth=1) == {"encoder": 16 * 2 * 9, "decoder": 16 * 3 * 2}
    assert records[0].output_shape == (1, 4, 4, 2)


# ---- the models -----------------------------------------------------------------------------------------


def test_paper_config_reproduces_the_spec_mac_table():
    """SPEC section 2: SNN MACs per step at 256x256 (millions), ANN ~22.6 G, initialisers ~1.3 G."""
    from hybridjax.eval import energy
    from hybridjax.models import ModelConfig

    counted = macs.hybrid_macs(ModelConfig.preset("paper"), 256, 256)
    spec = energy.paper_snn_layer_macs()
    assert list(counted.snn_per_step) == list(energy.SNN_CONVS)
    for conv, value in spec.items():
        # The SPEC rounds to 0.01 M (head: 0.1 M).
        assert counted.snn_per_step[conv] == pytest.approx(value, abs=0.06e6), conv
    # Closed forms: 5x5 convs, out elements x 25 x Cin.
    assert counted.snn_per_step["static"] == 256 * 256 * 32 * 25 * 2
    assert counted.snn_per_step["up1"] == 64 * 64 * 128 * 25 * 512
    assert counted.snn_per_step["head"] == 256 * 256 * 13 * 64
    assert counted.ann == pytest.approx(22.6e9, rel=0.001)
    assert counted.initialisers == pytest.approx(1.3e9, rel=0.02)
    assert counted.snn_step_total == pytest.approx(24016.57e6, rel=1e-5)


@pytest.mark.parametrize("snn_mode", ["layer", "step"])
def test_tiny_hybrid_total_is_ann_plus_initialisers_plus_steps(snn_mode):
    import dataclasses

    from hybridjax.models import HybridModel, ModelConfig

    # hybrid_macs counts the literal upsample-then-conv up blocks (the paper's convention): compare with that model.
    cfg = dataclasses.replace(ModelConfig.preset("tiny"), snn_mode=snn_mode, fused_upsample_conv=False)
    counted = macs.hybrid_macs(cfg, 64, 32)
    model = HybridModel(cfg)
    steps, batch = 3, 2
    ann_input = _spec(batch, 64, 32, cfg.ann_in_channels)
    events = _spec(steps, batch, 64, 32, cfg.snn_in_channels)
    variables = jax.eval_shape(model.init, jax.random.key(0), ann_input, events)
    total = macs.count_macs(lambda v, a, e: model.apply(v, a, e), variables, ann_input, events)
    assert total == batch * (counted.ann + counted.initialisers + steps * counted.snn_step_total)
    # Closed form of the tiny static conv at 64x32: out 64*32*8, kernel 5x5x2.
    assert counted.snn_per_step["static"] == 64 * 32 * 8 * 25 * 2
