"""The generated fact corpus: invariants (notes A.5), the knobs, the token format and its helpers."""

from __future__ import annotations

import itertools

import pytest
import torch

from tdaeval.data import Data
from tdaeval.datasets import FactCorpus as ReexportedCorpus
from tdaeval.datasets import make_fact_corpus as reexported_make
from tdaeval.errors import ConfigError
from tdaeval.facts import (
    CATEGORIES,
    IGNORE_INDEX,
    PAD_ID,
    FactCorpus,
    answer_positions,
    last_target_positions,
    make_fact_corpus,
    prompt_tokens,
    sequence_tokens,
)

SMALL = dict(n_entities=40, n_relations=3, n_facts=45, n_templates=3, n_test=12)
# Every knob on at once: the invariants must hold together.
ALL_KNOBS = dict(SMALL, reversed_templates=2, aliases=3, repeat=2, repeat_fraction=0.5, conflicts=0.25, filler=15)


@pytest.fixture(scope="module")
def default_corpus() -> FactCorpus:
    return make_fact_corpus()


@pytest.fixture(scope="module")
def knobs_corpus() -> FactCorpus:
    return make_fact_corpus(**ALL_KNOBS)


def _sentences(data: Data) -> list[tuple[int, ...]]:
    return [tuple(t.tolist()) for t in sequence_tokens(data)]


def _entity_of_token(corpus: FactCorpus) -> dict[int, int]:
    return {int(tok): e for e, row in enumerate(corpus.entity_tokens) for tok in row}


def test_reexported_from_datasets():
    assert reexported_make is make_fact_corpus and ReexportedCorpus is FactCorpus


def test_default_sizes_and_format(default_corpus):
    c = default_corpus
    assert c.vocab[PAD_ID] == "<pad>" and len(set(c.vocab)) == len(c.vocab)
    assert c.n_train == 240 * 3 - 60 == 660 and c.n_test == 60
    for data in (c.train, c.test):
        assert data.inputs.dtype == data.targets.dtype == torch.int64
    assert c.train.inputs.shape == c.train.targets.shape == (660, c.test.inputs.shape[1])
    assert c.test.inputs.shape == c.test.targets.shape
    assert c.entailment.shape == c.category.shape == (60, 660)
    assert c.entailment.dtype == torch.bool and c.category.dtype == torch.int8
    assert c.params == dict(n_entities=200, n_relations=8, n_facts=240, n_templates=3, n_test=60, seed=0, reversed_templates=0,
                            aliases=1, repeat=1, repeat_fraction=1.0, conflicts=0.0, filler=0)
    assert torch.equal(c.fact_test, torch.arange(60)) and torch.equal(c.triple_test, c.facts[:60])


@pytest.mark.parametrize("name", ["default_corpus", "knobs_corpus"])
def test_partial_fact_uniqueness(name, request):
    facts = request.getfixturevalue(name).facts.tolist()
    assert len({(s, r) for s, r, o in facts}) == len(facts)  # (s, r) => o
    assert len({(r, o) for s, r, o in facts}) == len(facts)  # no (r, ., o) repeats
    assert all(s != o for s, r, o in facts)


@pytest.mark.parametrize("name", ["default_corpus", "knobs_corpus"])
def test_token_format(name, request):
    c = request.getfixturevalue(name)
    # train: targets are the inputs shifted by one, every real position has a target
    x, y = c.train.inputs, c.train.targets
    real = x != PAD_ID
    assert torch.equal(real, y != IGNORE_INDEX)
    assert torch.equal(x[:, 1:][real[:, 1:]], y[:, :-1][real[:, 1:]])
    assert bool(real[:, 0].all()) and not bool((real[:, 1:] & ~real[:, :-1]).any())  # left-aligned, no holes
    # test: one target, at the last prompt position
    xt, yt = c.test.inputs, c.test.targets
    assert torch.equal((yt != IGNORE_INDEX).sum(1), torch.ones(c.n_test, dtype=torch.long))
    lengths = (xt != PAD_ID).sum(1)
    assert torch.equal(answer_positions(c.test), lengths - 1)
    assert torch.equal(answer_positions(c.train), real.sum(1) - 1)
    assert bool((xt != PAD_ID).sum(1).eq(lengths).all()) and not bool(((xt != PAD_ID)[:, 1:] & (xt == PAD_ID)[:, :-1]).any())
    # one common width: the longest sentence minus one
    longest = max(len(s) for s in _sentences(c.train) + _sentences(c.test))
    assert x.shape[1] == xt.shape[1] == longest - 1


