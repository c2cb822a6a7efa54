import pytest
import torch

import tdaeval
from tdaeval.errors import ConfigError
from tdaeval.metrics import ClassDetection, ModelRandomization, get_metric


def test_class_detection_equals_a_direct_computation(rng):
    train_labels = torch.randint(0, 4, (60,), generator=rng)
    test_labels = torch.randint(0, 4, (12,), generator=rng)
    scores = torch.randn(12, 60, generator=rng)
    truth = {"train_labels": train_labels, "test_labels": test_labels}
    result = ClassDetection(label="true", top_s=5).compute(scores, truth)
    for z in range(12):
        top = sorted(range(60), key=lambda i: -float(scores[z, i]))[:5]
        expected = sum(int(train_labels[i] == test_labels[z]) for i in top) / 5
        assert float(result.per_example[z]) == pytest.approx(expected)
    perfect = (train_labels[None, :] == test_labels[:, None]).float() + 0.01 * torch.rand(12, 60, generator=rng)
    assert ClassDetection(label="true").compute(perfect, truth).value == 1.0


def test_class_detection_label_must_be_chosen():
    with pytest.raises(ConfigError, match="'label' parameter of class_detection must be chosen explicitly"):
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
