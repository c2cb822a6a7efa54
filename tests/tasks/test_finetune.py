"""FineTuneTask: a base model trained once (counted), fine-tuned batched as one at a time, fingerprints, the epoch-0
checkpoint, the LM split and bad input."""

from __future__ import annotations

import pickle

import pytest
import torch

import tdaeval.suites.runner as runner
from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore
from tdaeval.task import TrainRecipe
from tdaeval.tasks import TASKS, DigitsTask, FineTuneTask
from tdaeval.tasks.finetune import clear_base_cache, digits_finetune
from tdaeval.training import train_model, train_models

SMALL = {"n_train": 160, "n_test": 20, "hidden": 16}
RECIPE = TrainRecipe(epochs=3, batch_size=32, lr=0.05)


def small_digits(**kwargs) -> FineTuneTask:
    params = {**SMALL, "base_recipe": RECIPE, "recipe": RECIPE, **kwargs}
    return FineTuneTask.digits(**params)


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def base_trainings(monkeypatch) -> list[int]:
    """One entry per real base/reference training run (``train_model`` as called by ``train_reference``)."""
    calls: list[int] = []
    original = runner.train_model

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "train_model", spy)
    clear_base_cache()
    yield calls
    clear_base_cache()


def test_base_model_is_trained_once_per_base_task_and_seed(base_trainings, tmp_path):
    store = ArtifactStore(tmp_path)
    task = small_digits(store=store)
    first = flat(task.build_model(0))
    assert flat(task.build_model(1)).equal(first) and flat(task.base_model()).equal(first) and len(base_trainings) == 1
    again = small_digits(store=store)  # a second construction: the process cache
    assert flat(again.build_model(0)).equal(first) and len(base_trainings) == 1
    clear_base_cache()
    from_store = small_digits(store=tmp_path)  # a new process: the store
    assert flat(from_store.build_model(0)).equal(first) and len(base_trainings) == 1
    clear_base_cache()
    other_seed = small_digits(base_seed=1)
    assert not flat(other_seed.build_model(0)).equal(first) and len(base_trainings) == 2
    clear_base_cache()
    no_store = small_digits()  # nothing cached anywhere: trained again, to the same weights
    assert flat(no_store.build_model(0)).equal(first) and len(base_trainings) == 3
    # the base model really is the base task trained on its data with base_seed
    alone = train_model(task.base_task, task.base_task.build_model(0), torch.arange(task.base_task.n_train), 0).model
    assert flat(alone).equal(first)


def test_train_reference_attaches_its_store_and_pickles_carry_the_base(base_trainings, tmp_path):
    task = small_digits()
    model, _ = runner.train_reference(task, seed=0, n_checkpoints=2, store=ArtifactStore(tmp_path))
    assert task.store is not None and len(base_trainings) == 2  # base, then the fine-tuned reference
    restored = pickle.loads(pickle.dumps(task))
    clear_base_cache()
    assert flat(restored.build_model(3)).equal(flat(task.build_model(0))) and len(base_trainings) == 2
    fresh = small_digits()  # store only: loaded, not trained
    fresh.attach_store(tmp_path)
    assert flat(fresh.build_model(0)).equal(flat(task.build_model(0))) and len(base_trainings) == 2