@pytest.mark.parametrize("name", ["default_corpus", "knobs_corpus"])
def test_sequence_tokens_round_trip(name, request):
    c = request.getfixturevalue(name)
    width = c.train.inputs.shape[1]
    rebuilt_x = torch.full_like(c.train.inputs, PAD_ID)
    rebuilt_y = torch.full_like(c.train.targets, IGNORE_INDEX)
    for i, seq in enumerate(sequence_tokens(c.train)):
        rebuilt_x[i, : len(seq) - 1], rebuilt_y[i, : len(seq) - 1] = seq[:-1], seq[1:]
    assert torch.equal(rebuilt_x, c.train.inputs) and torch.equal(rebuilt_y, c.train.targets)
    for i, (seq, prompt) in enumerate(zip(sequence_tokens(c.test), prompt_tokens(c.test))):
        assert torch.equal(seq[:-1], prompt) and len(seq) <= width + 1
        assert int(seq[-1]) == int(c.test.targets[i, len(prompt) - 1])
    # the query's answer is its fact's object, its prompt holds the subject
    entity = _entity_of_token(c)
    for q, seq in enumerate(sequence_tokens(c.test)):
        s, _, o = c.triple_test[q].tolist()
        assert entity[int(seq[-1])] == o and s in {entity.get(int(t)) for t in seq[:-1]}


def test_answer_positions_of_a_row_without_target_is_an_error():
    data = Data(torch.tensor([[3, 4, 0]]), torch.full((1, 3), IGNORE_INDEX))
    assert last_target_positions(data.targets).tolist() == [-1]
    with pytest.raises(ConfigError, match="target"):
        answer_positions(data)


@pytest.mark.parametrize("name", ["default_corpus", "knobs_corpus"])
def test_queries_are_never_train_sentences_and_have_proponents(name, request):
    c = request.getfixturevalue(name)
    train = set(_sentences(c.train))
    assert not train & set(_sentences(c.test))
    # proponent count = (templates of the fact in train) x its repeats, and matches the sentences with the fact id
    n_forms = c.params["n_templates"] - 1 + c.params["reversed_templates"]
    expected = n_forms * c.repeats[c.fact_test]
    assert torch.equal(c.entailment.sum(1), expected) and bool((expected >= 1).all())
    assert torch.equal(c.entailment, c.fact_train.unsqueeze(0) == c.fact_test.unsqueeze(1))
    # the held-out template is the one template of the fact missing from train
    for q in range(c.n_test):
        templates = set(c.template_train[c.entailment[q]].tolist())
        assert int(c.template_test[q]) not in templates
        assert templates == set(range(c.params["n_templates"] + c.params["reversed_templates"])) - {int(c.template_test[q])}


@pytest.mark.parametrize("name", ["default_corpus", "knobs_corpus"])
def test_sentences_state_their_triples(name, request):
    """Each fact sentence holds its subject and object tokens where its template puts them (read from the tokens)."""
    c = request.getfixturevalue(name)
    entity = _entity_of_token(c)
    n_templates = c.params["n_templates"]
    for seq, (s, r, o), t in zip(_sentences(c.train), c.triple_train.tolist(), c.template_train.tolist()):
        mentioned = [entity[tok] for tok in seq if tok in entity]
        if t < 0:
            assert (s, r, o) == (-1, -1, -1) and not mentioned
        elif t < n_templates:
            assert mentioned == [s, o] and entity[seq[-1]] == o  # forward: object last
        else:
            assert mentioned == [o, s] and entity[seq[-1]] == s  # reversed: subject last


def _brute_force_category(c: FactCorpus) -> torch.Tensor:
    out = torch.zeros(c.n_test, c.n_train, dtype=torch.int8)
    for q, (qs, qr, qo) in enumerate(c.triple_test.tolist()):
        for i, (s, r, o) in enumerate(c.triple_train.tolist()):
            if int(c.fact_train[i]) == int(c.fact_test[q]):
                name = "proponent"
            elif s == qs and r == qr and o != qo:
                name = "contradiction"
            elif s == qs:
                name = "same_subject"
            elif o == qo:
                name = "same_object"
            elif r == qr:
                name = "same_relation"
            else:
                name = "other"
            out[q, i] = CATEGORIES.index(name)
    return out


