"""Streaming scores: chunks equal the full matrix, memory-mapped files round-trip, LDS is unchanged."""

import numpy as np
import pytest
import torch

import tdaeval
from tdaeval.attributors import get
from tdaeval.errors import ConfigError
from tdaeval.functional import lds, subset_predictions
from tdaeval.scores import open_scores, write_scores
from tdaeval.suites.runner import train_reference
from tdaeval.tasks import SyntheticTask


@pytest.fixture(scope="module")
def fitted():
    task = SyntheticTask(n_train=700, n_test=30, n_features=8, n_classes=4)
    model, checkpoints = train_reference(task)
    return task, model, checkpoints


@pytest.mark.parametrize("name,streams", [("grad_dot", True), ("grad_cos", True), ("tracin", True), ("random", False)])
def test_chunks_concatenate_to_the_full_matrix(fitted, name, streams):
    task, model, checkpoints = fitted
    attributor = get(name).fit(task, model, task.train_data, checkpoints=checkpoints)
    assert attributor.streams is streams
    chunks = list(attributor.attribute_chunks(task.test_data, chunk_size=128))
    assert [start for start, _ in chunks] == list(range(0, 700, 128)) and chunks[-1][1].shape == (30, 700 - 640)
    assert torch.equal(torch.cat([c for _, c in chunks], 1), attributor.attribute(task.test_data))


def test_chunk_size_is_checked(fitted):
    task, model, checkpoints = fitted
    attributor = get("grad_dot").fit(task, model, task.train_data)
    with pytest.raises(ConfigError, match="'chunk_size' parameter of grad_dot.attribute_chunks"):
        attributor.attribute_chunks(task.test_data, chunk_size=0)


def test_score_files_roundtrip_memory_mapped(tmp_path):
    full = torch.randn(5, 23)
    mapped = write_scores(tmp_path / "s.npy", ((s, full[:, s : s + 7]) for s in range(0, 23, 7)), 5, 23)
    assert torch.equal(mapped, full) and isinstance(np.load(tmp_path / "s.npy", mmap_mode="r"), np.memmap)
    assert torch.equal(open_scores(tmp_path / "s.npy"), full)
    with pytest.raises(ConfigError, match="3 of 23 training columns .* never written"):
        write_scores(tmp_path / "t.npy", [(0, full[:, :20])], 5, 23)
    with pytest.raises(ConfigError, match="does not fit"):
        write_scores(tmp_path / "u.npy", [(20, full[:, :7])], 5, 23)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="Cannot open the score file"):
        open_scores(tmp_path / "bad.npy")


def test_blocked_subset_predictions_equal_the_plain_product():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(9, 1000, generator=g)
    masks = torch.rand(13, 1000, generator=g) < 0.5
    expected = masks.double() @ scores.double().T
    for chunk in (1, 77, 4096):
        torch.testing.assert_close(subset_predictions(scores, masks, train_chunk=chunk), expected, rtol=1e-12, atol=1e-9)
    outputs = torch.randn(13, 9, generator=g)
    torch.testing.assert_close(lds(scores, masks, outputs), lds(scores.double(), masks, outputs))


def test_evaluate_with_streamed_scores_gives_the_same_numbers(fitted, tmp_path):
    task, _, _ = fitted
    kwargs = dict(attributors=["grad_dot", "grad_cos", "tracin"], metrics={"lds": {"n_subsets": 6}}, cache_dir=tmp_path / "c")
    plain = tdaeval.evaluate(task, **kwargs)
    streamed = tdaeval.evaluate(task, score_chunk=100, scores_dir=tmp_path / "scores", **kwargs)
    for name in ("grad_dot", "grad_cos", "tracin"):
        assert torch.equal(plain.get(name, "lds").per_example, streamed.get(name, "lds").per_example)
    assert len(list((tmp_path / "scores").glob("*.npy"))) == 3 and streamed.provenance["score_chunk"] == 100


def test_attribution_lives_in_scores_and_is_re_exported_by_the_attributors():
    from tdaeval import attributors
    from tdaeval.attributors import base
    from tdaeval.scores import Attribution

    assert attributors.Attribution is base.Attribution is Attribution


def test_metrics_read_the_mean_of_an_attribution_and_nothing_else_with_a_mean():
    from types import SimpleNamespace

    from tdaeval.metrics.base import as_score_matrix
    from tdaeval.scores import Attribution

    mean = torch.randn(3, 5)
    attribution = Attribution(mean=mean, std=torch.ones(3, 5), n_samples=2, p_value=torch.full((3, 5), 0.5))
    assert as_score_matrix(attribution, "lds") is mean
    with pytest.raises(ConfigError, match="Metric 'lds' expects scores as a Tensor"):
        as_score_matrix(SimpleNamespace(mean=mean), "lds")  # an unrelated object is not read through its 'mean'
