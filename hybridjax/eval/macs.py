"""Multiply-accumulate (MAC) counts of any JAX function, read from its jaxpr (no computation is run).

The function is traced with :func:`jax.make_jaxpr` (arguments may be arrays or ``jax.ShapeDtypeStruct``) and
every ``conv_general_dilated`` and ``dot_general`` contributes its dense MAC count:

* convolution: ``MACs = numel(output) * numel(kernel) / kernel_out_features``
  (= output elements x kernel window x input features per group; padded positions and dilation holes
  are counted, i.e. dense MACs, the convention of the paper's table);
* dot_general: ``MACs = numel(output) * prod(contracting sizes)``.

Sub-jaxprs are followed: ``pjit``/``jit``, ``remat``, ``custom_jvp_call``/``custom_vjp_call`` and other calls
once, ``scan`` bodies ``length`` times, ``cond`` with its most expensive branch (an upper bound), ``while``
bodies once (the trip count is unknown at trace time; use scan or a fixed fori_loop for exact counts).

Attribution: every equation carries the name stack of the ``jax.named_scope``/flax module path it was traced
under; :func:`mac_records` keeps it (joined across sub-jaxprs) so MACs can be grouped per module or layer.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator

import jax
from jax.extend import core as jax_core

from hybridjax.models import ANNUNet, HybridModel
from hybridjax.models.snn_unet import snn_convs

# Primitives whose MACs are counted.
COUNTED_PRIMITIVES = ("conv_general_dilated", "dot_general")


@dataclasses.dataclass(frozen=True)
class MacRecord:
    """One counted equation."""

    scope: str  # name stack of the equation ("Module/submodule/..."), "" at top level
    primitive: str  # "conv_general_dilated" or "dot_general"
    macs: int  # MACs of one execution times the trip counts of enclosing scans
    multiplier: int  # product of the enclosing scan lengths (already included in macs)
    output_shape: tuple[int, ...]  # shape of the equation's output
    operand_shapes: tuple[tuple[int, ...], ...]  # shapes of the two operands (input, kernel / lhs, rhs)


def conv_macs(output_shape, kernel_shape, kernel_out_feature_axis: int) -> int:
    """Dense MACs of a convolution: ``numel(output) * numel(kernel) / kernel.shape[out_axis]``."""
    return math.prod(output_shape) * math.prod(kernel_shape) // kernel_shape[kernel_out_feature_axis]


def dot_general_macs(output_shape, lhs_shape, lhs_contracting_axes) -> int:
    """MACs of a dot_general: ``numel(output) * prod(lhs contracting sizes)``."""
    return math.prod(output_shape) * math.prod(lhs_shape[axis] for axis in lhs_contracting_axes)


def _equation_macs(eqn) -> int:
    name = eqn.primitive.name
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if name == "conv_general_dilated":
        rhs_shape = tuple(eqn.invars[1].aval.shape)
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature axis, in feature axis, spatial...)
        return conv_macs(out_shape, rhs_shape, rhs_spec[0])
    if name == "dot_general":
        (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
        return dot_general_macs(out_shape, tuple(eqn.invars[0].aval.shape), lhs_contracting)
    raise ValueError(f"no MAC rule for primitive {name}")


def _as_jaxpr(value):
    if isinstance(value, jax_core.ClosedJaxpr):
        return value.jaxpr
    if isinstance(value, jax_core.Jaxpr):
        return value
    return None


def _sub_jaxprs(eqn) -> list:
    """All jaxprs held in an equation's parameters (tuples of them too, as in cond's branches)."""
    found = []
    for value in eqn.params.values():
        candidates = value if isinstance(value, tuple | list) else (value,)
        for candidate in candidates:
            jaxpr = _as_jaxpr(candidate)
            if jaxpr is not None:
                found.append(jaxpr)
    return found


def _join_scope(parent: str, child: str) -> str:
    return "/".join(part for part in (parent, child) if part)


def _walk(jaxpr, scope: str, multiplier: int) -> Iterator[MacRecord]:
    for eqn in jaxpr.eqns:
        eqn_scope = _join_scope(scope, str(eqn.source_info.name_stack))
        name = eqn.primitive.name
        if name in COUNTED_PRIMITIVES:
            macs = _equation_macs(eqn)
            operands = tuple(tuple(var.aval.shape) for var in eqn.invars[:2])
            yield MacRecord(eqn_scope, name, macs * multiplier, multiplier, tuple(eqn.outvars[0].aval.shape),
                            operands)
            continue
        subs = _sub_jaxprs(eqn)
        if not subs:
            continue
        if name == "cond":
            # Only one branch runs; charge the most expensive one (an upper bound when they differ).
            per_branch = [list(_walk(sub, eqn_scope, multiplier)) for sub in subs]
            yield from max(per_branch, key=lambda records: sum(r.macs for r in records))
            continue
        inner = multiplier * int(eqn.params["length"]) if name == "scan" else multiplier
        for sub in subs:
            yield from _walk(sub, eqn_scope, inner)


def mac_records(fn: Callable, *args, **kwargs) -> list[MacRecord]:
    """Traces ``fn(*args, **kwargs)`` and returns one :class:`MacRecord` per counted equation (trace order).

    Keyword arguments are closed over (static); positional arguments may be arrays, pytrees of arrays or
    ``jax.ShapeDtypeStruct``s, so nothing is computed.
    """
    closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
    return list(_walk(closed.jaxpr, "", 1))


def count_macs(fn: Callable, *args, **kwargs) -> int:
    """Total dense MACs of one call ``fn(*args, **kwargs)`` (see the module docstring for the rules)."""
    return sum(record.macs for record in mac_records(fn, *args, **kwargs))


def macs_by_scope(records: list[MacRecord], depth: int | None = None) -> dict[str, int]:
    """Sums records per scope, truncated to its first ``depth`` path components (all when None)."""
    totals: dict[str, int] = defaultdict(int)
    for record in records:
        parts = record.scope.split("/") if record.scope else [""]
        key = "/".join(parts if depth is None else parts[:depth])
        totals[key] += record.macs
    return dict(totals)


# ---- the hybrid model's MACs, counted from its own trace ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class HybridMacs:
    """Dense MACs of the hybrid per sample at one input size, counted from the model's jaxpr."""

    height: int  # input rows
    width: int  # input columns
    ann: int  # the ANN U-Net, one inference
    initialisers: int  # the nine state initialisers, one ANN inference
    snn_per_step: dict[str, int]  # SNN conv (hybridjax.models.snn_unet.snn_convs keys) -> MACs per step

    @property
    def snn_step_total(self) -> int:
        """All SNN convs for one step."""
        return sum(self.snn_per_step.values())

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), snn_step_total=self.snn_step_total)


