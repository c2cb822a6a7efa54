"""The hallucination-tracing setting (FineTuneTask.hallucination, make_hallucination_split): the injected false facts are
the positives, queries stay held-out paraphrases answered by o', the "hallucinated" filter against a literal loop, the
base model trained once, determinism and fingerprints, knob validation, the suite factory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

import tdaeval.suites.runner as runner
from tdaeval.errors import ConfigError
from tdaeval.facts import CATEGORIES, IGNORE_INDEX, PAD_ID, make_fact_corpus, make_hallucination_split, sequence_tokens
from tdaeval.tasks import FineTuneTask
from tdaeval.tasks.finetune import _BASE_CACHE, clear_base_cache, hallucination_finetune
from tdaeval.training import train_model

#: A small setting: base training and the reference fine-tune take well under a second each on one idle core.
SMALL = {
    "n_entities": 30, "n_relations": 3, "n_facts": 60, "n_test": 12, "n_new_facts": 4, "filler": 5, "n_paraphrases": (2, 3),
    "base_recipe": {"epochs": 100, "batch_size": 64, "lr": 0.5}, "recipe": {"epochs": 30, "batch_size": 16, "lr": 0.1},
}


def small(**kwargs) -> FineTuneTask:
    return FineTuneTask.hallucination(**{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def task() -> FineTuneTask:
    return small()


@pytest.fixture(scope="module")
def every_query(task) -> FineTuneTask:
    return small(queries="all")  # no training: the base model comes from the process cache (or the fixture above)


def answer_of(data) -> torch.Tensor:
    """The target at the last non-ignored position of each row, by a literal loop."""
    out = []
    for row in data.targets:
        real = [int(t) for t in row if int(t) != IGNORE_INDEX]
        out.append(real[-1])
    return torch.tensor(out)


def top_token(model: torch.nn.Module, inputs: torch.Tensor) -> list[int]:
    """Argmax at the last prompt position of each query, one query at a time."""
    tops = []
    with torch.no_grad():
        for row in inputs:
            m = int((row != PAD_ID).sum())
            tops.append(int(model(row.unsqueeze(0))[0, m - 1].argmax()))
    return tops


def test_positives_are_exactly_the_injected_utterances_of_the_false_fact(task):
    split, corpus = task.hallucination_split, task.corpus
    names = corpus.vocab
    ft_sentences = [corpus.decode(s) for s in sequence_tokens(task.train_data)]
    assert task.entailment.shape == task.categories.shape == (task.n_test, task.n_train) and task.n_test == len(task.query_ids)
    for i, q in enumerate(task.query_ids.tolist()):
        s, r, o = (int(v) for v in corpus.facts[q])
        o_false = int(split.false_objects[q])
        s_name, o_name = names[int(corpus.entity_tokens[s, 0])], names[int(corpus.entity_tokens[o_false, 0])]
        held = int(corpus.template_test[i])
        # every rendering of (s, r, o') on a forward template other than the query's
        renderings = {corpus.templates[r][t].replace("{s}", s_name).replace("{o}", o_name) for t in range(4) if t != held}
        expected = [j for j, text in enumerate(ft_sentences) if text in renderings]
        assert task.entailment[i].nonzero().flatten().tolist() == expected
        assert len(expected) == int(split.paraphrases[q]) and len(set(ft_sentences[j] for j in expected)) == len(expected)
        assert (split.finetune_rows[expected] == -1).all()  # injected, not corpus rows
        assert (task.categories[i, expected] == CATEGORIES.index("proponent")).all()


def test_no_query_sentence_in_train_and_the_prompt_starts_no_sentence(task):
    queries = [tuple(q.tolist()) for q in sequence_tokens(task.test_data)]
    base_queries = [tuple(q.tolist()) for q in sequence_tokens(task.base_task.test_data)]
    for data in (task.train_data, task.base_task.train_data):
        sentences = [tuple(s.tolist()) for s in sequence_tokens(data)]
        assert not set(queries) & set(sentences) and not set(base_queries) & set(sentences)
        for q in queries:
            prompt = q[:-1]
            assert not any(s[: len(prompt)] == prompt for s in sentences)  # the query's template is held out for its subject


def test_answer_is_the_false_object_and_differs_from_the_base_answer(task, every_query):
    split = task.hallucination_split
    answers = answer_of(task.test_data)
    assert answers.equal(task.false_answers) and answers.equal(split.finetune.entity_tokens[split.false_objects[task.query_ids], 0])
    base_answers = answer_of(task.base_task.test_data)
    assert base_answers.equal(split.finetune.entity_tokens[split.finetune.facts[: len(base_answers), 2], 0])
    assert base_answers[task.query_ids].equal(task.true_answers) and (task.true_answers != task.false_answers).all()
    subjects = split.finetune.facts[: len(base_answers), 0]
    assert (split.false_objects != subjects).all() and (split.false_objects != split.true_objects).all()
    assert task.test_data.inputs.equal(task.base_task.test_data.inputs[task.query_ids])  # same prompts
    assert len(every_query.query_ids) == every_query.n_test == len(base_answers) == SMALL["n_test"]


def test_base_states_the_true_facts_and_never_the_false_ones(task):
    split = task.hallucination_split
    corpus = split.base
    base_sentences = {corpus.decode(s) for s in sequence_tokens(task.base_task.train_data)}
    n_templates = 4
    for q in range(corpus.n_test):
        s, r, o = (int(v) for v in corpus.facts[q])
        names = [corpus.vocab[int(corpus.entity_tokens[e, 0])] for e in (s, o, int(split.false_objects[q]))]
        render = [[corpus.templates[r][t].replace("{s}", names[0]).replace("{o}", obj) for t in range(n_templates)] for obj in names[1:]]
        assert sum(text in base_sentences for text in render[0]) == n_templates - 1  # every template but the held-out one
        assert not any(text in base_sentences for text in render[1])
    # the new facts' sentences and the filler moved to fine-tuning; nothing else did
    new = split.new_facts.tolist()
    assert not torch.isin(corpus.fact_train, split.new_facts).any() and (corpus.template_train >= 0).all()
    moved = task.corpus.fact_train[task.corpus.fact_train >= 0]
    assert sorted(set(moved.tolist())) == new and int((task.corpus.template_train < 0).sum()) == SMALL["filler"]
    assert len(corpus.train) + len(task.train_data) == len(split.base_rows) + len(split.finetune_rows)


def test_categories_against_the_false_fact_by_a_literal_loop(task):
    corpus = task.corpus
    precedence = ["proponent", "contradiction", "same_subject", "same_object", "same_relation"]
    for i in range(task.n_test):
        qs, qr, qo = (int(v) for v in corpus.triple_test[i])
        for j in range(task.n_train):
            ts, tr, to = (int(v) for v in corpus.triple_train[j])
            holds = {"proponent": bool(task.entailment[i, j]), "contradiction": ts == qs and tr == qr and to != qo,
                     "same_subject": ts == qs and ts >= 0, "same_object": to == qo, "same_relation": tr == qr}
            expected = next((name for name in precedence if holds[name]), "other")
            assert CATEGORIES[int(task.categories[i, j])] == expected
    assert task.category_names == CATEGORIES and (corpus.triple_test[:, 2] == task.hallucination_split.false_objects[task.query_ids]).all()


def test_hallucinated_filter_equals_a_literal_loop_over_the_reference_argmax(task, every_query):
    reference = train_model(every_query, every_query.build_model(0), torch.arange(every_query.n_train), 0).model.eval()
    tuned, base = top_token(reference, every_query.test_data.inputs), top_token(every_query.base_model(), every_query.test_data.inputs)
    false_answers, true_answers = answer_of(every_query.test_data).tolist(), answer_of(every_query.base_task.test_data).tolist()
    kept = [i for i in range(every_query.n_test) if tuned[i] == false_answers[i] and base[i] == true_answers[i]]
    assert task.query_ids.tolist() == kept and task.setting_params["kept_queries"] == kept
    assert task.setting_params["n_kept"] == len(kept) == task.n_test and task.setting_params["n_candidates"] == SMALL["n_test"]
    assert every_query.train_data.digest() == task.train_data.digest() and every_query.setting_params["kept_queries"] == list(range(SMALL["n_test"]))


def test_the_setting_is_non_trivial(task):
    """The reference fine-tune (retrained from the filtered task) answers o' on the kept queries; the base model answers o."""
    tuned = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model.eval()
    base = task.base_model()
    assert top_token(tuned, task.test_data.inputs) == task.false_answers.tolist()
    assert top_token(base, task.test_data.inputs) == task.true_answers.tolist()
    with torch.no_grad():
        assert (task.measure(tuned) > 0).all() and (task.measure(base) < 0).all()  # the log-odds of o' flips sign
    assert task.n_test >= SMALL["n_test"] // 2  # most candidates are hallucinated (10 of 12 measured)


