"""Model-free attributors of token-sequence tasks: BM25 retrieval and the entailment indicator.

Both read only the data (and, for the indicator, the task's known proponents):
they never touch the model, so ``fit(task, None, train)`` works. Neither runs
on tasks whose examples are not token sequences (``bm25``) or that know no
proponents (``entailment``); :meth:`why_unsupported` says why in one line and
``fit`` raises an :class:`~tdaeval.errors.AttributorError` with that line.

Token data follows :mod:`tdaeval.facts`: int64 ``inputs``/``targets``
``[n, T]``, ``PAD_ID = 0`` pads the inputs and ``IGNORE_INDEX = -100`` the
targets; a training example's whole sequence is its non-PAD inputs followed by
its last target, a query's is its prompt followed by its answer.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from tdaeval.attributors.base import Attributor, register
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
from tdaeval.facts import IGNORE_INDEX, prompt_tokens, sequence_tokens
from tdaeval.params import Interval, Options
from tdaeval.task import Task

__all__ = ["BM25", "EntailmentIndicator", "bm25_scores", "token_data_problem"]


def token_data_problem(data: Data) -> str | None:
    """Why ``data`` is not token-sequence data in the :mod:`tdaeval.facts` format, or None when it is.

    Token data has integer ``inputs`` and ``targets`` of one shape ``[n, T]``,
    inputs ``>= 0`` (:data:`~tdaeval.facts.PAD_ID` included), targets ``>= 0`` or
    :data:`~tdaeval.facts.IGNORE_INDEX`, and at least one target per row.
    """
    x, y = data.inputs, data.targets
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex or x.ndim != 2:
        return f"inputs of dtype {x.dtype} and shape {tuple(x.shape)}; expected integer token ids [n, T]"
    if y.dtype == torch.bool or y.dtype.is_floating_point or y.dtype.is_complex or tuple(y.shape) != tuple(x.shape):
        return f"targets of dtype {y.dtype} and shape {tuple(y.shape)}; expected integer next-token targets of the inputs' shape {tuple(x.shape)}"
    if x.numel() and int(x.min()) < 0:
        return f"a negative input token id ({int(x.min())})"
    if y.numel() and bool(((y < 0) & (y != IGNORE_INDEX)).any()):
        return f"a negative target other than the ignore index {IGNORE_INDEX}"
    no_target = (y == IGNORE_INDEX).all(1).nonzero().flatten()
    if len(no_target):
        return f"{len(no_target)} row(s) without any target (first: row {int(no_target[0])})"
    return None


def _counts(sequences: list[Tensor], vocab_size: int) -> Tensor:
    """Sparse COO term counts ``[len(sequences), vocab_size]`` float64 (duplicates summed)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(sequences)), lengths)
    cols = torch.cat([s.long().cpu() for s in sequences]) if sequences else torch.zeros(0, dtype=torch.long)
    values = torch.ones(len(cols), dtype=torch.float64)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (len(sequences), vocab_size), check_invariants=True).coalesce()


def _bm25_weights(documents: list[Tensor], vocab_size: int, k1: float, b: float, epsilon: float) -> Tensor:
    """Sparse ``[n_docs, vocab_size]`` float64: ``idf(v)·c(k1+1)/(c + k1(1 − b + b·len/avgdl))`` for each term count ``c > 0``."""
    counts = _counts(documents, vocab_size)
    (doc, term), count = counts.indices(), counts.values()
    n_docs = len(documents)
    lengths = torch.tensor([len(d) for d in documents], dtype=torch.float64)
    if n_docs == 0 or float(lengths.sum()) == 0:
        raise AttributorError(f"BM25 needs at least one non-empty document; got {n_docs} document(s), all empty.")
    avgdl = float(lengths.mean())
    df = torch.bincount(term, minlength=vocab_size).to(torch.float64)  # coalesced: one entry per (document, term)
    present = df > 0
    idf = torch.zeros(vocab_size, dtype=torch.float64)
    idf[present] = torch.log(n_docs - df[present] + 0.5) - torch.log(df[present] + 0.5)
    floor = epsilon * float(idf[present].mean())  # rank_bm25: the average over the corpus's terms
    idf[present & (idf < 0)] = floor
    norm = k1 * (1 - b + b * lengths / avgdl)  # [n_docs]
    weights = idf[term] * count * (k1 + 1) / (count + norm[doc])
    return torch.sparse_coo_tensor(counts.indices(), weights, counts.shape, check_invariants=True).coalesce()