@functools.lru_cache(maxsize=32)
def hybrid_macs(config, height: int = 256, width: int = 256) -> HybridMacs:
    """Counts the ANN, initialiser and per-conv SNN MACs of ``HybridModel(config)`` for one sample.

    Cached per (config, height, width): tracing the model takes seconds on a CPU and the count is a pure
    function of them (the result is frozen).

    Nothing is computed: the variables come from ``jax.eval_shape(model.init, ...)`` and the counts from
    the jaxprs of ``HybridModel.ann_init`` (ANN + initialisers), ``ANNUNet`` (ANN) and the full hybrid call
    with one SNN step. The hybrid traces the ANN and the initialisers before the SNN, so its records after
    the ``ann_init`` prefix are the SNN's convs, in forward order; they are named by matching their kernel
    shapes against ``snn_convs(config)`` (a mismatch raises, naming what was found).
    """
    # The paper's counts (and the energy model built on them) are those of the literal upsample-then-5x5-conv
    # up blocks; the polyphase form (ModelConfig.fused_upsample_conv, hybridjax.models.upconv) computes the same
    # function with ~36% fewer of their MACs, so the count is taken on the literal composition.
    config = dataclasses.replace(config, fused_upsample_conv=False)
    model = HybridModel(config)
    ann_input = jax.ShapeDtypeStruct((1, height, width, config.ann_in_channels), jax.numpy.float32)
    events = jax.ShapeDtypeStruct((1, 1, height, width, config.snn_in_channels), jax.numpy.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), ann_input, events)

    full = mac_records(lambda v, a, e: model.apply(v, a, e), variables, ann_input, events)
    prefix = mac_records(lambda v, a: model.apply(v, a, method=HybridModel.ann_init), variables, ann_input)
    ann_only = mac_records(lambda p, a: ANNUNet(config).apply({"params": p}, a),
                           {"ann": variables["params"]["ann"]}, ann_input)
    shapes = [r.operand_shapes for r in full[: len(prefix)]]
    if shapes != [r.operand_shapes for r in prefix]:
        raise ValueError("hybrid_macs: the hybrid's trace does not start with its ann_init computation")
    ann = sum(r.macs for r in ann_only)
    initialisers = sum(r.macs for r in prefix) - ann

    expected = snn_convs(config)
    snn_records = full[len(prefix):]
    found = [r.operand_shapes[1] for r in snn_records]
    wanted = [(c.kernel, c.kernel, c.cin, c.cout) for c in expected.values()]
    if found != wanted:
        raise ValueError(f"hybrid_macs: SNN kernels in trace order are {found}, expected {wanted} "
                         f"({list(expected)})")
    per_step = {name: r.macs for name, r in zip(expected, snn_records, strict=True)}
    return HybridMacs(height=height, width=width, ann=ann, initialisers=initialisers, snn_per_step=per_step)