def test_batched_fine_tuning_equals_one_at_a_time_from_the_base(monkeypatch):
    import tdaeval.training as training

    task = small_digits(dropout=0.2)
    stacked: list[int] = []
    original = training._train_stacked
    monkeypatch.setattr(training, "_train_stacked", lambda t, s, seeds, d, **kw: stacked.append(len(s)) or original(t, s, seeds, d, **kw))
    g = torch.Generator().manual_seed(0)
    subsets = [torch.randperm(task.n_train, generator=g)[: task.n_train // 2] for _ in range(3)]
    seeds = [0, 1, 2]
    models = train_models(task, subsets, seeds)
    assert stacked == [3]
    base = flat(task.base_model())
    for m, (subset, seed) in enumerate(zip(subsets, seeds)):
        alone = task.train(task.build_model(seed), subset, seed)
        torch.testing.assert_close(flat(models.model(m)), flat(alone), atol=1e-5, rtol=1e-5)
        assert (flat(alone) - base).abs().max() > 1e-3  # fine-tuning moved it
    torch.testing.assert_close(models.measure(task)[1], task.measure(models.model(1)))


def test_fingerprint_follows_base_task_base_seed_data_and_recipe():
    task = small_digits()
    same = small_digits()
    assert task.fingerprint() == same.fingerprint()
    variants = {
        "base task (classes)": small_digits(base_classes=(0, 1, 2)),
        "base task (recipe)": small_digits(base_recipe=TrainRecipe(epochs=4, batch_size=32, lr=0.05)),
        "base seed": small_digits(base_seed=1),
        "recipe": small_digits(recipe=TrainRecipe(epochs=4, batch_size=32, lr=0.05)),
        "fine-tuning data": FineTuneTask(task.base_task, task.train_data.subset(torch.arange(task.n_train - 1)), recipe=RECIPE),
        "test data": FineTuneTask(task.base_task, task.train_data, recipe=RECIPE, test_data=task.test_data.subset(torch.arange(5))),
    }
    assert FineTuneTask(task.base_task, task.train_data, recipe=RECIPE).fingerprint() == task.fingerprint()
    prints = {name: t.fingerprint() for name, t in variants.items()}
    assert len(set(prints.values())) == len(prints) and task.fingerprint() not in prints.values()
    assert task.config()["base_task"] == task.base_task.fingerprint()


def test_digits_split_by_classes_and_clean_split():
    task = small_digits()
    assert set(task.base_task.train_data.targets.tolist()) == {0, 1, 2, 3, 4}
    assert set(task.train_data.targets.tolist()) == {5, 6, 7, 8, 9}
    assert task.n_train + task.base_task.n_train == SMALL["n_train"]
    assert task.test_data is task.base_task.test_data and len(set(task.test_data.targets.tolist())) > 5
    clean = small_digits(base_classes=None, base_fraction=0.25)
    assert clean.base_task.n_train == 40 and clean.n_train == 120
    assert clean.measurement_name == "margin" and clean.higher_is_better and clean.supports_sampling
    assert TASKS["finetune"] is FineTuneTask and digits_finetune(**SMALL).n_train == task.n_train


def test_epoch0_checkpoint_is_the_base_model_or_the_initial_model():
    task = small_digits()
    run = train_model(task, task.build_model(4), torch.arange(task.n_train), 4, n_checkpoints=2, include_initial=True)
    assert [c.epoch for c in run.checkpoints] == [0, 2, 3] and run.checkpoints[0].lr == 0.0
    base = dict(task.base_model().named_parameters())
    assert all(run.checkpoints[0].params[k].equal(v) for k, v in base.items())
    plain = DigitsTask(n_train=60, n_test=10, recipe=RECIPE)
    initial = dict(plain.build_model(7).named_parameters())
    run = train_model(plain, plain.build_model(7), torch.arange(60), 7, n_checkpoints=3, include_initial=True)
    default = train_model(plain, plain.build_model(7), torch.arange(60), 7, n_checkpoints=3)
    assert [c.epoch for c in run.checkpoints] == [0, 1, 2, 3] and [c.epoch for c in default.checkpoints] == [1, 2, 3]
    assert all(run.checkpoints[0].params[k].equal(v) for k, v in initial.items())
    assert not run.checkpoints[0].params["0.weight"].equal(run.checkpoints[1].params["0.weight"])
    assert all(a.params[k].equal(b.params[k]) for a, b in zip(run.checkpoints[1:], default.checkpoints) for k in initial)
    assert flat(run.model).equal(flat(default.model))  # recording it changes nothing else


def test_language_split_by_fact_id():
    task = FineTuneTask.language(n_entities=40, n_relations=4, n_facts=30, n_test=8, d_model=16, n_finetune_facts=10)
    corpus = task.base_task.corpus
    full_fact = torch.cat([corpus.fact_train, task.corpus.fact_train])
    assert (task.corpus.fact_train >= 0).all() and (task.corpus.fact_train < 10).all()
    assert not ((corpus.fact_train >= 0) & (corpus.fact_train < 10)).any() and (full_fact >= 10).any()
    assert task.train_data is task.corpus.train and task.base_task.train_data is corpus.train
    assert task.entailment.shape == task.categories.shape == (8, task.n_train)
    assert task.entailment.any(dim=1).all()  # every query's proponents are fine-tuning sentences
    expected = task.corpus.fact_train.unsqueeze(0) == torch.arange(8).unsqueeze(1)
    assert task.entailment.equal(expected)
    assert task.measurement_name == "answer_log_odds" and task.positions(task.test_data).sum() == 8


def test_bad_input_is_one_line_config_error():
    task = small_digits()
    base = task.base_task
    cases = [
        (lambda: FineTuneTask(base, Data(torch.zeros(4, 32), torch.zeros(4, dtype=torch.long))), r"'finetune_data'.*\[n, 64\]"),
        (lambda: FineTuneTask(base, Data(torch.zeros(4, 64, dtype=torch.float64), torch.zeros(4, dtype=torch.long))), "'finetune_data'.*float32"),
        (lambda: FineTuneTask(base, Data(torch.zeros(4, 64), torch.zeros(4, 2, dtype=torch.long))), "'finetune_data'.*targets"),
        (lambda: FineTuneTask(base, (torch.zeros(4, 64), torch.zeros(4))), "'finetune_data'.*Data"),
        (lambda: FineTuneTask(base, Data(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long))), "'finetune_data'.*at least one"),
        (lambda: FineTuneTask(base, task.train_data, test_data=Data(torch.zeros(2, 8), torch.zeros(2, dtype=torch.long))), "'test_data'"),
        (lambda: FineTuneTask("digits", task.train_data), "'base_task'"),
        (lambda: FineTuneTask(base, task.train_data, base_seed=1.5), "'base_seed'"),
        (lambda: FineTuneTask(base, task.train_data, recipe="fast"), "'recipe'"),
        (lambda: FineTuneTask(base, task.train_data, store=3), "'store'"),
        (lambda: small_digits(base_classes=range(10)), "'base_classes'"),
        (lambda: small_digits(base_classes=None, base_fraction=1.0), "'base_fraction'"),
        (lambda: FineTuneTask.language(n_entities=40, n_relations=4, n_facts=30, n_test=8, n_finetune_facts=5), "'n_finetune_facts'"),
    ]
    for make, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            make()
        assert "\n" not in str(err.value)
