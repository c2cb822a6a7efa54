"""Retraining gold standards on the language-model task: LDS, LOO and top-k removal, with batched retraining.

Every model is trained with ``train_models``'s stacked (``vmap``) path — a spy on ``_train_stacked`` checks that
it ran and that the one-at-a-time fallback did not warn — and the stored measurements equal a model trained alone
(``train_model``). A numeric sanity check: the entailment indicator's LDS is far above random's (notes A.5), and
a small suite runs end to end through :func:`tdaeval.evaluate`.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import tdaeval
from tdaeval.attributors import get
from tdaeval.groundtruth import ArtifactStore, LDSSpec, LOOSpec, build_lds_groundtruth, build_loo_groundtruth, lds_jobs, loo_jobs
from tdaeval.metrics import get_metric
from tdaeval.suites import build_suite, run_suite, schema
from tdaeval.task import TrainRecipe
from tdaeval.tasks.language import LanguageModelTask
from tdaeval.training import train_model

pytestmark = pytest.mark.filterwarnings("error:Batched training is not possible")


@pytest.fixture(scope="module")
def tiny_lm() -> LanguageModelTask:
    """82 training sentences, 8 queries, d_model 16, 3 epochs: each retraining takes milliseconds."""
    return LanguageModelTask(n_entities=40, n_relations=4, n_facts=30, n_test=8, d_model=16,
                             recipe=TrainRecipe(epochs=3, batch_size=32, lr=0.2, momentum=0.9))




def _alone(task: LanguageModelTask, job) -> torch.Tensor:
    """``[n_test]``: the measurement of the job's model trained on its own (``train_model``, no stacking)."""
    return task.measure(train_model(task, task.build_model(job.seed), job.indices, job.seed).model)


