"""Metrics: each wraps math from :mod:`tdaeval.functional` and returns a :class:`~tdaeval.metrics.MetricResult`."""

from tdaeval.metrics.base import Metric, MetricResult, get_metric, metric_names, register_metric
from tdaeval.metrics.lds import LDS
from tdaeval.metrics.loo import LOO, LOOPearson
from tdaeval.metrics.reliability import SeedRankStability, SeedReliability

__all__ = ["LDS", "LOO", "LOOPearson", "SeedRankStability", "SeedReliability", "Metric", "MetricResult", "get_metric", "metric_names", "register_metric"]
