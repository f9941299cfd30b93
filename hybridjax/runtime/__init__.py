"""Streaming inference: events in, a pose per completed SNN step out (:class:`StreamingPoseEstimator`).

:mod:`hybridjax.runtime.folding` holds the inference-time parameter rewrites the runtime applies (eval
BatchNorms folded into the convs, space-to-depth input conv).
"""
from hybridjax.runtime.folding import (
    SpaceToDepthConv,
    fold_batch_norm,
    fold_batch_norms,
    folded_convs,
    space_to_depth_conv,
    streaming_snn_params,
)
from hybridjax.runtime.streaming import PoseEstimate, StreamingConfig, StreamingPoseEstimator, first_argmax_uv

__all__ = ["PoseEstimate", "SpaceToDepthConv", "StreamingConfig", "StreamingPoseEstimator", "first_argmax_uv",
           "fold_batch_norm", "fold_batch_norms", "folded_convs", "space_to_depth_conv", "streaming_snn_params"]
