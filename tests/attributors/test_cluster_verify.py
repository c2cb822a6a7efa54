"""``cluster_verify`` and its judges: the oracle's upper bound, the clustering's recall loss, judge errors, contradictions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tdaeval.attributors import ClusterVerify, get
from tdaeval.attributors.cluster_verify import NON_CANDIDATE
from tdaeval.attributors.judges import LexicalJudge, NoisyOracleJudge, OracleJudge
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.facts import CATEGORIES, sequence_tokens
from tdaeval.functional.sets import set_f1, set_recall
from tdaeval.tasks.language import LanguageModelTask
from tests.attributors._contract import refuses


@pytest.fixture(scope="module")
def task():
    """A small fact corpus with contradictions (no model needed: cluster_verify is model-free)."""
    return LanguageModelTask(n_entities=40, n_relations=4, n_facts=40, n_test=12, conflicts=0.3)


def _fit(task, **params) -> ClusterVerify:
    return get("cluster_verify", **params).fit(task, None, task.train_data)


def test_oracle_with_every_cluster_is_the_entailment_and_has_perfect_set_f1(task):
    attributor = _fit(task, n_clusters=5, n_candidate_clusters=5)
    scores = attributor.attribute(task.test_data)
    assert torch.equal(scores, task.entailment.float())  # every pair judged: the oracle IS the entailment matrix
    selected = attributor.selection(scores)
    assert torch.equal(selected, task.entailment)
    assert bool((set_f1(selected, task.entailment) == 1).all())
    assert attributor.cost_["judge_calls"] == task.n_test * task.n_train


def test_fewer_clusters_lose_exactly_the_proponents_outside_the_candidate_clusters(task):
    attributor = _fit(task, n_clusters=6, n_candidate_clusters=2)
    scores = attributor.attribute(task.test_data)
    clusters = attributor.candidate_clusters(task.test_data)
    recall = set_recall(attributor.selection(scores), task.entailment)
    for q in range(task.n_test):  # literal loop: the share of the query's proponents whose cluster is a candidate
        proponents = task.entailment[q].nonzero().flatten().tolist()
        inside = sum(int(attributor.labels_[j]) in clusters[q].tolist() for j in proponents)
        assert recall[q].item() == pytest.approx(inside / len(proponents))
        judged = [j for j in range(task.n_train) if int(attributor.labels_[j]) in clusters[q].tolist()]
        assert bool((scores[q, judged] >= 0).all())
        assert torch.equal(attributor.candidates(scores)[q].nonzero().flatten(), torch.tensor(judged))
    assert bool((recall <= 1).all()) and float(recall.mean()) < 1  # this clustering does lose proponents
    assert bool((scores[~attributor.candidates(scores)] == NON_CANDIDATE).all())
    assert attributor.cost_["judge_calls"] == int(attributor.candidates(scores).sum())


def test_noisy_oracle_at_zero_is_the_oracle_and_is_deterministic_per_pair(task):
    oracle = _fit(task, n_clusters=3, n_candidate_clusters=3).attribute(task.test_data)
    zero = _fit(task, n_clusters=3, n_candidate_clusters=3, judge="noisy_oracle", judge_params={"epsilon": 0.0}).attribute(task.test_data)
    assert torch.equal(oracle, zero)
    noisy = _fit(task, n_clusters=3, n_candidate_clusters=3, judge="noisy_oracle", judge_params={"epsilon": 0.2, "seed": 1})
    first = noisy.attribute(task.test_data)
    assert torch.equal(first, noisy.attribute(task.test_data.subset(torch.arange(task.n_test))))
    flipped = float((first != oracle).double().mean())
    assert 0.17 < flipped < 0.23  # 12 x 132 pairs, each flipped with probability 0.2
    # a pair's flip depends on its content only: judging it alone gives the same answer
    judge = NoisyOracleJudge(epsilon=0.2, seed=1)
    judge.bind(task, task.train_data)
    query, sentence = sequence_tokens(task.test_data)[0], sequence_tokens(task.train_data)[5]
    assert judge(query, sentence) == first[0, 5].item()


def test_contradictions_are_rejected_by_the_oracle_and_accepted_by_the_lexical_judge(task):
    code = CATEGORIES.index("contradiction")
    pairs = (task.categories == code).nonzero().tolist()
    assert pairs, "the fixture's corpus has contradictions"
    queries, sentences = sequence_tokens(task.test_data), sequence_tokens(task.train_data)
    oracle, lexical = OracleJudge(), LexicalJudge()
    oracle.bind(task, task.train_data)
    lexical.bind(task, task.train_data)
    for q, j in pairs:
        assert oracle(queries[q], sentences[j]) == 0.0
        assert lexical(queries[q], sentences[j]) == 0.5  # the subject is there, the object is not
    scores = _fit(task, n_clusters=3, n_candidate_clusters=3, judge="lexical").attribute(task.test_data)
    contradicts = task.categories == code
    selection = scores >= 0.5
    assert bool(selection[contradicts].all())  # accepted at the default accept = 0.5
    for q, j in task.entailment.nonzero().tolist():  # without aliases every proponent names both entities
        assert scores[q, j].item() == 1.0


def test_learned_judge_is_trained_on_a_disjoint_corpus_and_rejects_contradictions(task):
    big = LanguageModelTask(conflicts=0.2)  # the default corpus (708 sentences, 60 queries); on it the judge is near perfect
    attributor = _fit(big, n_clusters=2, n_candidate_clusters=2, judge="learned")
    scores = attributor.attribute(big.test_data)
    assert attributor.judge_.training_corpus_params_["seed"] != big.corpus.params["seed"]
    f1 = set_f1(attributor.selection(scores), big.entailment)
    assert float(f1.mean()) > 0.95  # measured 0.993
    assert float(scores[big.categories == CATEGORIES.index("contradiction")].max()) < 0.5
    with pytest.raises(AttributorError, match="training_seed"):
        _fit(task, judge="learned", judge_params={"training_seed": task.corpus.params["seed"]})


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.1, "yes", None, torch.tensor([0.2, 0.3])])
def test_a_judge_that_returns_a_non_probability_is_a_one_line_error_naming_judge(task, value):
    attributor = get("cluster_verify", n_clusters=2, n_candidate_clusters=1, judge=lambda q, c: value).fit(task, None, task.train_data)
    with pytest.raises(AttributorError, match="the 'judge' returned") as info:
        attributor.attribute(task.test_data)
    assert "\n" not in str(info.value)


def test_a_user_callable_judge_and_its_batch_form(task):
    calls = []

    class Batched:
        def __call__(self, q, c):  # never used: batch is
            raise AssertionError

        def batch(self, q, candidates):
            calls.append(len(candidates))
            return [float(len(c) % 2) for c in candidates]

    attributor = get("cluster_verify", n_clusters=2, n_candidate_clusters=2, judge=Batched()).fit(task, None, task.train_data)
    scores = attributor.attribute(task.test_data)
    lengths = torch.tensor([len(s) % 2 for s in sequence_tokens(task.train_data)], dtype=torch.float32)
    assert torch.equal(scores, lengths.expand(task.n_test, -1)) and calls == [task.n_train] * task.n_test


def test_deterministic_and_both_feature_kinds_run(task):
    for features in ("tfidf", "bm25"):
        first = _fit(task, n_clusters=4, features=features, seed=3)
        second = _fit(task, n_clusters=4, features=features, seed=3)
        assert torch.equal(first.labels_, second.labels_)
        assert torch.equal(first.attribute(task.test_data), second.attribute(task.test_data))


def test_refusals_and_bad_parameters_are_one_line(task, small_digits):
    assert refuses(get("cluster_verify"), small_digits)  # digits are not token sequences
    no_corpus = SimpleNamespace(train_data=task.train_data)
    reason = get("cluster_verify", judge="oracle").why_unsupported(no_corpus, task.train_data)
    assert reason is not None and "corpus" in reason and "\n" not in reason
    assert get("cluster_verify", judge=lambda q, c: 0.0).why_unsupported(no_corpus, task.train_data) is None
    assert "n_clusters" in get("cluster_verify", n_clusters=5000, n_candidate_clusters=1).why_unsupported(task, task.train_data)
    with pytest.raises(ConfigError, match="n_candidate_clusters"):
        get("cluster_verify", n_clusters=2, n_candidate_clusters=3)
    with pytest.raises(ConfigError, match="judge"):
        get("cluster_verify", judge="llm")
    with pytest.raises(ConfigError, match="judge_params"):
        get("cluster_verify", judge="oracle", judge_params={"epsilon": 0.1})