@pytest.mark.parametrize("kwargs", [SMALL, ALL_KNOBS], ids=["plain", "all-knobs"])
def test_category_matrix_matches_brute_force(kwargs):
    c = make_fact_corpus(**kwargs)
    assert torch.equal(c.category, _brute_force_category(c))
    assert torch.equal(c.category == CATEGORIES.index("proponent"), c.entailment)


def test_same_seed_same_digest_other_seed_other_digest(default_corpus):
    assert make_fact_corpus().digest() == default_corpus.digest()
    assert make_fact_corpus(seed=1).digest() != default_corpus.digest()


@pytest.mark.parametrize("knob, value", [("n_entities", 41), ("n_relations", 4), ("n_facts", 44), ("n_templates", 4), ("n_test", 11),
                                         ("seed", 3), ("reversed_templates", 1), ("aliases", 2), ("repeat", 2),
                                         ("repeat_fraction", 0.5), ("conflicts", 0.2), ("filler", 5)])
def test_every_knob_changes_the_digest(knob, value):
    base = dict(SMALL, repeat=2) if knob == "repeat_fraction" else SMALL
    assert make_fact_corpus(**{**base, knob: value}).digest() != make_fact_corpus(**base).digest()
    assert make_fact_corpus(**{**base, knob: value}).params[knob] == value


def test_knobs_leave_facts_and_queries_alone():
    """Each part has its own generator: adding reversed templates, conflicts, filler or repeats keeps facts and queries."""
    base = make_fact_corpus(**SMALL)
    for extra in (dict(reversed_templates=2), dict(conflicts=0.3), dict(filler=10), dict(repeat=3)):
        other = make_fact_corpus(**SMALL, **extra)
        assert torch.equal(other.facts, base.facts) and torch.equal(other.test.inputs, base.test.inputs), extra
        assert torch.equal(other.test.targets, base.test.targets) and other.templates[0][:3] == base.templates[0], extra


def test_aliases_make_query_entity_tokens_disjoint_from_the_proponents():
    c = make_fact_corpus(**SMALL, aliases=2)
    entity = _entity_of_token(c)
    train, test = _sentences(c.train), _sentences(c.test)
    forms_used = set()
    for q in range(c.n_test):
        query_entities = {tok for tok in test[q] if tok in entity}
        assert len(query_entities) == 2
        for i in c.entailment[q].nonzero().flatten().tolist():
            proponent_entities = {tok for tok in train[i] if tok in entity}
            assert not query_entities & proponent_entities
            assert {entity[t] for t in proponent_entities} == {entity[t] for t in query_entities}  # same entities, other forms
            forms_used |= proponent_entities
    assert c.entity_tokens.shape == (40, 2)
    # without aliases the query and its proponents share both entity tokens
    plain = make_fact_corpus(**SMALL)
    train, test = _sentences(plain.train), _sentences(plain.test)
    i = int(plain.entailment[0].nonzero()[0])
    assert {t for t in test[0] if t in _entity_of_token(plain)} <= set(train[i])


def test_reversed_templates_give_object_first_proponents():
    c = make_fact_corpus(**SMALL, reversed_templates=1)
    reversed_rows = c.template_train >= c.params["n_templates"]
    assert int(reversed_rows.sum()) == 45  # one per fact, never held out
    assert bool((c.template_test < c.params["n_templates"]).all())
    assert bool(c.entailment[:, reversed_rows].any(1).all())  # every query has a reversed proponent
    entity = _entity_of_token(c)
    for seq, (s, _, o) in zip(_sentences(c.train.subset(reversed_rows.nonzero().flatten())), c.triple_train[reversed_rows].tolist()):
        assert [entity[t] for t in seq if t in entity] == [o, s]


def test_repeat_and_repeat_fraction():
    c = make_fact_corpus(**SMALL, repeat=3, repeat_fraction=0.4)
    assert sorted(c.repeats.tolist()) == [1] * 27 + [3] * 18  # round(0.4 * 45) = 18 repeated facts
    counts = torch.bincount(c.fact_train[c.fact_train >= 0], minlength=45)
    n_forms = torch.where(torch.arange(45) < 12, 2, 3)
    assert torch.equal(counts, n_forms * c.repeats)
    assert c.n_train == int((n_forms * c.repeats).sum())
    # identical sentences with one alias
    train = _sentences(c.train)
    f = int(c.repeats.argmax())
    rows = [train[i] for i in (c.fact_train == f).nonzero().flatten().tolist()]
    assert len(set(rows)) == len(rows) // 3


