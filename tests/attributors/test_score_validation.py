"""Scores are checked as they will be used (float32): every path by which an attributor hands over
scores refuses values that only become non-finite in the cast, naming the attributor."""

import pytest
import torch

from tdaeval.attributors.base import Attribution, FunctionAttributor, validate_attribution, validate_scores
from tdaeval.errors import AttributorError

HUGE = 1e300  # finite in float64, inf in float32


def overflowing(n_test, n_train, dtype=torch.float64):
    scores = torch.zeros(n_test, n_train, dtype=dtype)
    scores[0, 0] = HUGE
    scores[-1, -1] = -HUGE
    return scores


@pytest.mark.parametrize("dtype", [torch.float64])
def test_validate_scores_refuses_values_beyond_float32(dtype):
    with pytest.raises(AttributorError, match=r"'big'.*2 non-finite.*beyond float32's range"):
        validate_scores(overflowing(2, 3, dtype), 2, 3, "big")


def test_values_at_the_edge_of_float32_pass_and_are_unchanged():
    scores = torch.tensor([[3.0e38, -3.0e38, 1.0]], dtype=torch.float64)
    out = validate_scores(scores, 1, 3, "edge")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_attributions_whose_mean_overflows_are_refused():
    mean = overflowing(2, 3)
    result = Attribution(mean=mean, std=torch.ones(2, 3, dtype=torch.float64), n_samples=3,
                         p_value=torch.full((2, 3), 0.5, dtype=torch.float64))
    with pytest.raises(AttributorError, match="beyond float32's range"):
        validate_attribution(result, 2, 3, "big")


@pytest.mark.parametrize("path", ["attribute", "attribute_chunks"])
def test_every_scoring_path_of_an_attributor_refuses_overflow(small_logreg, path):
    task = small_logreg
    attributor = FunctionAttributor(lambda model, train, test: overflowing(len(test), len(train)), name="big")
    attributor.fit(task, task.build_model(0), task.train_data)
    with pytest.raises(AttributorError, match="'big'.*beyond float32's range"):
        if path == "attribute":
            attributor.attribute(task.test_data)
        else:
            list(attributor.attribute_chunks(task.test_data, chunk_size=max(1, len(task.train_data) // 2)))
