"""``cluster_verify``: FASTTRACK-style fact tracing that returns a *set* — cluster the corpus, then verify candidates with a judge.

FASTTRACK (Chen, Kang, Yu, Jia; Findings of EMNLP 2024, arXiv 2404.15157) traces a fact in two stages: offline,
cluster the training corpus; online, retrieve the clusters nearest the query and ask an LLM whether each of
their samples *supports* the fact. Its code is not public and no LLM runs here, so this is a reconstruction
of the protocol with the choices as parameters (docs: ``docs/attributors/cluster-verify.rst``):

* clusters: scikit-learn ``KMeans`` (seeded) on TF-IDF or BM25 vectors of the training sentences' token ids
  (the paper clusters sentence embeddings hierarchically, §3.1);
* candidates: the ``n_candidate_clusters`` clusters whose centroids score highest against the query (the
  query's prompt followed by its answer: the fact to validate, §3.2);
* verification: a pluggable judge (:mod:`tdaeval.attributors.judges`; the paper's LLM prompt, §3.2, is a
  user callable here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from tdaeval.attributors.base import Attributor, register
from tdaeval.attributors.judges import JUDGES, corpus_problem
from tdaeval.attributors.text import _bm25_weights, token_data_problem
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.facts import sequence_tokens
from tdaeval.params import Check, Instance, Interval, Options
from tdaeval.scores import Attribution
from tdaeval.task import Task

__all__ = ["ClusterVerify", "NON_CANDIDATE"]

#: The score of a training item outside the query's candidate clusters: below every judged probability.
NON_CANDIDATE = -1.0


def _sparse(sequences: list[Tensor], vocab_size: int) -> Any:
    """scipy CSR term counts ``[len(sequences), vocab_size]`` (tokens ``>= vocab_size`` dropped)."""
    from scipy.sparse import csr_matrix

    rows, cols = [], []
    for i, s in enumerate(sequences):
        words = s.long().cpu()
        words = words[words < vocab_size]
        rows.append(torch.full((len(words),), i, dtype=torch.long))
        cols.append(words)
    row = torch.cat(rows).numpy() if rows else np.zeros(0, dtype=np.int64)
    col = torch.cat(cols).numpy() if cols else np.zeros(0, dtype=np.int64)
    counts = csr_matrix((np.ones(len(row)), (row, col)), shape=(len(sequences), vocab_size))
    counts.sum_duplicates()
    return counts


def _probability(value: Any) -> float | None:
    """``value`` as a float when it is a real number in [0, 1], else None (NaN, out of range, not a number)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype.is_complex:
            return None
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None  # NaN fails both comparisons


