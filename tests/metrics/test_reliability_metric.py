import numpy as np
import pytest
import torch
from scipy import stats

import tdaeval
from tdaeval.attributors import Attribution
from tdaeval.attributors.seeds import seed_posterior
from tdaeval.errors import ConfigError
from tdaeval.functional.reliability import seed_statistics
from tdaeval.metrics import SeedRankStability, SeedReliability


def _posterior(rng, n_seeds=6):
    signal = torch.randn(1, 8, 40, generator=rng, dtype=torch.float64) * torch.linspace(0, 3, 40, dtype=torch.float64)
    stack = signal + torch.randn(n_seeds, 8, 40, generator=rng, dtype=torch.float64)
    mean, std, p = seed_statistics(stack, "snr")
    return stack, Attribution(mean.float(), std.float(), n_seeds, p.float(), "snr", stack.float())


def test_reliability_equals_a_direct_scipy_computation(rng):
    stack, attribution = _posterior(rng)
    result = SeedReliability(alpha=0.05, test="snr").compute(attribution)
    array = stack.numpy()
    p = 2 * stats.norm.sf(np.abs(array.mean(0) / array.std(0, ddof=1)))
    np.testing.assert_allclose(result.per_example.numpy(), (p < 0.05).mean(1), atol=1e-12)
    assert result.value == pytest.approx((p < 0.05).mean(), abs=1e-12)
    assert result.provenance["mean_p"] == pytest.approx(p.mean(), abs=1e-6) and result.provenance["n_seeds"] == 6
    stability = SeedRankStability(k=5).compute(attribution)
    assert -1 <= stability.value <= 1 and 0 <= stability.provenance["topk_jaccard"] <= 1


def test_plain_scores_are_refused_with_a_hint(rng):
    with pytest.raises(ConfigError, match="seed_posterior"):
        SeedReliability().compute(torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="'alpha'"):
        SeedReliability(alpha=1.0)
    with pytest.raises(ConfigError, match="'k'"):
        SeedRankStability(k=0)


def test_reliability_of_a_seed_posterior_in_evaluate(small_digits, tmp_path):
    result = tdaeval.evaluate(
        small_digits,
        attributors={"grad_dot x3 seeds": seed_posterior("grad_dot", n_seeds=3)},
        metrics={"seed_reliability": {}, "seed_rank_stability": {"k": 5}, "lds": {"n_subsets": 5}},
        cache_dir=str(tmp_path),
    )
    reliability = result.get("grad_dot x3 seeds", "seed_reliability")
    assert 0.0 <= reliability.value <= 1.0 and reliability.provenance["n_seeds"] == 3
    assert result.get("grad_dot x3 seeds", "seed_rank_stability").value > 0  # the seeds agree more than chance


def test_seed_metrics_say_their_ci_holds_the_seeds_fixed(rng):
    _, attribution = _posterior(rng)
    for metric in (SeedReliability(), SeedRankStability(k=5)):
        covers = metric.compute(attribution).provenance["ci_covers"]
        assert "test points resampled" in covers and "seeds held fixed" in covers, metric.name


def test_seed_statistics_live_in_functional_and_no_metric_imports_an_attributor():
    """The metrics read the seed math from tdaeval.functional; tdaeval.attributors.seeds re-exports it."""
    import ast
    from pathlib import Path

    from tdaeval.attributors import seeds
    from tdaeval.functional import reliability

    assert seeds.seed_statistics is reliability.seed_statistics and seeds.describe_test is reliability.describe_test
    assert seeds.TESTS is reliability.TESTS and seeds.TEST_DESCRIPTIONS is reliability.TEST_DESCRIPTIONS
    for path in sorted((Path(tdaeval.__file__).parent / "metrics").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])]
            assert not any(n.startswith("tdaeval.attributors") for n in names if isinstance(node, (ast.Import, ast.ImportFrom))), path.name
