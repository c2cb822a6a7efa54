"""Retraining jobs: train from scratch on a subset with a seed, measure the test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tdaeval.groundtruth.store import job_key
from tdaeval.task import Task, sha256_json

__all__ = ["TrainJob", "make_train_job", "derive_seed", "GROUNDTRUTH_VERSION"]

#: Bumped whenever the math of a job changes, so old cache entries are not reused.
GROUNDTRUTH_VERSION = 1


def derive_seed(*parts: Any) -> int:
    """A training seed in [0, 2**31) derived from ``parts`` by hashing (same on every machine)."""
    return int(sha256_json(["tdaeval-seed", *parts])[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class TrainJob:
    """Train a fresh model on ``indices`` with ``seed``; its result is the test measurement ``[n_test]``.

    Attributes
    ----------
    key : str
        sha256 of ``spec``.
    spec : dict
        Everything that determines the result (task fingerprint, indices digest, seed, version).
    indices : Tensor
        ``[k]`` training indices, sorted.
    seed : int
        Training seed (initialisation, batch order, dropout).
    """

    key: str
    spec: dict[str, Any]
    indices: Tensor
    seed: int


def make_train_job(task: Task, indices: Tensor, seed: int, **labels: Any) -> TrainJob:
    """A :class:`TrainJob` with its content-hash key; ``labels`` are recorded in the spec."""
    indices = torch.sort(torch.as_tensor(indices, dtype=torch.long)).values
    spec = {
        "kind": "train_measure",
        "version": GROUNDTRUTH_VERSION,
        "task": task.fingerprint(),
        "n_indices": int(indices.numel()),
        "indices_sha256": sha256_json(indices.tolist()),
        "seed": int(seed),
        **labels,
    }
    return TrainJob(key=job_key(spec), spec=spec, indices=indices, seed=int(seed))
