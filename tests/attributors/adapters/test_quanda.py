"""The Quanda explainer adapter (``quanda.explainer``).

The first tests run without quanda (parameter checks, a missing library);
the others import it with ``pytest.importorskip`` and compare the adapter's
output with our own computations on the same model and data.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest
import torch

from tdaeval.attributors import get
from tdaeval.attributors.adapters import MissingExtraError
from tdaeval.attributors.adapters.quanda import QuandaExplainer, restore_root_logging
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.training import train_model

# ---------------------------------------------------------------------------------------------
# Without quanda
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,match",
    [
        ({"explainer": 42}, r"'explainer' parameter of QuandaExplainer \('quanda.explainer'\).*Got a int"),
        ({"explainer": "quanda.explainers.wrappers.CaptumSimilarity"}, r"'explainer' parameter.*'module:Name'"),
        ({"explainer": ":Name"}, r"'explainer' parameter"),
        ({"explainer_kwargs": [("layers", "0")]}, r"'explainer_kwargs' parameter.*dict"),
        ({"explainer_kwargs": {"model": None}}, r"'explainer_kwargs' parameter.*may not set \['model'\]"),
        ({"batch_size": 0}, r"'batch_size' parameter of QuandaExplainer.*>= 1"),
        ({"targets": "logits"}, r"'targets' parameter of QuandaExplainer.*'label', 'predicted'"),
    ],
)
def test_bad_parameters_are_clear_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        get("quanda.explainer", **params)


def test_an_explainer_instance_is_refused_with_a_hint():
    class Instance:
        def explain(self, test_data, targets):  # pragma: no cover - never called
            return None

    with pytest.raises(ConfigError, match="Pass the class, not an instance"):
        QuandaExplainer(explainer=Instance())


def test_registered_with_its_extra_and_defaults():
    attributor = get("quanda.explainer")
    assert isinstance(attributor, QuandaExplainer)
    assert (QuandaExplainer.library, QuandaExplainer.extra) == ("quanda", "quanda")
    assert attributor.get_params() == {"explainer": None, "explainer_kwargs": "{}", "batch_size": 64, "targets": "label"}


def test_explainer_kwargs_are_copied():
    kwargs = {"layers": "0"}
    attributor = QuandaExplainer(explainer="quanda.explainers.wrappers:CaptumSimilarity", explainer_kwargs=kwargs)
    kwargs["layers"] = "2"
    assert attributor.explainer_kwargs == {"layers": "0"}


def test_missing_quanda_names_the_extra(monkeypatch, small_logreg):
    monkeypatch.setitem(sys.modules, "quanda", None)
    assert not QuandaExplainer.available()
    attributor = get("quanda.explainer", explainer="quanda.explainers.wrappers:CaptumSimilarity")
    model = small_logreg.build_model(0)
    with pytest.raises(MissingExtraError, match=r"'quanda.explainer'.*pip install 'tdaeval\[quanda\]'"):
        attributor.fit(small_logreg, model, small_logreg.train_data)


def test_root_logging_is_restored():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with restore_root_logging():
        root.setLevel(logging.DEBUG)
        root.addHandler(logging.NullHandler())
    assert root.level == level and root.handlers == handlers


# ---------------------------------------------------------------------------------------------
# With quanda
# ---------------------------------------------------------------------------------------------


def _quanda():
    return pytest.importorskip("quanda")


def _distance_explainer():
    """A minimal user-written Explainer: ``-|x - x_i|² + 10·[target == y_i]``, plus a record of its calls."""
    from quanda.explainers import Explainer

    class DistanceExplainer(Explainer):
        accepted_tasks = ["image_classification"]

        def __init__(self, model, train_dataset, checkpoints=None, checkpoints_load_func=None, cache_dir=None, scale=1.0):
            super().__init__(model=model, train_dataset=train_dataset, checkpoints=checkpoints,
                             checkpoints_load_func=checkpoints_load_func)
            items = [self.train_dataset[i] for i in range(len(self.train_dataset))]  # (x, y) pairs, in order
            self.train_x = torch.stack([x for x, _ in items])
            self.train_y = torch.stack([y for _, y in items])
            self.received = {"model": model, "checkpoints": checkpoints, "load": checkpoints_load_func,
                             "cache_dir": cache_dir, "scale": scale}
            self.calls = []

        def explain(self, test_data, targets):
            self.calls.append((len(test_data), targets.clone()))
            scores = -torch.cdist(test_data, self.train_x) ** 2 + 10.0 * (targets[:, None] == self.train_y[None, :])
            return self.received["scale"] * scores

    return DistanceExplainer


def _distance_reference(test_x, test_t, train, scale=1.0):
    return scale * (-torch.cdist(test_x, train.inputs) ** 2 + 10.0 * (test_t[:, None] == train.targets[None, :]))


def test_custom_explainer_lands_in_our_layout(small_logreg):
    _quanda()
    task = small_logreg
    cls = _distance_explainer()
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    attributor = QuandaExplainer(explainer=cls, explainer_kwargs={"scale": 0.5}, batch_size=7)
    attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    test = task.test_data
    scores = attributor.attribute(test)
    assert scores.shape == (task.n_test, task.n_train)
    torch.testing.assert_close(scores, _distance_reference(test.inputs, test.targets, task.train_data, 0.5))
    explainer = attributor.explainer_
    assert [n for n, _ in explainer.calls] == [7, 7, 6]
    assert torch.equal(torch.cat([t for _, t in explainer.calls]), test.targets)
    # A copy of the model, in eval mode; a cache directory of its own, absolute.
    assert explainer.received["model"] is not run.model and not explainer.received["model"].training
    cache_dir = explainer.received["cache_dir"]
    assert os.path.isabs(cache_dir) and os.path.isdir(cache_dir)
    # The checkpoints come as files that the load function reads back, returning the learning rate.
    paths, load = explainer.received["checkpoints"], explainer.received["load"]
    assert len(paths) == len(run.checkpoints)
    fresh = task.build_model(1)
    for path, checkpoint in zip(paths, run.checkpoints):
        assert load(fresh, path) == checkpoint.lr
        for name, value in fresh.named_parameters():
            torch.testing.assert_close(value.detach(), checkpoint.params[name])
    # The cache directory goes with the attributor.
    del attributor, explainer
    import gc

    gc.collect()
    assert not os.path.exists(cache_dir)


def test_predicted_targets_are_the_model_argmax(small_logreg):
    _quanda()
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    attributor = QuandaExplainer(explainer=_distance_explainer(), targets="predicted", batch_size=64)
    scores = attributor.fit(task, model, task.train_data).attribute(task.test_data)
    with torch.no_grad():
        predicted = model(task.test_data.inputs).argmax(dim=1)
    assert not torch.equal(predicted, task.test_data.targets)  # otherwise the test tells nothing
    torch.testing.assert_close(scores, _distance_reference(task.test_data.inputs, predicted, task.train_data))


def test_captum_similarity_equals_our_similarity(small_digits):
    """Quanda's CaptumSimilarity on the output layer's input == our ``similarity``."""
    _quanda()
    task = small_digits
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    # Layer "5" (the last dropout, identity in eval mode) outputs the last nn.Linear's input.
    # batch_size 64 does not divide 200 training points: Quanda's split workaround is exercised.
    attributor = get(
        "quanda.explainer",
        explainer="quanda.explainers.wrappers:CaptumSimilarity",
        explainer_kwargs={"layers": "5"},
        batch_size=64,
    )
    ours = get("similarity").fit(task, model, task.train_data).attribute(task.test_data)
    theirs = attributor.fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert os.path.isabs(attributor.explainer_.cache_dir)


def _loss_tracin_reference(task, model, checkpoints, test):
    """``Σ_c η_c ∇L_c(z)·∇L_c(z_i)`` with our per-sample gradients (test side: the loss, as captum)."""
    from tdaeval.attributors.gradient import per_sample_grads

    total = 0.0
    for c in checkpoints:
        g_test = per_sample_grads(model, task.loss, test, params=c.params)
        g_train = per_sample_grads(model, task.loss, task.train_data, params=c.params)
        total = total + c.lr * g_test @ g_train.T
    return total


def test_captum_tracincp_equals_our_gradient_products(small_digits):
    """Quanda's CaptumTracInCP over our checkpoints == our per-sample gradient products, same sign."""
    _quanda()
    task = small_digits
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    kwargs = {"loss_fn": torch.nn.CrossEntropyLoss(reduction="sum"), "sample_wise_grads_per_batch": True}
    attributor = QuandaExplainer(explainer="quanda.explainers.wrappers:CaptumTracInCP", explainer_kwargs=kwargs)
    theirs = attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints).attribute(task.test_data)
    reference = _loss_tracin_reference(task, run.model, run.checkpoints, task.test_data)
    torch.testing.assert_close(theirs, reference, atol=1e-6, rtol=1e-4)
    # Positive = supports: a training point duplicated into the test set supports its copy.
    copies = torch.arange(0, 40, 4)
    own = attributor.attribute(task.train_data.subset(copies))[torch.arange(len(copies)), copies]
    assert (own > 0).all()
    # Without checkpoints, the final model is the one checkpoint, with weight 1.
    final = [type(run.checkpoints[0])(epoch=0, lr=1.0, params=dict(run.model.named_parameters()))]
    alone = QuandaExplainer(explainer="quanda.explainers.wrappers:CaptumTracInCP", explainer_kwargs=kwargs)
    torch.testing.assert_close(
        alone.fit(task, run.model, task.train_data).attribute(task.test_data),
        _loss_tracin_reference(task, run.model, final, task.test_data),
        atol=1e-6,
        rtol=1e-4,
    )


