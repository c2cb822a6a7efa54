import pytest
import scipy.stats
import torch

from tdaeval.functional import lds, subset_predictions


@pytest.fixture
def problem(rng):
    n_test, n_train, m = 8, 30, 25
    scores = torch.randn(n_test, n_train, generator=rng)
    masks = torch.rand(m, n_train, generator=rng) < 0.5
    true_effects = scores + 0.8 * torch.randn(n_test, n_train, generator=rng)
    outputs = (masks.double() @ true_effects.double().T) + 0.5 * torch.randn(m, n_test, generator=rng, dtype=torch.float64)
    return scores, masks, outputs


def test_lds_matches_scipy_loop(problem):
    scores, masks, outputs = problem
    ours = lds(scores, masks, outputs)
    preds = (masks.double() @ scores.double().T).numpy()
    for t in range(scores.shape[0]):
        expected = scipy.stats.spearmanr(preds[:, t], outputs[:, t].numpy()).statistic
        assert ours[t].item() == pytest.approx(expected, abs=1e-12)
    assert ours.mean() > 0.3  # the planted signal is found


def test_lds_with_tied_outputs_matches_scipy(problem):
    scores, masks, outputs = problem
    outputs = outputs.round()  # many ties
    ours = lds(scores, masks, outputs)
    preds = (masks.double() @ scores.double().T).numpy()
    for t in range(scores.shape[0]):
        expected = scipy.stats.spearmanr(preds[:, t], outputs[:, t].numpy()).statistic
        assert ours[t].item() == pytest.approx(expected, abs=1e-12)


def test_invariant_to_positive_rescaling_and_per_test_shift(problem):
    scores, masks, outputs = problem
    base = lds(scores, masks, outputs)
    scale = torch.rand(scores.shape[0], 1) * 10 + 0.1
    torch.testing.assert_close(lds(scores * scale, masks, outputs), base)
    # A per-test constant shift adds c * |S_j|; subsets have equal size in LDS, so ranks do not change.
    fixed = torch.zeros_like(masks)
    for j in range(masks.shape[0]):
        fixed[j, torch.randperm(masks.shape[1])[:15]] = True
    base_fixed = lds(scores, fixed, outputs)
    shift = torch.randn(scores.shape[0], 1)
    torch.testing.assert_close(lds(scores + shift, fixed, outputs), base_fixed)


def test_invariant_to_consistent_permutation_of_training_points(problem):
    scores, masks, outputs = problem
    perm = torch.randperm(scores.shape[1])
    torch.testing.assert_close(lds(scores[:, perm], masks[:, perm], outputs), lds(scores, masks, outputs))


def test_sign_flips_under_negation(problem):
    scores, masks, outputs = problem
    torch.testing.assert_close(lds(-scores, masks, outputs), -lds(scores, masks, outputs))


def test_constant_outputs_give_nan(problem):
    scores, masks, outputs = problem
    outputs = outputs.clone()
    outputs[:, 2] = 1.0
    values = lds(scores, masks, outputs)
    assert torch.isnan(values[2]) and torch.isfinite(values[[0, 1, 3]]).all()


def test_subset_predictions_shape_and_value(problem):
    scores, masks, _ = problem
    preds = subset_predictions(scores, masks)
    assert preds.shape == (masks.shape[0], scores.shape[0])
    assert preds[3, 1].item() == pytest.approx(scores[1, masks[3]].sum().item(), abs=1e-5)


@pytest.mark.parametrize(
    "scores_shape,masks_shape,outputs_shape,match",
    [((5,), (4, 5), (4, 1), "scores"), ((2, 5), (4, 6), (4, 2), "masks"), ((2, 5), (4, 5), (2, 4), "outputs")],
)
def test_shape_errors_name_the_argument(scores_shape, masks_shape, outputs_shape, match):
    with pytest.raises(ValueError, match=match):
        lds(torch.zeros(scores_shape), torch.zeros(masks_shape, dtype=torch.bool), torch.zeros(outputs_shape))
