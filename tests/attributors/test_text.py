"""The text attributors: ``bm25`` against ``rank_bm25.BM25Okapi``, and the ``entailment`` reference row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdaeval.attributors import BM25, EntailmentIndicator, get
from tdaeval.attributors.text import bm25_scores
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError

rank_bm25 = pytest.importorskip("rank_bm25")

PAD, IGNORE = 0, -100

# A handful of sentences in the lm_spec.md format (word ids; 0 is the padding). Subject, relation words, object last.
TRAIN_SENTENCES = [
    [5, 9, 10, 20],  # fact A, template 1
    [11, 5, 12, 20],  # fact A, template 2
    [6, 9, 10, 21],  # fact B, template 1
    [11, 6, 12, 21],  # fact B, template 2
    [7, 9, 10, 22, 13],  # fact C, template 1 (longer)
    [5, 14, 15, 16, 23],  # fact D (same subject as A, other relation)
    [7, 14, 15, 16, 20],  # fact E (same object as A)
]
TEST_QUERIES = [([17, 5, 18], 20), ([17, 6, 18], 21), ([5, 19, 14], 23)]  # (prompt, answer): held-out templates of A, B, D
ENTAILMENT = torch.tensor(
    [
        [1, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
    ],
    dtype=torch.bool,
)


def _lm_train(sentences: list[list[int]], length: int) -> Data:
    """Train rows: inputs = w_0..w_{L-2} then PAD, targets = w_1..w_{L-1} then IGNORE."""
    inputs = torch.full((len(sentences), length), PAD, dtype=torch.long)
    targets = torch.full((len(sentences), length), IGNORE, dtype=torch.long)
    for i, words in enumerate(sentences):
        inputs[i, : len(words) - 1] = torch.tensor(words[:-1])
        targets[i, : len(words) - 1] = torch.tensor(words[1:])
    return Data(inputs, targets)


def _lm_test(queries: list[tuple[list[int], int]], length: int) -> Data:
    """Test rows: inputs = the prompt then PAD, the answer as target at the prompt's last position, IGNORE elsewhere."""
    inputs = torch.full((len(queries), length), PAD, dtype=torch.long)
    targets = torch.full((len(queries), length), IGNORE, dtype=torch.long)
    for i, (prompt, answer) in enumerate(queries):
        inputs[i, : len(prompt)] = torch.tensor(prompt)
        targets[i, len(prompt) - 1] = answer
    return Data(inputs, targets)


T = max(len(s) for s in TRAIN_SENTENCES) - 1
TRAIN, TEST = _lm_train(TRAIN_SENTENCES, T), _lm_test(TEST_QUERIES, T)


class FakeFactTask:
    """What the text attributors read of a language-model task (lm_spec.md): its splits, entailment and categories."""

    category_names = ("other", "proponent", "same_subject", "same_object", "same_relation", "contradiction")

    def __init__(self, train: Data = TRAIN, test: Data = TEST, entailment: torch.Tensor | None = ENTAILMENT, categories=None):
        self.train_data, self.test_data = train, test
        if entailment is not None:
            self.entailment = entailment
        if categories is not None:
            self.categories = categories


def _reference(documents: list[list[int]], queries: list[list[int]], **params) -> torch.Tensor:
    bm25 = rank_bm25.BM25Okapi(documents, **params)
    return torch.from_numpy(np.stack([bm25.get_scores(q) for q in queries]))


