"""Streaming inference: events in, a pose per completed SNN step out (:class:`StreamingPoseEstimator`)."""
from hybridjax.runtime.streaming import PoseEstimate, StreamingConfig, StreamingPoseEstimator

__all__ = ["PoseEstimate", "StreamingConfig", "StreamingPoseEstimator"]
