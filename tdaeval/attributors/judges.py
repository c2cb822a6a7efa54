"""Judges of ``cluster_verify``: does a training sentence support a query's fact? (FASTTRACK's verifier, offline stand-ins.)

A judge is any callable ``judge(query_tokens, candidate_tokens) -> float`` returning the probability, in
``[0, 1]``, that the candidate supports the query. Both arguments are 1-D int64 token-id tensors of whole
sentences with the padding stripped (:func:`tdaeval.facts.sequence_tokens`): the query is its prompt followed
by its answer, the candidate a training sentence. Two optional hooks:

* ``bind(task, train) -> None``: called by ``cluster_verify.fit`` before any judging (a judge that reads the
  task's corpus gets it here);
* ``batch(query_tokens, candidates: list[Tensor]) -> sequence of float``: one query against many candidates
  at once, used instead of the per-pair call when present.

Built-in judges (:data:`JUDGES`, selected by name in ``cluster_verify(judge=...)``, their parameters in
``judge_params``):

* :class:`OracleJudge` (``"oracle"``): 1 when the candidate states the query's (subject, relation, object),
  read from the fact corpus, else 0. The upper bound: with it, what ``cluster_verify`` misses is what the
  clustering left out.
* :class:`NoisyOracleJudge` (``"noisy_oracle"``): the oracle's answer flipped with probability ``epsilon``,
  deterministically per (query, candidate) content and ``seed``.
* :class:`LexicalJudge` (``"lexical"``): the share of the query's entity tokens present in the candidate.
* :class:`LearnedJudge` (``"learned"``): a logistic regression on vocabulary-independent pair features,
  trained on a *disjoint* generated fact corpus (another seed).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.facts import FactCorpus, make_fact_corpus, sequence_tokens
from tdaeval.params import Interval, ValidatedInit

__all__ = ["Judge", "OracleJudge", "NoisyOracleJudge", "LexicalJudge", "LearnedJudge", "JUDGES", "pair_features", "PAIR_FEATURES"]


def _tuple(tokens: Tensor | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(t) for t in (tokens.tolist() if isinstance(tokens, Tensor) else tokens))


def _corpus(task: Any, judge: str) -> FactCorpus:
    corpus = getattr(task, "corpus", None)
    if not isinstance(corpus, FactCorpus):
        raise AttributorError(corpus_problem(task, judge))
    return corpus


def corpus_problem(task: Any, judge: str) -> str | None:
    """One line saying why judge ``judge`` cannot read ``task``'s fact corpus, or None when it can."""
    if isinstance(getattr(task, "corpus", None), FactCorpus):
        return None
    return (f"the {judge!r} judge needs a task with a generated fact corpus (a 'corpus' FactCorpus, as LanguageModelTask has); "
            f"{type(task).__name__} has none")