def test_fitting_leaves_the_model_and_root_logging_alone(small_logreg):
    _quanda()
    task = small_logreg
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    root = logging.getLogger()
    level = root.level
    kwargs = {"loss_fn": torch.nn.CrossEntropyLoss(reduction="sum"), "sample_wise_grads_per_batch": True}
    attributor = QuandaExplainer(explainer="quanda.explainers.wrappers:CaptumTracInCP", explainer_kwargs=kwargs)
    attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints).attribute(task.test_data)
    assert root.level == level
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the explainer loaded checkpoints into its own copy


@pytest.mark.parametrize(
    "explainer,kwargs,error,match",
    [
        (None, {}, ConfigError, r"'explainer' parameter of QuandaExplainer.*required"),
        ("collections:OrderedDict", {}, ConfigError, r"'explainer' parameter.*subclass of quanda.explainers.Explainer"),
        (torch.nn.Linear, {}, ConfigError, r"'explainer' parameter.*subclass of quanda.explainers.Explainer"),
        ("quanda.explainers.wrappers:Nope", {}, ConfigError, r"'explainer' parameter.*has no attribute 'Nope'"),
        ("no_such_module_xyz:Thing", {}, ConfigError, r"'explainer' parameter.*'no_such_module_xyz'.*cannot be imported"),
        ("quanda.explainers:Explainer", {}, ConfigError, r"abstract"),
        (
            "quanda.explainers.wrappers:CaptumSimilarity",
            {},
            ConfigError,
            r"CaptumSimilarity needs.*\['layers'\].*'explainer_kwargs'",
        ),
    ],
)
def test_bad_explainers_are_clear_errors_at_fit(small_logreg, explainer, kwargs, error, match):
    _quanda()
    model = small_logreg.build_model(0)
    with pytest.raises(error, match=match):
        QuandaExplainer(explainer=explainer, explainer_kwargs=kwargs).fit(small_logreg, model, small_logreg.train_data)


def test_custom_explainer_without_accepted_tasks_gets_a_hint(small_logreg):
    _quanda()
    from quanda.explainers import Explainer

    class NoTasks(Explainer):
        def explain(self, test_data, targets):  # pragma: no cover - never called
            return torch.zeros(len(test_data), 1)

    model = small_logreg.build_model(0)
    with pytest.raises(AttributorError, match=r"could not build NoTasks.*accepted_tasks is empty"):
        QuandaExplainer(explainer=NoTasks).fit(small_logreg, model, small_logreg.train_data)


def test_transposed_explanations_are_caught(small_logreg):
    _quanda()
    from quanda.explainers import Explainer

    class Transposed(Explainer):
        accepted_tasks = ["image_classification"]

        def explain(self, test_data, targets):
            return torch.zeros(len(self.train_dataset), len(test_data))

    model = small_logreg.build_model(0)
    attributor = QuandaExplainer(explainer=Transposed).fit(small_logreg, model, small_logreg.train_data)
    with pytest.raises(AttributorError, match=r"Transposed.explain returned shape \(200, 20\).*transposed"):
        attributor.attribute(small_logreg.test_data)