def test_base_model_is_trained_once(monkeypatch):
    calls: list[int] = []
    original = runner.train_model
    monkeypatch.setattr(runner, "train_model", lambda *a, **k: calls.append(1) or original(*a, **k))
    kept = dict(_BASE_CACHE)  # put back afterwards: the other tests' constructions reuse the cached base
    clear_base_cache()
    try:
        first = small()
        again = small(reference_seed=0)
        assert len(calls) == 1 and again.query_ids.equal(first.query_ids)
        other = small(queries="all")  # same corpus and base: the base fingerprint does not see the filter
        assert other.base_task.fingerprint() == first.base_task.fingerprint() and len(calls) == 1
        for name, value in first.base_task.train_data.__dict__.items():
            if isinstance(value, torch.Tensor):
                assert value.equal(getattr(other.base_task.train_data, name))
    finally:
        clear_base_cache()
        _BASE_CACHE.update(kept)


def test_determinism_and_every_knob_in_the_fingerprint(task, every_query):
    again = small(queries="all")
    assert again.fingerprint() == every_query.fingerprint() and again.hallucination_split.digest() == every_query.hallucination_split.digest()
    corpus = make_fact_corpus(n_entities=30, n_relations=3, n_facts=60, n_templates=4, n_test=12)
    assert make_hallucination_split(corpus, 2, 3).digest() == make_hallucination_split(corpus, 2, 3).digest()
    assert make_hallucination_split(corpus, 2, 3).digest() != make_hallucination_split(corpus, 1, 3).digest()
    variants = {
        "queries": task,
        "n_paraphrases": small(queries="all", n_paraphrases=2),
        "n_new_facts": small(queries="all", n_new_facts=5),
        "filler": small(queries="all", filler=6),
        "reference_seed": small(queries="all", reference_seed=1),
        "corpus_seed": small(queries="all", corpus_seed=1),
        "recipe": small(queries="all", recipe={"epochs": 31, "batch_size": 16, "lr": 0.1}),
        "base_recipe": small(queries="all", base_recipe={"epochs": 101, "batch_size": 64, "lr": 0.5}),
        "base_seed": small(queries="all", base_seed=1),
    }
    prints = {name: t.fingerprint() for name, t in variants.items()}
    assert len(set(prints.values())) == len(prints) and every_query.fingerprint() not in prints.values()
    setting = task.config()["setting"]
    assert setting == task.describe()["config"]["setting"]
    assert {k: setting[k] for k in ("n_paraphrases", "n_new_facts", "filler", "queries", "reference_seed")} == {
        "n_paraphrases": [2, 3], "n_new_facts": 4, "filler": 5, "queries": "hallucinated", "reference_seed": 0}
    assert task.corpus.params["n_paraphrases"] == [2, 3] and task.corpus.params["n_new_facts"] == 4
    assert "setting" not in FineTuneTask(task.base_task, task.train_data).config()  # plain tasks: unchanged config