class Judge(ValidatedInit):
    """Base of the built-in judges: ``judge(query_tokens, candidate_tokens) -> float``, with ``bind`` and ``batch``.

    Subclasses implement :meth:`__call__`; :meth:`batch` loops over it.
    """

    name = "judge"
    #: Whether :meth:`bind` needs the task's fact corpus (``cluster_verify`` refuses tasks without one).
    needs_corpus = False
    _parameter_constraints: dict[str, Any] = {}

    def bind(self, task: Any, train: Data) -> None:
        """Read what the judge needs from the task and the training data (called at ``cluster_verify.fit``)."""

    def __call__(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        raise NotImplementedError

    def batch(self, query_tokens: Tensor, candidates: list[Tensor]) -> list[float]:
        """The judge on one query against each candidate."""
        return [self(query_tokens, c) for c in candidates]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _FactParser:
    """Reads (subject, relation, object) entity/relation ids from a corpus sentence's tokens.

    Entity tokens (every alias) map to their entity. A sentence's *skeleton* is
    its tokens with each entity token replaced by -1; every skeleton of the
    corpus's sentences (train and queries) maps to its relation and direction
    (forward templates put the subject first, reversed ones the object). A
    sentence whose skeleton the corpus never uses, or that does not hold
    exactly two entity tokens, has no fact (None): filler, or a foreign sentence.
    """

    def __init__(self, corpus: FactCorpus) -> None:
        forms = corpus.entity_tokens
        self.entity = {int(t): e for e in range(forms.shape[0]) for t in forms[e].tolist()}
        n_templates = int(corpus.params["n_templates"])
        self.skeleton: dict[tuple[int, ...], tuple[int, bool]] = {}
        sentences = [(sequence_tokens(corpus.train), corpus.triple_train, corpus.template_train),
                     (sequence_tokens(corpus.test), corpus.triple_test, corpus.template_test)]
        for tokens, triples, templates in sentences:
            for words, (s, r, _o), t in zip(tokens, triples.tolist(), templates.tolist()):
                if s < 0 or t < 0:
                    continue
                self.skeleton.setdefault(self._skeleton(_tuple(words)), (int(r), t >= n_templates))
        self.cache: dict[tuple[int, ...], tuple[int, int, int] | None] = {}

    def _skeleton(self, words: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(-1 if w in self.entity else w for w in words)

    def fact(self, tokens: Tensor | Sequence[int]) -> tuple[int, int, int] | None:
        words = _tuple(tokens)
        if words in self.cache:
            return self.cache[words]
        entities = [self.entity[w] for w in words if w in self.entity]
        found = self.skeleton.get(self._skeleton(words)) if len(entities) == 2 else None
        fact = None if found is None else ((entities[0], found[0], entities[1]) if not found[1] else (entities[1], found[0], entities[0]))
        self.cache[words] = fact
        return fact


class OracleJudge(Judge):
    """1 when the candidate states the query's fact (same subject, relation and object entities), else 0.

    Reads the facts from the task's corpus (:class:`~tdaeval.facts.FactCorpus`, bound at
    ``fit``): entity tokens of any alias map to their entity, a sentence's
    template (its non-entity words) to its relation and direction. A
    contradiction ``(s, r, o')`` is rejected; a reversed-template paraphrase
    and an aliased one are accepted. On the task's own splits it equals the
    task's ``entailment`` matrix. A query whose fact cannot be read is an
    ``AttributorError``.
    """

    name = "oracle"
    needs_corpus = True

    def bind(self, task: Any, train: Data) -> None:
        self.parser_ = _FactParser(_corpus(task, self.name))

    def _query_fact(self, query_tokens: Tensor) -> tuple[int, int, int]:
        if not hasattr(self, "parser_"):
            raise AttributorError(f"The {self.name!r} judge must be bound to a task (bind(task, train)) before judging.")
        fact = self.parser_.fact(query_tokens)
        if fact is None:
            raise AttributorError(f"The {self.name!r} judge cannot read a fact from the query {_tuple(query_tokens)}: "
                                  "its template is none of the corpus's (the oracle knows the task's corpus only).")
        return fact

    def __call__(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        return float(self.parser_.fact(candidate_tokens) == self._query_fact(query_tokens))

    def batch(self, query_tokens: Tensor, candidates: list[Tensor]) -> list[float]:
        fact = self._query_fact(query_tokens)
        return [float(self.parser_.fact(c) == fact) for c in candidates]


class NoisyOracleJudge(OracleJudge):
    """The oracle's 0/1 answer flipped with probability ``epsilon``: a verifier with a known error rate.

    The flip of a pair is decided by ``u < epsilon`` with ``u`` a uniform number
    hashed (BLAKE2b) from ``seed`` and the two token sequences, so a pair is
    judged the same way on every call, in any order; ``epsilon = 0`` is the oracle.

    Parameters
    ----------
    epsilon : float
        Flip probability, in [0, 1].
    seed : int
        Seed of the flips (>= 0).
    """

    name = "noisy_oracle"
    _parameter_constraints = {"epsilon": [Interval(float, 0, 1)], "seed": [Interval(int, 0, None)]}

    def __init__(self, epsilon: float = 0.1, seed: int = 0) -> None:
        self.epsilon, self.seed = epsilon, seed

    def _uniform(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        key = repr((self.seed, _tuple(query_tokens), _tuple(candidate_tokens))).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64

    def _flip(self, truth: float, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        return 1.0 - truth if self._uniform(query_tokens, candidate_tokens) < self.epsilon else truth

    def __call__(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        return self._flip(super().__call__(query_tokens, candidate_tokens), query_tokens, candidate_tokens)

    def batch(self, query_tokens: Tensor, candidates: list[Tensor]) -> list[float]:
        return [self._flip(v, query_tokens, c) for v, c in zip(super().batch(query_tokens, candidates), candidates)]

    def __repr__(self) -> str:
        return f"NoisyOracleJudge(epsilon={self.epsilon!r}, seed={self.seed!r})"


class LexicalJudge(Judge):
    """The share of the query's entity tokens that appear in the candidate (0, 0.5 or 1 for a subject and an object).

    Entity tokens are the corpus's entity surface forms (bound at ``fit``).
    Exactly: ``p = |E(q) ∩ tokens(c)| / |E(q)|`` with ``E(q)`` the set of entity
    tokens of the query (its subject and its answer), 0 when the query has none.
    So "subject and object both present" is ``p = 1``, one of them ``p = 0.5``.

    What it gets wrong, by design (FASTTRACK's "relevant is not supporting"):

    * at ``accept <= 0.5`` it accepts every sentence sharing the subject *or*
      the object: a contradiction ``(s, r, o')`` (``p = 0.5``) and any other
      fact about ``s`` or with object ``o``;
    * at ``accept = 1`` it accepts only sentences with both tokens, which
      rejects contradictions, but a proponent that names the entities by other
      aliases (``aliases >= 2``: the lexical control) gets 0 either way.
    """

    name = "lexical"
    needs_corpus = True

    def bind(self, task: Any, train: Data) -> None:
        corpus = _corpus(task, self.name)
        self.entities_ = frozenset(int(t) for t in corpus.entity_tokens.flatten().tolist())

    def __call__(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        return self.batch(query_tokens, [candidate_tokens])[0]

    def batch(self, query_tokens: Tensor, candidates: list[Tensor]) -> list[float]:
        if not hasattr(self, "entities_"):
            raise AttributorError(f"The {self.name!r} judge must be bound to a task (bind(task, train)) before judging.")
        wanted = {w for w in _tuple(query_tokens) if w in self.entities_}
        if not wanted:
            return [0.0] * len(candidates)
        return [len(wanted & set(_tuple(c))) / len(wanted) for c in candidates]


#: The pair features of :class:`LearnedJudge`, in order (all vocabulary-independent).
PAIR_FEATURES = (
    "answer_in",  # the query's last token (its answer) appears in the candidate
    "rarest_in",  # the query's rarest other token (lowest document frequency; ~ the subject) appears in the candidate
    "idf_overlap",  # Σ idf of the query's distinct tokens found in the candidate / Σ idf of all of them
    "jaccard",  # |set(q) ∩ set(c)| / |set(q) ∪ set(c)|
    "rare_shared",  # number of shared rare tokens (idf >= the median idf of the collection's distinct tokens)
    "rare_extra",  # number of the candidate's rare tokens the query lacks (a different object, another fact)
)


class _Collection:
    """Document frequencies of a collection of token sequences (the idf the pair features use)."""

    def __init__(self, documents: list[Tensor]) -> None:
        df: dict[int, int] = {}
        for d in documents:
            for w in set(_tuple(d)):
                df[w] = df.get(w, 0) + 1
        self.n = max(1, len(documents))
        self.df = df
        idfs = sorted(self.idf(w) for w in df)
        self.rare = idfs[len(idfs) // 2] if idfs else math.inf

    def idf(self, word: int) -> float:
        return math.log((self.n + 1) / (self.df.get(word, 0) + 1)) + 1.0  # smooth idf (scikit-learn's); unseen words are rarest


def pair_features(query_tokens: Tensor, candidate_tokens: Tensor, collection: _Collection) -> list[float]:
    """The :data:`PAIR_FEATURES` of one (query, candidate) pair, with the idf of ``collection``."""
    q, c = _tuple(query_tokens), _tuple(candidate_tokens)
    qs, cs = set(q), set(c)
    answer = q[-1] if q else None
    others = [w for w in qs if w != answer]
    rarest = max(others, key=lambda w: (collection.idf(w), -w)) if others else None
    idf = {w: collection.idf(w) for w in qs | cs}
    total = sum(idf[w] for w in qs)
    shared = qs & cs
    return [
        float(answer in cs),
        float(rarest in cs) if rarest is not None else 0.0,
        sum(idf[w] for w in shared) / total if total > 0 else 0.0,
        len(shared) / len(qs | cs) if qs | cs else 0.0,
        float(sum(idf[w] >= collection.rare for w in shared)),
        float(sum(idf[w] >= collection.rare for w in cs - qs)),
    ]


class LearnedJudge(Judge):
    """A logistic regression on vocabulary-independent pair features, trained on a disjoint generated fact corpus.

    Training data: ``make_fact_corpus`` with the task corpus's knobs (defaults
    when the task has no corpus) but ``seed = training_seed`` and
    ``conflicts = max(conflicts, training_conflicts)`` (so contradictions are
    seen): another vocabulary of invented names, other facts, other templates.
    For each of its queries the pairs are all its proponents (label 1), all its
    contradiction, same-subject, same-object and same-relation sentences and
    ``n_random_negatives`` other sentences drawn with ``training_seed`` (label 0).
    Features (:data:`PAIR_FEATURES`, idf from the collection the pair comes
    from: the disjoint corpus's training sentences when training, the fitted
    task's when judging): whether the query's answer and its rarest other token
    (~ the subject) appear in the candidate, the idf-weighted share of the
    query's tokens found, the Jaccard overlap, and the counts of shared rare
    tokens and of the candidate's rare tokens the query lacks. No token id is a
    feature, so the model transfers across vocabularies. The probability is
    the classifier's ``predict_proba`` (standardised features,
    ``LogisticRegression(C=1.0)``, lbfgs; deterministic).

    It is an honest offline verifier, not an LLM: it cannot relate aliases
    (no shared token) and knows nothing beyond token overlap.

    Parameters
    ----------
    training_seed : int or None
        Seed of the disjoint corpus; None: the task corpus's seed + 1. Equal to
        the task corpus's seed is an error (the corpora would not be disjoint).
    training_conflicts : float
        The least share of contradicted facts in the disjoint corpus, in [0, 1).
    n_random_negatives : int
        Random non-proponents per training query (>= 0).
    """

    name = "learned"
    _parameter_constraints = {
        "training_seed": [None, Interval(int, 0, None)],
        "training_conflicts": [Interval(float, 0, 1, closed="left")],
        "n_random_negatives": [Interval(int, 0, None)],
    }

    def __init__(self, training_seed: int | None = None, training_conflicts: float = 0.25, n_random_negatives: int = 10) -> None:
        self.training_seed, self.training_conflicts, self.n_random_negatives = training_seed, training_conflicts, n_random_negatives

    def bind(self, task: Any, train: Data) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        corpus = getattr(task, "corpus", None)
        params = dict(corpus.params) if isinstance(corpus, FactCorpus) else {}
        own_seed = int(params.get("seed", 0))
        seed = own_seed + 1 if self.training_seed is None else int(self.training_seed)
        if isinstance(corpus, FactCorpus) and seed == own_seed:
            raise ConfigError(f"The 'training_seed' parameter of the learned judge must differ from the task corpus's seed ({own_seed}): "
                              "the classifier is trained on a disjoint corpus.")
        params.update(seed=seed, conflicts=max(float(params.get("conflicts", 0.0)), float(self.training_conflicts)))
        other = make_fact_corpus(**params)
        features, labels = self._pairs(other, seed)
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(np.asarray(features), np.asarray(labels))
        self.training_corpus_params_ = params
        self.n_training_pairs_ = len(labels)
        self.collection_ = _Collection(sequence_tokens(train))

    def _pairs(self, corpus: FactCorpus, seed: int) -> tuple[list[list[float]], list[int]]:
        from tdaeval.facts import CATEGORIES

        sentences, queries = sequence_tokens(corpus.train), sequence_tokens(corpus.test)
        collection = _Collection(sentences)
        generator = torch.Generator().manual_seed(seed)
        hard = torch.zeros_like(corpus.entailment)
        for name in ("contradiction", "same_subject", "same_object", "same_relation"):
            hard |= corpus.category == CATEGORIES.index(name)
        features, labels = [], []
        for q, query in enumerate(queries):
            others = (~corpus.entailment[q] & ~hard[q]).nonzero().flatten()
            drawn = others[torch.randperm(len(others), generator=generator)[: self.n_random_negatives]]
            chosen = torch.cat([corpus.entailment[q].nonzero().flatten(), hard[q].nonzero().flatten(), drawn])
            for j in chosen.tolist():
                features.append(pair_features(query, sentences[j], collection))
                labels.append(int(corpus.entailment[q, j]))
        return features, labels

    def __call__(self, query_tokens: Tensor, candidate_tokens: Tensor) -> float:
        return self.batch(query_tokens, [candidate_tokens])[0]

    def batch(self, query_tokens: Tensor, candidates: list[Tensor]) -> list[float]:
        if not hasattr(self, "model_"):
            raise AttributorError(f"The {self.name!r} judge must be bound to a task (bind(task, train)) before judging.")
        if not candidates:
            return []
        x = np.asarray([pair_features(query_tokens, c, self.collection_) for c in candidates])
        return self.model_.predict_proba(x)[:, 1].tolist()

    def __repr__(self) -> str:
        return (f"LearnedJudge(training_seed={self.training_seed!r}, training_conflicts={self.training_conflicts!r}, "
                f"n_random_negatives={self.n_random_negatives!r})")


#: The built-in judges by name.
JUDGES: dict[str, type[Judge]] = {"oracle": OracleJudge, "noisy_oracle": NoisyOracleJudge, "lexical": LexicalJudge, "learned": LearnedJudge}
