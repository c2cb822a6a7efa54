"""Attributors: the ``Attributor`` base, the registry and the built-in estimators.

Use :func:`get` to build one by name, :func:`names` to list them, and
:func:`resolve` to accept an instance, a function or a ``"module:Name"`` path.
"""

from tdaeval.attributors import adapters  # noqa: E402,F401  (registers the adapters; imports no extra)
from tdaeval.attributors.base import (
    Attribution,
    Attributor,
    FunctionAttributor,
    get,
    names,
    register,
    resolve,
    validate_scores,
)
from tdaeval.attributors.cluster_verify import ClusterVerify
from tdaeval.attributors.dda import DDA
from tdaeval.attributors.ensembles import CheckpointEnsemble, DropoutEnsemble, LoRAEnsemble, NaiveEnsemble
from tdaeval.attributors.gradient import GradCos, GradDot, TracIn, per_sample_grads
from tdaeval.attributors.influence import Influence
from tdaeval.attributors.random import RandomAttributor
from tdaeval.attributors.representation import Representer, Similarity
from tdaeval.attributors.seeds import SeedPosterior
from tdaeval.attributors.source import FastSource, Source
from tdaeval.attributors.text import BM25, EntailmentIndicator
from tdaeval.attributors.trak import TRAK

__all__ = [
    "Attribution",
    "Attributor",
    "BM25",
    "CheckpointEnsemble",
    "ClusterVerify",
    "DDA",
    "DropoutEnsemble",
    "EntailmentIndicator",
    "NaiveEnsemble",
    "FunctionAttributor",
    "GradCos",
    "GradDot",
    "Influence",
    "LoRAEnsemble",
    "RandomAttributor",
    "SeedPosterior",
    "Representer",
    "Similarity",
    "Source",
    "FastSource",
    "TRAK",
    "TracIn",
    "get",
    "names",
    "per_sample_grads",
    "register",
    "resolve",
    "validate_scores",
]
