import pytest
import torch

import tdaeval
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import LabelTruth, MaskTruth
from tdaeval.metrics import ClassDetection, ModelRandomization, get_metric


def test_class_detection_equals_a_direct_computation(rng):
    train_labels = torch.randint(0, 4, (60,), generator=rng)
    test_labels = torch.randint(0, 4, (12,), generator=rng)
    scores = torch.randn(12, 60, generator=rng)
    truth = LabelTruth(train_labels, test_labels)
    result = ClassDetection(label="true", top_s=5).compute(scores, truth)
    for z in range(12):
        top = sorted(range(60), key=lambda i: -float(scores[z, i]))[:5]
        expected = sum(int(train_labels[i] == test_labels[z]) for i in top) / 5
        assert float(result.per_example[z]) == pytest.approx(expected)
    perfect = (train_labels[None, :] == test_labels[:, None]).float() + 0.01 * torch.rand(12, 60, generator=rng)
    assert ClassDetection(label="true").compute(perfect, truth).value == 1.0


def test_class_detection_label_must_be_chosen():
    with pytest.raises(ConfigError, match="'label' parameter of ClassDetection must be chosen explicitly"):
        get_metric("class_detection")
    with pytest.raises(ConfigError, match="'top_s'"):
        ClassDetection(label="true", top_s=0)


def test_heuristics_in_evaluate(tmp_path):
    from tdaeval.tasks import DigitsTask

    result = tdaeval.evaluate(
        DigitsTask(n_train=300, n_test=20),
        attributors=["grad_dot", "similarity", "random", "tracin"],
        metrics={"class_detection": {"label": "predicted"}, "model_randomization": {}},
        cache_dir=str(tmp_path),
        on_error="record",
    )
    assert result.get("similarity", "class_detection").value > result.get("random", "class_detection").value
    random = result.get("random", "model_randomization")
    assert random.value == pytest.approx(1.0)  # scores that ignore the model do not change with it
    assert result.get("grad_dot", "model_randomization").value < 0.9
    failed = {(e.attributor, e.metric) for e in result.failures()}
    assert ("tracin", "model_randomization") in failed  # needs checkpoints: recorded, not a crash
    assert ("tracin", "class_detection") not in failed


def test_cascading_randomization_reports_a_curve_and_leaves_the_global_rng(small_digits):
    from tdaeval.attributors import get
    from tdaeval.training import train_model

    model = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0).model
    attributor = get("grad_dot").fit(small_digits, model, small_digits.train_data)
    scores = attributor.attribute(small_digits.test_data)
    metric = ModelRandomization(mode="cascading")
    state = torch.random.get_rng_state()
    result = metric.compute(scores, metric.build_truth(small_digits, model=model), attributor=attributor)
    assert torch.equal(state, torch.random.get_rng_state())
    n_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert len(result.provenance["curve"]) == n_layers
    independent = ModelRandomization().compute(scores, ModelRandomization().build_truth(small_digits, model=model), attributor=attributor)
    assert result.value == pytest.approx(independent.value)  # all layers randomised = independent
    with pytest.raises(ConfigError, match="'mode'"):
        ModelRandomization(mode="upward")


def test_top_k_cardinality_equals_python_sets(rng):
    from tdaeval.metrics import TopKCardinality

    scores = torch.randn(10, 40, generator=rng)
    result = TopKCardinality(k=3, n_bootstrap=50).compute(scores)
    tops = [set(torch.topk(scores[z], 3).indices.tolist()) for z in range(10)]
    assert result.value == pytest.approx(len(set().union(*tops)) / 30)
    for z in range(10):  # each test point's share of the union: Σ over its top-k of 1 / (rows holding that point)
        share = sum(1 / sum(i in tops[j] for j in range(10)) for i in tops[z]) / 3
        assert float(result.per_example[z]) == pytest.approx(share)
    assert float(result.per_example.mean()) == pytest.approx(result.value)  # rankings compare the reported ratio
    same = torch.arange(40.0).expand(10, 40)  # everyone blames the same three points
    assert TopKCardinality(k=3, n_bootstrap=50).compute(same).value == pytest.approx(3 / 30)
    assert result.ci[0] <= result.value <= result.ci[1] + 1e-9


@pytest.mark.parametrize("metric_name", ["shortcut_detection", "mixed_datasets"])
def test_retrieval_metrics_equal_sklearn_average_precision(rng, metric_name):
    from sklearn.metrics import average_precision_score

    positives = torch.rand(80, generator=rng) < 0.2
    scores = torch.randn(6, 80, generator=rng)
    metric = get_metric(metric_name)
    result = metric.compute(scores, MaskTruth(positives))
    expected = [average_precision_score(positives.numpy(), row.numpy()) for row in scores]
    assert result.per_example.tolist() == pytest.approx(expected)
    perfect = metric.compute(positives.double().expand(6, 80) + 0.0, MaskTruth(positives))
    assert perfect.value == pytest.approx(1.0)


@pytest.mark.slow
def test_controlled_settings_on_digits(tmp_path):
    from tdaeval.tasks import DigitsTask, with_grouped_labels, with_mixed_dataset, with_shortcut

    base = DigitsTask(n_train=300, n_test=30)
    attributors = ["grad_cos", "random"]
    shortcut = tdaeval.evaluate(with_shortcut(base, shortcut_class=0, fraction=0.5), attributors=attributors,
                                metrics=["shortcut_detection"], cache_dir=str(tmp_path))
    assert shortcut.get("grad_cos", "shortcut_detection").value > 2 * shortcut.get("random", "shortcut_detection").value
    mixed = tdaeval.evaluate(with_mixed_dataset(base, n_foreign=30, label=3), attributors=attributors,
                             metrics=["mixed_datasets"], cache_dir=str(tmp_path))
    assert mixed.get("grad_cos", "mixed_datasets").value > 2 * mixed.get("random", "mixed_datasets").value
    grouped = tdaeval.evaluate(with_grouped_labels(base, n_groups=2), attributors=["similarity", "random"],
                               metrics=["subclass_detection"], cache_dir=str(tmp_path))
    assert grouped.get("similarity", "subclass_detection").value > grouped.get("random", "subclass_detection").value
    with pytest.raises(ConfigError, match="with_shortcut"):
        get_metric("shortcut_detection").build_truth(base)


def test_cascading_randomisation_follows_the_forward_pass_not_the_definition_order():
    from torch import nn

    from tdaeval.metrics.heuristics import parameterised_modules, randomized_model

    class DefinedBackwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)  # defined first, called last
            self.body = nn.Linear(3, 4)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    model, reference = DefinedBackwards(), DefinedBackwards()
    example = torch.randn(2, 3)
    assert parameterised_modules(model) == ["head", "body"]
    assert parameterised_modules(model, example) == ["body", "head"]
    last = randomized_model(model, reference, layers=1, example=example)
    assert torch.equal(last.head.weight, reference.head.weight) and torch.equal(last.body.weight, model.body.weight)
