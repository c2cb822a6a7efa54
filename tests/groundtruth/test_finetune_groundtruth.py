"""Retraining gold standards over the fine-tuning data of a FineTuneTask: LDS on digits and on a tiny LM fine-tune,
batched, each stored model equal to one fine-tuned alone from the base model."""

from __future__ import annotations

import math

import pytest
import torch

from tdaeval.attributors import get
from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth, lds_jobs
from tdaeval.metrics import get_metric
from tdaeval.task import TrainRecipe
from tdaeval.tasks import FineTuneTask
from tdaeval.training import train_model

pytestmark = pytest.mark.filterwarnings("error:Batched training is not possible")




def _check_lds(task: FineTuneTask, tmp_path, stacked_calls: list[int], attributor: str) -> None:
    spec = LDSSpec(n_subsets=4, n_seeds=2, seed=1)
    truth = build_lds_groundtruth(task, spec, ArtifactStore(tmp_path))
    assert sum(stacked_calls) == 8 and max(stacked_calls) > 1
    assert truth.masks.shape == (4, task.n_train) and truth.outputs.shape == (4, 2, task.n_test)
    job = lds_jobs(task, spec, truth.masks)[2][1]
    alone = task.measure(train_model(task, task.build_model(job.seed), job.indices, job.seed).model)
    torch.testing.assert_close(truth.outputs[2, 1], alone, atol=1e-4, rtol=1e-4)
    base = task.measure(task.base_model())
    assert not torch.allclose(truth.outputs[0, 0], base, atol=1e-3)  # fine-tuned, not the base model
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    scores = get(attributor).fit(task, model, task.train_data).attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train)
    metric = get_metric("lds", n_subsets=4, n_seeds=2, seed=1, n_bootstrap=50)
    assert math.isfinite(metric.compute(scores, truth).value)


def test_lds_over_digits_fine_tuning_subsets(tmp_path, stacked_calls):
    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.05)
    task = FineTuneTask.digits(n_train=160, n_test=12, hidden=16, base_recipe=recipe, recipe=recipe)
    _check_lds(task, tmp_path, stacked_calls, "grad_dot")


def test_lds_over_a_tiny_lm_fine_tune(tmp_path, stacked_calls):
    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.2, momentum=0.9)
    task = FineTuneTask.language(n_entities=40, n_relations=4, n_facts=30, n_test=8, d_model=16, base_recipe=recipe, recipe=recipe)
    _check_lds(task, tmp_path, stacked_calls, "entailment")
