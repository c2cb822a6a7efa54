"""Where Quanda 0.5.0's metric is correct, ours gives the same value on the same explanations (quanda extra)."""

import pytest
import torch

from tdaeval.metrics import ClassDetection, TopKCardinality

quanda_downstream = pytest.importorskip("quanda.metrics.downstream_eval")
quanda_heuristics = pytest.importorskip("quanda.metrics.heuristics")


@pytest.fixture
def setting(rng):
    inputs, labels = torch.randn(60, 8, generator=rng), torch.randint(0, 4, (60,), generator=rng)
    explanations, test_labels = torch.randn(12, 60, generator=rng), torch.randint(0, 4, (12,), generator=rng)
    return torch.nn.Linear(8, 4), torch.utils.data.TensorDataset(inputs, labels), labels, explanations, test_labels


def test_class_detection_equals_quanda(setting):
    model, dataset, labels, explanations, test_labels = setting
    theirs = quanda_downstream.ClassDetectionMetric(model, dataset, s=5)
    theirs.update(explanations, test_labels)
    ours = ClassDetection(label="true", top_s=5).compute(explanations, {"train_labels": labels, "test_labels": test_labels})
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_cardinality_equals_quanda(setting, k):
    model, dataset, _, explanations, _ = setting
    theirs = quanda_heuristics.TopKCardinalityMetric(model, dataset, top_k=k)
    theirs.update(explanations)
    assert TopKCardinality(k=k, n_bootstrap=20).compute(explanations).value == pytest.approx(theirs.compute()["score"], abs=1e-6)