@register
class ClusterVerify(Attributor):
    """Cluster the training sentences, take the query's nearest clusters, and let a judge verify each candidate.

    **Fit.** Each training sentence (its whole token sequence,
    :func:`tdaeval.facts.sequence_tokens`) becomes a vector over the token ids:
    ``features="tfidf"`` (scikit-learn ``TfidfTransformer``, smooth idf, L2
    rows) or ``"bm25"`` (the BM25 term weights of ``bm25``, k1 = 1.5,
    b = 0.75, L2 rows). ``KMeans(n_clusters, n_init=3, random_state=seed)``
    clusters them.

    **Attribute.** Per query (prompt followed by answer, as FASTTRACK validates
    a fact): its vector (TF-IDF with the fitted idf, or its raw term counts for
    BM25, so the similarity is the centroid's mean BM25 relevance) is scored
    against each centroid by a dot product; the ``n_candidate_clusters``
    highest (ties by cluster index) are the query's candidate clusters, and the
    judge is called on every training sentence in them.

    **Scores** ``[n_test, n_train]`` encode a ranking and a set:

    * a judged candidate gets the judge's probability, in ``[0, 1]``;
    * every other item gets :data:`NON_CANDIDATE` = ``-1``, below every judged one
      (tied: the method has no opinion about items it did not retrieve);
    * the set (:meth:`selection`) is the judged candidates with probability
      ``>= accept``; :meth:`candidates` the judged ones (``scores >= 0``).

    Both are functions of the scores alone, so cached scores give the same
    set; the set metrics (``set_precision``, ``set_recall``, ``set_f1``) read
    them from the attributor they are given.

    **Cost** (``cost_``, recorded next to the timings in a suite run, summed
    over ``attribute`` calls since ``fit``): ``judge_calls`` (pairs judged),
    ``judge_seconds``, ``candidates_mean`` (judged items per query in the last
    call) and ``candidate_share`` (their share of the training set). The share of
    a query's proponents inside its candidates (the clustering's recall, the
    most a perfect judge can find) is a metric-side number:
    ``candidate_recall`` in the set metrics' provenance.

    Parameters
    ----------
    n_clusters : int
        k-means clusters (>= 1, at most the number of training sentences).
    n_candidate_clusters : int
        Clusters judged per query (1 … ``n_clusters``); ``n_clusters`` judges every sentence.
    features : {"tfidf", "bm25"}
        Sentence vectors of the clustering.
    judge : str or callable
        A built-in judge by name (``"oracle"``, ``"noisy_oracle"``, ``"lexical"``,
        ``"learned"``; :mod:`tdaeval.attributors.judges`) or any
        ``judge(query_tokens, candidate_tokens) -> float`` in ``[0, 1]``
        (1-D token ids, padding stripped), optionally with ``bind(task, train)``
        and ``batch(query_tokens, candidates) -> sequence of float``. A value that
        is not a probability (NaN, < 0, > 1, not a number) is an ``AttributorError`` naming ``judge``.
    judge_params : dict, optional
        Parameters of a built-in judge (``{"epsilon": 0.1, "seed": 0}`` for ``noisy_oracle``).
    accept : float
        The set's probability threshold, in (0, 1].
    seed : int
        ``random_state`` of k-means.

    Raises
    ------
    AttributorError
        At ``fit``, in one line: data that is not token sequences (e.g. digits),
        a judge that needs the task's fact corpus on a task without one, more
        clusters than training sentences.
    """

    name = "cluster_verify"
    _parameter_constraints = {
        "n_clusters": [Interval(int, 1, None)],
        "n_candidate_clusters": [Interval(int, 1, None)],
        "features": [Options(("tfidf", "bm25"))],
        "judge": [Options(tuple(JUDGES)), Check(callable, "a function judge(query_tokens, candidate_tokens) -> probability", invalid=[42])],
        "judge_params": [None, Instance(dict)],
        "accept": [Interval(float, 0, 1, closed="right")],
        "seed": [Interval(int, 0, None)],
    }
    contract_params: ClassVar[dict[str, Any]] = {"n_clusters": 4}

    def __init__(self, n_clusters: int = 8, n_candidate_clusters: int = 2, features: str = "tfidf",
                 judge: str | Callable[[Tensor, Tensor], float] = "oracle", judge_params: dict[str, Any] | None = None,
                 accept: float = 0.5, seed: int = 0) -> None:
        if n_candidate_clusters > n_clusters:
            raise ConfigError(f"The 'n_candidate_clusters' parameter of ClusterVerify must be at most n_clusters={n_clusters}. "
                              f"Got {n_candidate_clusters}.")
        if judge_params and not isinstance(judge, str):
            raise ConfigError("The 'judge_params' parameter of ClusterVerify configures a built-in judge (judge given by name); "
                              f"got judge_params with a callable judge {judge!r}.")
        self.n_clusters, self.n_candidate_clusters, self.features = n_clusters, n_candidate_clusters, features
        self.judge, self.judge_params, self.accept, self.seed = judge, judge_params, accept, seed
        self.judge_ = self._make_judge()  # a bad judge_params is an error now, not at fit

    def _make_judge(self) -> Callable[..., Any]:
        if not isinstance(self.judge, str):
            return self.judge
        try:
            return JUDGES[self.judge](**(self.judge_params or {}))
        except TypeError as err:
            raise ConfigError(f"The 'judge_params' parameter of ClusterVerify does not fit the {self.judge!r} judge: {err}.") from None

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """One line saying why this attributor cannot explain ``task`` on ``train``; None when it can."""
        who = f"Attributor {self.display_name!r}"
        problem = token_data_problem(train)
        if problem is not None:
            return f"{who} needs token-sequence data; the training data has {problem}."
        if getattr(self.judge_, "needs_corpus", False):
            missing = corpus_problem(task, self.judge)
            if missing is not None:
                return f"{who}: {missing}."
        if self.n_clusters > len(train):
            return f"{who}: the 'n_clusters' parameter ({self.n_clusters}) exceeds the {len(train)} training sentences."
        return None

    def _fit(self) -> None:  # fit() has refused what why_unsupported names
        from sklearn.cluster import KMeans
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.preprocessing import normalize

        self.documents_ = sequence_tokens(self.train_)
        self.vocab_size_ = 1 + max((int(s.max()) for s in self.documents_ if len(s)), default=0)
        counts = _sparse(self.documents_, self.vocab_size_)
        if self.features == "tfidf":
            self.tfidf_ = TfidfTransformer().fit(counts)
            vectors = self.tfidf_.transform(counts)
        else:
            weights = _bm25_weights(self.documents_, self.vocab_size_, 1.5, 0.75, 0.25)
            from scipy.sparse import csr_matrix

            index = weights.indices().numpy()
            vectors = normalize(csr_matrix((weights.values().numpy(), (index[0], index[1])), shape=tuple(weights.shape)))
        kmeans = KMeans(n_clusters=self.n_clusters, n_init=3, random_state=self.seed).fit(vectors)
        self.labels_ = torch.as_tensor(kmeans.labels_, dtype=torch.long)
        self.centroids_ = np.asarray(kmeans.cluster_centers_, dtype=np.float64)  # [n_clusters, V]
        self.members_ = [(self.labels_ == c).nonzero().flatten() for c in range(self.n_clusters)]
        judge = self.judge_ = self._make_judge()  # fresh for each fit
        bind = getattr(judge, "bind", None)
        if callable(bind):
            try:
                bind(self.task_, self.train_)
            except ConfigError as err:
                raise AttributorError(f"Attributor {self.display_name!r}: the 'judge' could not be set up: {err}") from None
        self.cost_ = {"judge_calls": 0.0, "judge_seconds": 0.0, "n_clusters": float(self.n_clusters)}

    def _query_vectors(self, queries: list[Tensor]) -> np.ndarray:
        counts = _sparse(queries, self.vocab_size_)
        vectors = self.tfidf_.transform(counts) if self.features == "tfidf" else counts
        return np.asarray((vectors @ self.centroids_.T), dtype=np.float64).reshape(len(queries), self.n_clusters)

    def candidate_clusters(self, test: Data) -> Tensor:
        """``[n_test, n_candidate_clusters]`` int64: each query's candidate clusters, nearest first (ties by cluster index)."""
        self._check_test(test, "candidate_clusters")
        similarity = torch.as_tensor(self._query_vectors(sequence_tokens(test)))
        order = torch.sort(-similarity, dim=1, stable=True).indices
        return order[:, : self.n_candidate_clusters]

    def _judge(self, query: Tensor, candidates: list[Tensor]) -> list[Any]:
        batch = getattr(self.judge_, "batch", None)
        try:
            values = list(batch(query, candidates)) if callable(batch) else [self.judge_(query, c) for c in candidates]
        except (AttributorError, ConfigError):
            raise
        except Exception as err:  # noqa: BLE001 - a user judge may fail in any way
            raise AttributorError(f"Attributor {self.display_name!r}: the 'judge' failed: {type(err).__name__}: {err}") from None
        if len(values) != len(candidates):
            raise AttributorError(f"Attributor {self.display_name!r}: the 'judge' batch returned {len(values)} values for "
                                  f"{len(candidates)} candidates.")
        return values

    def _attribute(self, test: Data) -> Tensor:
        problem = token_data_problem(test)
        if problem is not None:
            raise AttributorError(f"Attributor {self.display_name!r} needs token-sequence data; the test data has {problem}.")
        queries = sequence_tokens(test)
        clusters = self.candidate_clusters(test)
        scores = torch.full((len(test), len(self.train_)), NON_CANDIDATE, dtype=torch.float64)
        calls, start = 0, time.perf_counter()
        for q, query in enumerate(queries):
            index = torch.cat([self.members_[c] for c in clusters[q].tolist()]).sort().values
            values = self._judge(query, [self.documents_[j] for j in index.tolist()])
            calls += len(values)
            for j, value in zip(index.tolist(), values):
                p = _probability(value)
                if p is None:
                    raise AttributorError(f"Attributor {self.display_name!r}: the 'judge' returned {value!r} for query {q} and training "
                                          f"sentence {j}; expected a probability in [0, 1].")
                scores[q, j] = p
        judged = (scores >= 0).sum(dim=1).double()
        self.cost_["judge_calls"] = self.cost_.get("judge_calls", 0.0) + calls
        self.cost_["judge_seconds"] = self.cost_.get("judge_seconds", 0.0) + time.perf_counter() - start
        self.cost_["candidates_mean"] = float(judged.mean()) if len(judged) else 0.0
        self.cost_["candidate_share"] = self.cost_["candidates_mean"] / max(1, len(self.train_))
        return scores.float()

    def selection(self, scores: Tensor) -> Tensor:
        """The returned set: bool ``[n_test, n_train]``, judged candidates with probability ``>= accept`` (a function of the scores alone)."""
        scores = torch.as_tensor(scores.mean if isinstance(scores, Attribution) else scores)
        return scores.detach().cpu().double() >= float(self.accept)

    def candidates(self, scores: Tensor) -> Tensor:
        """The judged items: bool ``[n_test, n_train]``, ``scores >= 0`` (the candidate clusters' members)."""
        scores = torch.as_tensor(scores.mean if isinstance(scores, Attribution) else scores)
        return scores.detach().cpu().double() >= 0.0

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (a callable judge by its repr, ``judge_params`` as a dict of plain values)."""
        params = super().get_params()
        if isinstance(self.judge_params, dict):
            params["judge_params"] = repr(dict(self.judge_params))
        return params