def bm25_scores(
    queries: list[Tensor],
    documents: list[Tensor],
    k1: float = 1.5,
    b: float = 0.75,
    epsilon: float = 0.25,
    chunk_elements: int = 1 << 24,
) -> Tensor:
    """Okapi BM25 of every query against every document, as ``rank_bm25.BM25Okapi(documents).get_scores(query)``.

    ``score(q, d) = Σ_{t ∈ q} idf(t) · c(t, d)(k1 + 1) / (c(t, d) + k1(1 − b + b|d|/avgdl))``, the sum
    running over the query's tokens with repeats; ``idf(t) = log(N − n_t + 0.5) − log(n_t + 0.5)``
    over the ``N`` documents, ``n_t`` of them containing ``t``; a negative idf is replaced by
    ``epsilon`` times the mean idf of the documents' terms (rank_bm25's floor); a term no document
    contains scores 0.

    Parameters
    ----------
    queries : list of Tensor
        ``n_queries`` 1-D integer token-id sequences (ids ``>= 0``).
    documents : list of Tensor
        ``n_docs`` 1-D integer token-id sequences, at least one non-empty.
    k1, b, epsilon : float
        BM25's term-frequency saturation, length normalisation and idf floor.
    chunk_elements : int
        Queries are scored in chunks of at most this many dense ``query × vocabulary`` counts.

    Returns
    -------
    Tensor
        ``[n_queries, n_docs]`` float64.
    """
    vocab_size = 1 + max((int(s.max()) for s in [*queries, *documents] if len(s)), default=0)
    weights = _bm25_weights(documents, vocab_size, float(k1), float(b), float(epsilon))  # [n_docs, V] sparse
    query_counts = _counts(queries, vocab_size)
    step = max(1, chunk_elements // vocab_size)
    out = []
    for start in range(0, len(queries), step):
        index = torch.arange(start, min(start + step, len(queries)))
        dense = query_counts.index_select(0, index).to_dense()  # [chunk, V]
        out.append(torch.sparse.mm(weights, dense.T).T)  # [chunk, n_docs]
    return torch.cat(out) if out else torch.zeros(0, len(documents), dtype=torch.float64)


@register
class BM25(Attributor):
    """Okapi BM25 retrieval on token ids (model-free): training sequences are the documents, the test sequence the query.

    The score of training example ``i`` for test example ``q`` is BM25's relevance of ``i``'s whole
    sequence (its non-PAD inputs and last target: the training sentence) to ``q``'s query: its
    prompt followed by its answer (``query="full"``) or the prompt alone (``query="prompt"``). The
    idf, its floor for terms in more than half of the documents, and the sums are those of
    ``rank_bm25.BM25Okapi`` (:func:`bm25_scores`), computed with sparse count matrices. Higher =
    more lexical overlap = supports; BM25 is the fact-tracing retrieval baseline (FTRACE).

    Parameters
    ----------
    k1 : float
        Term-frequency saturation, ``>= 0`` (at 0 a query term counts once per document that has it; rank_bm25
        gives NaN (0/0) for the documents that lack it, this gives the limit, 0).
    b : float
        Document-length normalisation, in ``[0, 1]``.
    epsilon : float
        Floor of a negative idf, as a multiple of the mean idf, ``>= 0``.
    query : {"full", "prompt"}
        The test side: prompt and answer, or the prompt only.

    Raises
    ------
    AttributorError
        At ``fit``/``attribute``, on data that is not token sequences (``[n, T]`` integer ids).
    """

    name = "bm25"
    _parameter_constraints = {
        "k1": [Interval(float, 0, None)],
        "b": [Interval(float, 0, 1)],
        "epsilon": [Interval(float, 0, None)],
        "query": [Options(("full", "prompt"))],
    }

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, query: str = "full") -> None:
        self.k1, self.b, self.epsilon, self.query = k1, b, epsilon, query

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """One line saying why this attributor cannot explain ``task`` on ``train``; None when it can."""
        problem = token_data_problem(train)
        return None if problem is None else f"Attributor {self.display_name!r} needs token-sequence data; the training data has {problem}."

    def _fit(self) -> None:  # fit() has refused what why_unsupported names
        self.documents_ = sequence_tokens(self.train_)

    def _attribute(self, test: Data) -> Tensor:
        problem = token_data_problem(test)
        if problem is not None:
            raise AttributorError(f"Attributor {self.display_name!r} needs token-sequence data; the test data has {problem}.")
        queries = sequence_tokens(test) if self.query == "full" else prompt_tokens(test)
        return bm25_scores(queries, self.documents_, self.k1, self.b, self.epsilon)


