"""Metrics: each wraps math from :mod:`tdaeval.functional` and returns a :class:`~tdaeval.metrics.MetricResult`."""

from tdaeval.metrics.base import Metric, MetricResult, get_metric, metric_class, metric_names, register_metric
from tdaeval.metrics.detection import MislabelDetection
from tdaeval.metrics.fact_tracing import MRR, ContradictionRateAtK, HitAtK, PrecisionAtK, RecallAtK, RecallAtKMetric, RocAuc
from tdaeval.metrics.further import FurtherTraining, FurtherTrainingSpearman
from tdaeval.metrics.heuristics import (
    ClassDetection,
    MixedDatasets,
    ModelRandomization,
    ShortcutDetection,
    SubclassDetection,
    TopKCardinality,
)
from tdaeval.metrics.lds import LDS
from tdaeval.metrics.loo import LOO, LOOPearson
from tdaeval.metrics.reliability import SeedRankStability, SeedReliability
from tdaeval.metrics.removal import Brittleness, FlipTest, TopKRemoval
from tdaeval.metrics.sets import SetF1, SetPrecision, SetRecall
from tdaeval.metrics.tail_patch import TailPatch

__all__ = [
    "Brittleness", "ClassDetection", "ContradictionRateAtK", "RocAuc", "HitAtK", "MRR", "PrecisionAtK", "RecallAtK", "RecallAtKMetric",
    "FlipTest", "FurtherTraining", "FurtherTrainingSpearman", "LDS", "LOO",
    "LOOPearson", "MislabelDetection", "MixedDatasets", "ModelRandomization", "ShortcutDetection",
    "SetF1", "SetPrecision", "SetRecall", "SubclassDetection", "TailPatch", "TopKCardinality", "SeedRankStability",
    "SeedReliability", "TopKRemoval", "Metric",
    "MetricResult", "get_metric", "metric_class", "metric_names", "register_metric",
]