def test_lds_ground_truth_on_the_lm_is_trained_batched_and_equals_one_at_a_time(tiny_lm, tmp_path, stacked_calls):
    spec = LDSSpec(n_subsets=4, n_seeds=2, seed=1)
    truth = build_lds_groundtruth(tiny_lm, spec, ArtifactStore(tmp_path))
    assert sum(stacked_calls) == 8 and max(stacked_calls) > 1  # every model, several at once
    assert truth.outputs.shape == (4, 2, tiny_lm.n_test) and torch.isfinite(truth.outputs).all()
    assert truth.provenance["measurement"] == "answer_log_odds" and truth.higher_is_better
    jobs = lds_jobs(tiny_lm, spec, truth.masks)
    torch.testing.assert_close(truth.outputs[2, 1], _alone(tiny_lm, jobs[2][1]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(truth.outputs[0, 0], truth.outputs[1, 0])  # subsets differ, so do their models
    # the lds metric on this truth: the entailment indicator and random give finite values
    metric = get_metric("lds", n_subsets=4, n_seeds=2, seed=1, n_bootstrap=50)
    model = train_model(tiny_lm, tiny_lm.build_model(0), torch.arange(tiny_lm.n_train), 0).model
    for name in ("entailment", "random"):
        scores = get(name).fit(tiny_lm, model, tiny_lm.train_data).attribute(tiny_lm.test_data)
        assert math.isfinite(metric.compute(scores, truth).value), name


def test_loo_ground_truth_on_the_lm_is_trained_batched_and_equals_one_at_a_time(tiny_lm, tmp_path, stacked_calls):
    spec = LOOSpec(n_removed=3, n_seeds=1, seed=2)
    truth = build_loo_groundtruth(tiny_lm, spec, ArtifactStore(tmp_path))
    assert sum(stacked_calls) == 4 and max(stacked_calls) == 3  # the full model alone (its own size), 3 removals together
    assert truth.removed_outputs.shape == (3, 1, tiny_lm.n_test) and truth.effects.shape == (tiny_lm.n_test, 3)
    assert torch.isfinite(truth.effects).all() and truth.effects.abs().max() > 0
    full, without = loo_jobs(tiny_lm, spec, truth.removed)
    torch.testing.assert_close(truth.full_outputs[0], _alone(tiny_lm, full[0]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(truth.removed_outputs[1, 0], _alone(tiny_lm, without[1][0]), atol=1e-4, rtol=1e-4)
    loo = get_metric("loo", n_removed=3, n_seeds=1, seed=2, n_bootstrap=50)
    grad_dot = get("grad_dot").fit(tiny_lm, tiny_lm.build_model(0), tiny_lm.train_data).attribute(tiny_lm.test_data)
    assert math.isfinite(loo.compute(grad_dot, truth).value)


def test_top_k_removal_on_the_lm_is_trained_batched(tiny_lm, tmp_path, stacked_calls):
    """Removing each query's proponents (the entailment indicator's top-k) and retraining, on 2 queries."""
    metric = get_metric("topk_removal", k_grid=[1, 2], n_seeds=1, n_test_points=2, n_bootstrap=50)
    context = metric.build_truth(tiny_lm, ArtifactStore(tmp_path))
    assert context.full_outputs.shape == (1, tiny_lm.n_test)
    model = train_model(tiny_lm, tiny_lm.build_model(0), torch.arange(tiny_lm.n_train), 0).model
    scores = get("entailment").fit(tiny_lm, model, tiny_lm.train_data).attribute(tiny_lm.test_data)
    result = metric.compute(scores, context)
    assert math.isfinite(result.value) and len(result.per_example) == 2
    # the full model, then top / random / bottom removals (2 sizes x 2 queries each; tied bottom scores make the two
    # queries' bottom removals the same job): every distinct job stored was trained on the batched path
    assert stacked_calls[0] == 1 and max(stacked_calls) > 1
    assert sum(stacked_calls) == len(ArtifactStore(tmp_path).keys()) == 1 + 3 * 4 - 2


@pytest.mark.slow  # about 10 s on 2 idle cores: 20 subset models and the reference model, 60 epochs each
def test_entailment_indicator_lds_is_far_above_random_on_the_lm(tmp_path):
    """Notes A.5: the known proponents explain much of the counterfactual signal; random scores none of it.

    150 sentences, 30 queries, M = 20 (measured: indicator 0.40, random -0.011; over corpus seeds 0-2 the
    indicator 0.40-0.52 and random -0.03-0.06).
    """
    task = LanguageModelTask(n_entities=60, n_facts=60, n_test=30, d_model=32,
                             recipe=TrainRecipe(epochs=60, batch_size=128, lr=0.5, momentum=0.9))
    metric = get_metric("lds", n_subsets=20, n_bootstrap=500)
    truth = metric.build_truth(task, ArtifactStore(tmp_path))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    values = {}
    for name in ("entailment", "random"):
        scores = get(name).fit(task, model, task.train_data).attribute(task.test_data)
        values[name] = metric.compute(scores, truth)
    indicator, random = values["entailment"], values["random"]
    assert indicator.value - random.value > 0.3, (indicator.value, random.value)
    assert abs(random.value) < 0.1, random.value
    assert random.ci[0] < 0 < random.ci[1] and indicator.ci[0] > random.ci[1], (indicator.ci, random.ci)


SUITE = {
    "version": 1,
    "name": "lm-tiny",
    "task": {"name": "language_model", "params": {"n_entities": 40, "n_relations": 4, "n_facts": 30, "n_test": 8, "d_model": 16,
                                                  "recipe": {"epochs": 3, "batch_size": 32, "lr": 0.2}}},
    "attributors": ["random", "bm25", "entailment", "grad_dot"],
    "metrics": ["mrr", {"name": "hit_at_k", "params": {"k": 5}}, {"name": "lds", "params": {"n_subsets": 4, "n_bootstrap": 50}},
                {"name": "tail_patch", "params": {"k": 3, "n_bootstrap": 50}}],
}


def test_a_small_lm_suite_runs_end_to_end(tmp_path, stacked_calls):
    built = build_suite(schema.parse_suite(yaml.safe_dump(SUITE)))
    result = run_suite(built, cache_dir=tmp_path, progress=False)
    assert stacked_calls == [4]  # the LDS subset models, together (the reference model is trained by train_model)
    assert {(e.attributor, e.metric) for e in result.entries} == {
        (a, m) for a in SUITE["attributors"] for m in ("mrr", "hit_at_k", "lds", "tail_patch")}
    for entry in result.entries:
        assert entry.error is None, (entry.attributor, entry.metric, entry.error)
        assert math.isfinite(entry.result.value), (entry.attributor, entry.metric)
    value = {(e.attributor, e.metric): e.result.value for e in result.entries}
    assert value["entailment", "mrr"] == 1.0 and value["entailment", "hit_at_k"] == 1.0  # the proponents by construction
    # the same through the Python API, with the store the suite filled: nothing is retrained
    again = tdaeval.evaluate(built.task, attributors=["entailment", "grad_dot"], metrics={"lds": {"n_subsets": 4, "n_bootstrap": 50}},
                             cache_dir=tmp_path, progress=False)
    assert stacked_calls == [4]
    lds = {e.attributor: e.result.value for e in again.entries}
    assert lds == {"entailment": value["entailment", "lds"], "grad_dot": value["grad_dot", "lds"]}
