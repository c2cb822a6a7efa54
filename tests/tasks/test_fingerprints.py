"""A task's fingerprint (part of every cache key) always follows its data: no stale cached digest, anywhere.

The fault these tests guard against: a digest cached on the task object is
copied along when a controlled setting copies the task and swaps its data, so
the copy reuses the clean task's reference model and ground truth. Every
built-in task x every controlled setting is checked, before and after the
original's fingerprint was read, against an independent re-implementation of
the fingerprint (so the values of unchanged tasks, hence existing caches, stay
valid too).
"""

import copy
import hashlib
import json
import pickle
from dataclasses import asdict

import pytest
import torch

import tdaeval.tasks
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.tasks import (
    DigitsTask,
    FineTuneTask,
    LanguageModelTask,
    LinearRegressionTask,
    SyntheticTask,
    with_flipped_labels,
    with_grouped_labels,
    with_mixed_dataset,
    with_shortcut,
)

# Small instances of every built-in task (SyntheticTask on 64 features so that the image settings apply to it too).
TASKS = {
    "digits": lambda: DigitsTask(n_train=120, n_test=15),
    "linear_regression": lambda: LinearRegressionTask(n_train=30, n_test=6),
    "synthetic": lambda: SyntheticTask(n_train=150, n_test=20, n_features=64),
    "language_model": lambda: LanguageModelTask(n_entities=30, n_relations=2, n_facts=24, n_test=6),
    "finetune": lambda: FineTuneTask.digits(n_train=120, n_test=15, base_classes=None),
}
SETTINGS = {
    "with_flipped_labels": lambda task: with_flipped_labels(task, fraction=0.2, seed=1),
    "with_grouped_labels": lambda task: with_grouped_labels(task, n_groups=3, seed=1),
    "with_shortcut": lambda task: with_shortcut(task, shortcut_class=1, fraction=0.5, seed=1),
    "with_mixed_dataset": lambda task: with_mixed_dataset(task, n_foreign=10, label=2, n_test=5, seed=1),
}
# Every setting relabels classes or plants image patterns: none applies to regression.
NOT_APPLICABLE = {(task, setting) for task in ("linear_regression", "language_model") for setting in SETTINGS}


def reference_digest(data: Data) -> str:
    """The data digest recomputed from scratch (numpy bytes), never from a cache."""
    h = hashlib.sha256()
    for t in (data.inputs, data.targets):
        array = t.detach().cpu().contiguous().numpy()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def reference_fingerprint(task) -> str:
    """The fingerprint formula written out independently: sha256 of canonical JSON of class, config, recipe, data digests."""
    document = {
        "task": f"{type(task).__module__}.{type(task).__qualname__}",
        "config": task.config(),
        "recipe": asdict(task.recipe),
        "measurement": task.measurement_name,
        "train": reference_digest(task.train_data),
        "test": reference_digest(task.test_data),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def test_every_builtin_task_is_covered():
    assert set(TASKS) == set(tdaeval.tasks.TASKS)
    assert set(SETTINGS) == {name for name in tdaeval.tasks.__all__ if name.startswith("with_")}


@pytest.mark.parametrize("read_first", [False, True], ids=["original-unread", "original-read-first"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("task_name", list(TASKS))
def test_controlled_copy_never_shares_the_original_fingerprint(task_name, setting, read_first):
    task = TASKS[task_name]()
    before = task.fingerprint() if read_first else None
    if (task_name, setting) in NOT_APPLICABLE:
        with pytest.raises(ConfigError, match=setting):
            SETTINGS[setting](task)
        return
    controlled = SETTINGS[setting](task)
    assert controlled.fingerprint() == reference_fingerprint(controlled)
    assert controlled.fingerprint() != task.fingerprint()
    # the original is untouched, and its fingerprint is what it always was
    assert task.fingerprint() == reference_fingerprint(task)
    if before is not None:
        assert task.fingerprint() == before
    # a controlled copy of a controlled copy differs again
    again = with_flipped_labels(controlled, fraction=0.3, seed=2)
    assert again.fingerprint() == reference_fingerprint(again) != controlled.fingerprint()


@pytest.mark.parametrize("task_name", list(TASKS))
def test_fingerprint_follows_swapped_and_mutated_data(task_name):
    task = TASKS[task_name]()
    first = task.fingerprint()
    assert first == reference_fingerprint(task)
    # a copy with other data (as every controlled setting makes)
    other = copy.copy(task)
    other.train_data = task.train_data.subset(torch.arange(task.n_train - 1))
    assert other.fingerprint() == reference_fingerprint(other) != first
    assert task.fingerprint() == first
    # an in-place torch write into the data, after the digest was cached
    mutated = copy.deepcopy(task)
    assert mutated.fingerprint() == first
    mutated.train_data.inputs[0] += 1
    assert mutated.fingerprint() == reference_fingerprint(mutated) != first
    mutated.test_data.targets[:1].add_(1)  # through a view
    assert mutated.fingerprint() == reference_fingerprint(mutated)


def test_data_digest_is_cached_and_not_pickled(monkeypatch):
    data = Data(torch.arange(12.0).view(6, 2), torch.arange(6))
    calls = []
    compute = Data._compute_digest
    monkeypatch.setattr(Data, "_compute_digest", lambda self: calls.append(1) or compute(self))
    digest = data.digest()
    assert data.digest() == digest == reference_digest(data) and len(calls) == 1  # hashed once
    restored = pickle.loads(pickle.dumps(data))
    assert "_digest_cache" not in vars(restored)
    restored.inputs[0, 0] = -1.0  # a pickled cache would match the new tensors' version counters
    assert restored.digest() == reference_digest(restored) != digest


def test_inference_mode_data_is_hashed_every_time():
    with torch.inference_mode():
        data = Data(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))
        digest = data.digest()
        data.inputs[0, 0] = 5.0
    assert data.digest() == reference_digest(data) != digest


@pytest.mark.parametrize("setting", ["with_shortcut", "with_mixed_dataset"])
def test_image_settings_name_the_input_shape_they_need(setting):
    with pytest.raises(ConfigError, match=r"\[n, 64\].*\[n, 32\]"):
        SETTINGS[setting](SyntheticTask(n_train=60, n_test=10, n_features=32))