@register
class EntailmentIndicator(Attributor):
    """The entailment indicator (model-free reference row): 1 where the training sentence states the query's fact, else 0.

    The scores are the task's ``entailment`` matrix ``[n_test, n_train]`` as floats, so the indicator
    is defined on the task's own splits only: ``fit`` on ``task.train_data`` and ``attribute`` on
    ``task.test_data`` (matched by content digest). It answers "how much of the counterfactual
    signal do the known proponents explain": its LDS is the share of the retraining gold standard a
    perfect fact retriever would reach; its retrieval metrics are 1 by construction.

    Parameters
    ----------
    contradiction : float
        Score of a training sentence that contradicts the query's fact (category ``"contradiction"``
        of ``task.categories``), in ``[-1, 1]``. 0 (default): the plain indicator; e.g. ``-1``
        counts contradictions as opponents (needs ``task.categories`` and ``task.category_names``).

    Raises
    ------
    AttributorError
        At ``fit`` when the task has no ``entailment`` matrix or the training data is not the
        task's; at ``attribute`` when the test data is not the task's test split.
    """

    name = "entailment"
    _parameter_constraints = {"contradiction": [Interval(float, -1, 1)]}
    #: The task attribute the indicator reads (duck-typed: a task "with known proponents").
    truth_attribute: ClassVar[str] = "entailment"

    def __init__(self, contradiction: float = 0.0) -> None:
        self.contradiction = contradiction

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """One line saying why this attributor cannot explain ``task`` on ``train``; None when it can."""
        who = f"Attributor {self.display_name!r}"
        entailment = getattr(task, self.truth_attribute, None)
        if entailment is None:
            return (f"{who} needs a task with known proponents (an 'entailment' [n_test, n_train] matrix, as "
                    f"LanguageModelTask has); {type(task).__name__} has none.")
        shape = (len(task.test_data), len(task.train_data))
        if not isinstance(entailment, Tensor) or tuple(entailment.shape) != shape:
            return (f"{who}: the task's 'entailment' must be a tensor [n_test={shape[0]}, n_train={shape[1]}]; "
                    f"got {type(entailment).__name__} of shape {tuple(getattr(entailment, 'shape', ()))}.")
        if self.contradiction != 0 and (getattr(task, "categories", None) is None or "contradiction" not in getattr(task, "category_names", ())):
            return (f"{who} with contradiction={self.contradiction!r} needs the task's 'categories' and a 'contradiction' entry "
                    "in its 'category_names'.")
        if not _same_data(train, task.train_data):
            return f"{who} scores the task's own training set only; the training data passed to fit() is not task.train_data."
        return None

    def _fit(self) -> None:  # fit() has refused what why_unsupported names
        scores = getattr(self.task_, self.truth_attribute).to("cpu", torch.float32)
        if self.contradiction != 0:
            code = list(self.task_.category_names).index("contradiction")
            contradicts = torch.as_tensor(self.task_.categories).to("cpu") == code
            scores = torch.where(contradicts, torch.tensor(float(self.contradiction)), scores)
        self.scores_ = scores

    def _attribute(self, test: Data) -> Tensor:
        if not _same_data(test, self.task_.test_data):
            raise AttributorError(
                f"Attributor {self.display_name!r} scores the task's own test split only; got another test set "
                f"({len(test)} examples, not task.test_data)."
            )
        return self.scores_.clone()


def _same_data(data: Data, reference: Data) -> bool:
    """Whether ``data`` is ``reference`` or has its content (shapes, dtypes and bytes: :meth:`Data.digest`)."""
    if data is reference:
        return True
    same_shape = data.inputs.shape == reference.inputs.shape and data.targets.shape == reference.targets.shape
    return same_shape and data.digest() == reference.digest()