def test_conflicts_are_contradictions_never_proponents():
    c = make_fact_corpus(**SMALL, conflicts=0.25)
    contradicting = c.contradicts_train >= 0
    assert int(contradicting.sum()) == 3 + 8  # round(0.25 * 12) test facts, round(0.25 * 33) others
    code = CATEGORIES.index("contradiction")
    assert int((c.category == code).sum()) == 3
    assert not bool((c.entailment & (c.category == code)).any())
    assert not bool(c.entailment[:, contradicting].any())
    assert bool((c.fact_train[contradicting] == -1).all())
    for i in contradicting.nonzero().flatten().tolist():
        s, r, o = c.facts[int(c.contradicts_train[i])].tolist()
        ts, tr, to = c.triple_train[i].tolist()
        assert (ts, tr) == (s, r) and to not in (s, o)
    for q, i in (c.category == code).nonzero().tolist():
        assert int(c.contradicts_train[i]) == int(c.fact_test[q])


def test_filler_sentences_are_other():
    base = make_fact_corpus(**SMALL)
    c = make_fact_corpus(**SMALL, filler=7)
    filler = c.template_train == -1
    assert c.n_train == base.n_train + 7 and int(filler.sum()) == 7
    assert bool((c.category[:, filler] == CATEGORIES.index("other")).all())
    assert bool((c.fact_train[filler] == -1).all()) and bool((c.triple_train[filler] == -1).all())
    fact_words = set(base.vocab)
    filler_words = {c.vocab[t] for seq in sequence_tokens(c.train.subset(filler.nonzero().flatten())) for t in seq.tolist()}
    assert filler_words and not filler_words & fact_words
    assert all(len(seq) >= 3 for seq in sequence_tokens(c.train.subset(filler.nonzero().flatten())))


def test_balanced_relations_and_feasible_edge_cases():
    c = make_fact_corpus(n_entities=5, n_relations=2, n_facts=10, n_templates=2, n_test=10)  # each relation a derangement
    assert sorted(torch.bincount(c.facts[:, 1]).tolist()) == [5, 5]
    assert c.entailment.sum(1).tolist() == [1] * 10
    single = make_fact_corpus(n_entities=2, n_relations=1, n_facts=1, n_templates=2, n_test=1)
    assert single.facts[0, 0] != single.facts[0, 2]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_test=61, n_facts=60), "n_test"),
        (dict(n_templates=1), "n_templates"),
        (dict(conflicts=1.0), "conflicts"),
        (dict(conflicts=-0.1), "conflicts"),
        (dict(n_entities=20, n_relations=2, n_facts=41, n_test=5), "n_entities"),
        (dict(n_entities=1), "n_entities"),
        (dict(n_entities=2, n_relations=4, n_facts=4, n_test=2, conflicts=0.5), "n_entities"),
        (dict(n_test=0), "n_test"),
        (dict(n_facts=0), "n_facts"),
        (dict(n_relations=0), "n_relations"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(reversed_templates=-1), "reversed_templates"),
        (dict(aliases=0), "aliases"),
        (dict(repeat=0), "repeat"),
        (dict(repeat_fraction=0.0), "repeat_fraction"),
        (dict(repeat_fraction=1.5), "repeat_fraction"),
        (dict(filler=-1), "filler"),
        (dict(filler=True), "filler"),
    ],
)
def test_invalid_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of make_fact_corpus"):
        make_fact_corpus(**kwargs)


def test_templates_and_names_are_readable(default_corpus):
    c = default_corpus
    assert len(c.templates) == 8 and all(len(t) == 3 for t in c.templates)
    assert all(t.index("{s}") < t.index("{o}") and t.endswith("{o}") for forms in c.templates for t in forms)
    assert len(set(itertools.chain.from_iterable(c.templates))) == 24
    assert len(set(c.relation_names)) == 8
    q = c.decode(sequence_tokens(c.test)[0])
    s, r, o = c.triple_test[0].tolist()
    template = c.templates[r][int(c.template_test[0])]
    assert q == template.format(s=c.vocab[int(c.entity_tokens[s, 0])], o=c.vocab[int(c.entity_tokens[o, 0])])