# --- bm25_scores against rank_bm25 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("params", [{}, {"k1": 0.9, "b": 0.3, "epsilon": 0.5}, {"k1": 0.0, "b": 1.0, "epsilon": 0.0}])
def test_bm25_scores_equal_rank_bm25_on_random_token_corpora(seed, params):
    g = torch.Generator().manual_seed(seed)
    vocab = 4 + 6 * seed  # small vocabularies: many terms in more than half the documents (negative idf, floored)
    documents = [torch.randint(0, vocab, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g) for _ in range(40)]
    # queries may repeat tokens, hold tokens no document has (ids >= vocab), or be empty
    queries = [torch.randint(0, vocab + 3, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g) for _ in range(12)]
    # At k1 = 0 rank_bm25 computes 0/0 = NaN for a query term a document lacks: compare with the limit k1 -> 0 there.
    reference_params = {**params, "k1": 1e-14} if params.get("k1") == 0 else params
    expected = _reference([d.tolist() for d in documents], [q.tolist() for q in queries], **reference_params)
    actual = bm25_scores(queries, documents, **params, chunk_elements=2 * vocab)  # several chunks of queries
    assert actual.shape == (12, 40) and actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_the_idf_floor_is_rank_bm25s():
    """Terms in more than half of the documents get epsilon x the mean idf, not their (negative) idf, nor 0."""
    documents = [[1, 2], [1, 3], [1, 4], [5, 6], [1, 7], [8]]  # term 1 in 4 of 6 documents: idf log(2.5/4.5) < 0
    idf = {t: np.log(6 - n + 0.5) - np.log(n + 0.5) for t, n in {1: 4, **{t: 1 for t in range(2, 9)}}.items()}
    floor = 0.5 * np.mean(list(idf.values()))
    assert idf[1] < 0 < floor
    scores = bm25_scores([torch.tensor([1])], [torch.tensor(d) for d in documents], k1=1.5, b=0.0, epsilon=0.5)
    expected = [floor if 1 in d else 0.0 for d in documents]  # b = 0: c(k1+1)/(c+k1) = 1 at c = 1
    torch.testing.assert_close(scores[0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(scores, _reference(documents, [[1]], b=0.0, epsilon=0.5))


# --- the bm25 attributor ---------------------------------------------------------------------------------------------


def _sequences(train: list[list[int]]) -> list[list[int]]:
    return [list(s) for s in train]


@pytest.mark.parametrize("query", ["full", "prompt"])
def test_bm25_attributor_scores_lm_data_as_rank_bm25_and_needs_no_model(query):
    scores = get("bm25", query=query).fit(FakeFactTask(), None, TRAIN).attribute(TEST)
    queries = [prompt + [answer] if query == "full" else prompt for prompt, answer in TEST_QUERIES]
    expected = _reference(_sequences(TRAIN_SENTENCES), queries)
    assert scores.shape == (len(TEST_QUERIES), len(TRAIN_SENTENCES)) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected.float(), rtol=1e-6, atol=1e-6)


def test_bm25_ranks_the_proponents_first_with_the_answer_and_not_without_it():
    full = get("bm25").fit(FakeFactTask(), None, TRAIN).attribute(TEST)
    assert set(full[0].topk(2).indices.tolist()) == {0, 1}  # fact A's sentences share the subject and the object
    prompt = get("bm25", query="prompt").fit(FakeFactTask(), None, TRAIN).attribute(TEST)
    assert prompt[0, 5] > 0 and full[0, 6] > prompt[0, 6] == 0  # sentence 6 shares only the answer with query 0


def test_bm25_parameters_reach_the_scores():
    default = get("bm25").fit(FakeFactTask(), None, TRAIN).attribute(TEST)
    tuned = get("bm25", k1=0.5, b=0.2, epsilon=1.0).fit(FakeFactTask(), None, TRAIN).attribute(TEST)
    expected = _reference(_sequences(TRAIN_SENTENCES), [p + [a] for p, a in TEST_QUERIES], k1=0.5, b=0.2, epsilon=1.0)
    torch.testing.assert_close(tuned, expected.float(), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(tuned, default)


@pytest.mark.parametrize(
    "params,parameter",
    [({"k1": -1.0}, "k1"), ({"b": 1.5}, "b"), ({"epsilon": -0.1}, "epsilon"), ({"query": "answer"}, "query"), ({"k1": "1"}, "k1")],
)
def test_bm25_parameters_are_validated(params, parameter):
    with pytest.raises(ConfigError, match=f"'{parameter}' parameter of BM25"):
        get("bm25", **params)


def test_bm25_on_non_token_data_is_a_one_line_error(small_logreg):
    with pytest.raises(AttributorError, match="'bm25' needs token-sequence data; the training data has inputs of dtype torch.float32") as err:
        get("bm25").fit(small_logreg, None, small_logreg.train_data)
    assert "\n" not in str(err.value)
    assert BM25().why_unsupported(small_logreg, small_logreg.train_data) == str(err.value)
    assert BM25().why_unsupported(FakeFactTask(), TRAIN) is None
    fitted = get("bm25").fit(FakeFactTask(), None, TRAIN)
    floats = Data(TEST.inputs.float(), TEST.targets)
    with pytest.raises(AttributorError, match="'bm25' needs token-sequence data; the test data has inputs of dtype torch.float32"):
        fitted.attribute(floats)
    negative = Data(TEST.inputs, torch.full_like(TEST.targets, -3))
    with pytest.raises(AttributorError, match="negative target other than the ignore index"):
        fitted.attribute(negative)


def test_bm25_self_influence_is_each_sentence_against_itself():
    attributor = get("bm25").fit(FakeFactTask(), None, TRAIN)
    expected = _reference(_sequences(TRAIN_SENTENCES), _sequences(TRAIN_SENTENCES)).diagonal().float()
    torch.testing.assert_close(attributor.self_influence(chunk_size=3), expected, rtol=1e-6, atol=1e-6)


# --- the entailment indicator ----------------------------------------------------------------------------------------


def test_entailment_scores_are_the_tasks_matrix_and_need_no_model():
    task = FakeFactTask()
    scores = get("entailment").fit(task, None, task.train_data).attribute(task.test_data)
    assert scores.dtype == torch.float32 and torch.equal(scores, ENTAILMENT.float())
    same_content = Data(TEST.inputs.clone(), TEST.targets.clone())  # matched by content, not only identity
    assert torch.equal(get("entailment").fit(task, None, Data(TRAIN.inputs.clone(), TRAIN.targets.clone())).attribute(same_content), scores)


def test_entailment_on_another_test_set_is_a_one_line_error():
    task = FakeFactTask()
    attributor = get("entailment").fit(task, None, task.train_data)
    other = TEST.subset(torch.tensor([1, 0, 2]))  # the same rows reordered: another test set
    with pytest.raises(AttributorError, match="'entailment' scores the task's own test split only; got another test set") as err:
        attributor.attribute(other)
    assert "\n" not in str(err.value)


def test_entailment_matches_the_training_data_by_content():
    task = FakeFactTask()
    get("entailment").fit(task, None, TRAIN.subset(torch.arange(len(TRAIN))))  # same rows, same order: accepted
    with pytest.raises(AttributorError, match="'entailment' scores the task's own training set only") as err:
        get("entailment").fit(task, None, TRAIN.subset(torch.arange(len(TRAIN) - 1)))
    assert "\n" not in str(err.value)


def test_entailment_on_a_task_without_proponents_is_a_one_line_error(small_logreg):
    with pytest.raises(AttributorError, match="'entailment' needs a task with known proponents.*DigitsTask has none") as err:
        get("entailment").fit(small_logreg, None, small_logreg.train_data)
    assert "\n" not in str(err.value)
    assert EntailmentIndicator().why_unsupported(small_logreg, small_logreg.train_data) == str(err.value)
    with pytest.raises(AttributorError, match=r"'entailment' must be a tensor \[n_test=3, n_train=7\]"):
        get("entailment").fit(FakeFactTask(entailment=ENTAILMENT[:, :3]), None, TRAIN)


def test_entailment_can_score_contradictions_as_opponents():
    categories = ENTAILMENT.to(torch.int8)  # code 1 = proponent
    categories[0, 2] = 5  # sentence 2 contradicts query 0 (code of "contradiction")
    task = FakeFactTask(categories=categories)
    scores = get("entailment", contradiction=-1.0).fit(task, None, TRAIN).attribute(TEST)
    expected = ENTAILMENT.float()
    expected[0, 2] = -1.0
    assert torch.equal(scores, expected)
    assert torch.equal(get("entailment").fit(task, None, TRAIN).attribute(TEST), ENTAILMENT.float())  # default: plain indicator
    with pytest.raises(AttributorError, match="contradiction=-1.0 needs the task's 'categories'"):
        get("entailment", contradiction=-1.0).fit(FakeFactTask(), None, TRAIN)
    with pytest.raises(ConfigError, match="'contradiction' parameter of EntailmentIndicator"):
        get("entailment", contradiction=2.0)


def test_rows_without_a_target_are_not_token_sequences():
    fitted = get("bm25").fit(FakeFactTask(), None, TRAIN)
    targets = TEST.targets.clone()
    targets[1] = IGNORE
    with pytest.raises(AttributorError, match="the test data has 1 row\\(s\\) without any target \\(first: row 1\\)"):
        fitted.attribute(Data(TEST.inputs, targets))


# --- on the language-model task --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_task():
    language = pytest.importorskip("tdaeval.tasks.language")
    return language.LanguageModelTask(n_entities=40, n_relations=3, n_facts=30, n_test=10, conflicts=0.3)


def test_bm25_on_the_language_model_task_equals_rank_bm25_and_finds_proponents(lm_task):
    task = lm_task
    scores = get("bm25").fit(task, None, task.train_data).attribute(task.test_data)

    def sentences(data: Data, whole: bool) -> list[list[int]]:  # by hand from the format: non-PAD inputs (+ last target)
        out = []
        for x, y in zip(data.inputs.tolist(), data.targets.tolist()):
            last = max(t for t in range(len(y)) if y[t] != IGNORE)
            out.append([w for w in x if w != PAD] + ([y[last]] if whole else []))
        return out

    documents = sentences(task.train_data, True)
    torch.testing.assert_close(scores, _reference(documents, sentences(task.test_data, True)).float(), rtol=1e-6, atol=1e-6)
    prompt = get("bm25", query="prompt").fit(task, None, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(prompt, _reference(documents, sentences(task.test_data, False)).float(), rtol=1e-6, atol=1e-6)
    proponents = scores[task.entailment]
    assert proponents.min() > 0 and proponents.mean() > scores[~task.entailment].mean()


def test_bm25_retrieves_the_proponents_on_the_default_corpus():
    """Measured: MRR 0.83 and hit@1 0.73 (research notes A.4: 0.83 / 0.72); the prompt alone (no answer) gives hit@1 0.20."""
    language = pytest.importorskip("tdaeval.tasks.language")
    task = language.LanguageModelTask()
    scores = get("bm25").fit(task, None, task.train_data).attribute(task.test_data)
    top = scores.argmax(1)  # ties: a proponent tied at the top with a non-proponent counts when listed first (rare)
    assert task.entailment[torch.arange(task.n_test), top].float().mean() >= 0.6


def test_entailment_on_the_language_model_task(lm_task):
    task = lm_task
    assert EntailmentIndicator().why_unsupported(task, task.train_data) is None
    scores = get("entailment").fit(task, None, task.train_data).attribute(task.test_data)
    assert torch.equal(scores, task.entailment.float())
    contradicts = task.categories == task.category_names.index("contradiction")
    assert contradicts.any()  # conflicts=0.3 gives contradicting sentences
    signed = get("entailment", contradiction=-1.0).fit(task, None, task.train_data).attribute(task.test_data)
    assert torch.equal(signed, torch.where(contradicts, -1.0, task.entailment.float()))
    with pytest.raises(AttributorError, match="own test split only"):
        get("entailment").fit(task, None, task.train_data).attribute(task.test_data.subset(torch.arange(3)))


def test_bm25_scores_need_a_non_empty_document():
    with pytest.raises(AttributorError, match="at least one non-empty document; got 2 document"):
        bm25_scores([torch.tensor([1])], [torch.zeros(0, dtype=torch.long)] * 2)
    assert bm25_scores([], [torch.tensor([1, 2])]).shape == (0, 1)