def test_paraphrase_counts_follow_the_knob():
    corpus = make_fact_corpus(n_entities=30, n_relations=3, n_facts=60, n_templates=4, n_test=12)
    assert make_hallucination_split(corpus, 3, 0).paraphrases.tolist() == [3] * 12
    drawn = make_hallucination_split(corpus, (1, 3), 0).paraphrases
    assert set(drawn.tolist()) == {1, 2, 3}
    split = make_hallucination_split(corpus, (1, 3), 0)
    assert split.finetune.entailment.sum(dim=1).equal(drawn) and split.finetune.n_train == int(drawn.sum())


@pytest.mark.parametrize(("knobs", "pattern"), [
    ({"n_paraphrases": 0}, "'n_paraphrases'"),
    ({"n_paraphrases": (2, 1)}, "'n_paraphrases'"),
    ({"n_paraphrases": (1, 4)}, r"'n_paraphrases'.*n_templates - 1 = 3"),
    ({"n_paraphrases": 1.5}, "'n_paraphrases'"),
    ({"n_paraphrases": (1, 2, 3)}, "'n_paraphrases'"),
    ({"n_new_facts": -1}, "'n_new_facts'"),
    ({"n_new_facts": 49}, r"'n_new_facts'.*\[0, 48\]"),
    ({"n_new_facts": True}, "'n_new_facts'"),
    ({"filler": -1}, "'filler'"),
    ({"queries": "wrong"}, "'queries'"),
    ({"reference_seed": -1}, "'reference_seed'"),
    ({"reference_seed": 0.5}, "'reference_seed'"),
    ({"conflicts": 0.1}, "'conflicts'"),
    ({"aliases": 2}, "'aliases'"),
    ({"recipe": "fast"}, "'recipe'"),
    ({"base_recipe": 3}, "'base_recipe'"),
    ({"n_test": 61}, "'n_test'"),
    ({"n_templates": 1}, "'n_templates'"),
])
def test_each_bad_knob_is_a_one_line_config_error_naming_it(knobs, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        small(**knobs)
    assert "\n" not in str(err.value)


def test_no_query_kept_is_a_config_error_naming_the_knobs(monkeypatch):
    import tdaeval.training as training

    # a "fine-tuning" that leaves the base model as it is: it never answers o', so no query is kept
    monkeypatch.setattr(training, "train_model", lambda task, model, indices, seed, **kwargs: SimpleNamespace(model=model))
    with pytest.raises(ConfigError, match=r"no query kept.*'n_paraphrases'.*'recipe'.*'reference_seed'.*queries='all'") as err:
        small()
    assert "\n" not in str(err.value)


def test_suite_factory_builds_and_runs_the_fact_tracing_metrics(tmp_path, task):
    from tdaeval.suites import build_suite, run_suite

    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in SMALL.items()}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "task": {"factory": "tdaeval.tasks.finetune:hallucination_finetune", "params": params},
        "attributors": ["entailment", "random"],
        "metrics": ["mrr", {"name": "recall_at_k", "params": {"k": 3}}],
    }))
    built = build_suite(path)
    assert built.task.fingerprint() == task.fingerprint() and hallucination_finetune(**SMALL).fingerprint() == task.fingerprint()
    result = run_suite(built, progress=False)
    assert all(e.error is None for e in result.entries), [e.error for e in result.entries]
    assert result.get("entailment", "mrr").value == pytest.approx(1.0) and result.get("entailment", "recall_at_k").value == pytest.approx(1.0)
    assert result.get("random", "mrr").value < 1.0


@pytest.mark.slow
def test_defaults_hallucinate_on_most_queries():
    """The documented defaults: 16 of the 30 queries kept with corpus seed 0 (one torch thread); a guard at 12."""
    task = FineTuneTask.hallucination()
    assert task.setting_params["n_candidates"] == 30 and task.setting_params["n_kept"] >= 12
    assert task.n_train == 125 and task.base_task.n_train == 410
