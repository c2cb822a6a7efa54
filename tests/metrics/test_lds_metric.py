import pytest
import torch

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import LDSGroundTruth, LDSSpec
from tdaeval.metrics import LDS, get_metric, metric_names
from tdaeval.scores import Attribution


def _truth(rng, higher_is_better=True):
    masks = torch.rand(30, 50, generator=rng) < 0.5
    effects = torch.randn(10, 50, generator=rng)
    outputs = (masks.float() @ effects.T).unsqueeze(1) + 0.3 * torch.randn(30, 2, 10, generator=rng)
    if not higher_is_better:
        outputs = -outputs
    return effects, LDSGroundTruth(masks, outputs, LDSSpec(n_subsets=30, n_seeds=2), higher_is_better, {"kind": "lds"})


def test_value_is_mean_of_functional_lds_with_ci(rng):
    effects, truth = _truth(rng)
    result = LDS(n_subsets=30, n_seeds=2).compute(effects, truth)
    per_test = F.lds(effects, truth.masks, truth.outputs.mean(1))
    assert result.value == pytest.approx(per_test.mean().item())
    assert result.ci[0] <= result.value <= result.ci[1]
    assert result.n == 10 and result.n_nan == 0 and result.higher_is_better
    assert result.provenance["kind"] == "lds" and "torch" in result.provenance


def test_lower_is_better_measurement_is_negated(rng):
    effects, truth = _truth(rng, higher_is_better=False)
    assert LDS().compute(effects, truth).value > 0.5


def test_nan_test_points_are_skipped_and_counted(rng):
    effects, truth = _truth(rng)
    truth.outputs[:, :, 3] = 0.0
    result = LDS().compute(effects, truth)
    assert result.n_nan == 1 and torch.isnan(result.per_example[3])
    assert result.value == pytest.approx(torch.nanmean(result.per_example).item())
    assert result.to_dict()["per_example"][3] is None


def test_shape_mismatch_is_a_clear_error(rng):
    effects, truth = _truth(rng)
    with pytest.raises(ConfigError, match=r"Metric 'lds' expects scores of shape \[n_test=10, n_train=50\]"):
        LDS().compute(effects.T, truth)


def test_accepts_an_attribution_with_a_mean(rng):
    effects, truth = _truth(rng)

    attribution = Attribution(effects, torch.ones_like(effects), 3, torch.full_like(effects, 0.5))
    assert LDS().compute(attribution, truth).value == LDS().compute(effects, truth).value


def test_registry_and_parameter_errors():
    assert "lds" in metric_names()
    assert get_metric("lds", n_subsets=7).spec.n_subsets == 7
    with pytest.raises(ConfigError, match="Unknown metric"):
        get_metric("auc")
    with pytest.raises(ConfigError, match="'alpha' parameter of LDS"):
        get_metric("lds", alpha=1.5)
    with pytest.raises(ConfigError, match="'n_subsets' parameter of LDS must be an integer >= 2"):
        LDS(n_subsets=1)


def test_a_taken_metric_name_cannot_be_registered_again():
    from tdaeval.metrics import LDS, register_metric

    class Impostor(LDS):
        name = "lds"

    with pytest.raises(ConfigError, match="'lds' is already registered"):
        register_metric(Impostor)
