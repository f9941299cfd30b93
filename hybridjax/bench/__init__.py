"""Benchmarks: compiled-step timing, XLA cost and memory analysis, training stages, long windows, streaming.

``experiments/benchmark.py`` is the command line; the functions here return plain records (dicts) for JSON.
"""
from hybridjax.bench.harness import Timing, compile_and_time, conv_ceiling, device_description, peak_rss_mb

__all__ = ["Timing", "compile_and_time", "conv_ceiling", "device_description", "peak_rss_mb"]
