import pytest
import torch
from scipy import stats

import tdaeval
from tdaeval.attributors import get
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore
from tdaeval.metrics import LOO, LOOPearson, get_metric


def test_explicit_influence_reaches_loo_spearman_above_0_9_on_linear_regression(linear_task, tmp_path):
    metric = LOO(n_removed=40)
    truth = metric.build_truth(linear_task, ArtifactStore(tmp_path))
    model = linear_task.train(linear_task.build_model(0), torch.arange(linear_task.n_train), 0)
    scores = get("influence", solver="explicit", damping=0.0).fit(linear_task, model, linear_task.train_data).attribute(linear_task.test_data)
    result = metric.compute(scores, truth)
    assert result.value > 0.9 and result.ci[0] <= result.value <= result.ci[1]
    assert result.provenance["kind"] == "loo" and result.provenance["correlation"] == "spearman"
    # per test point it is scipy's Spearman between the scores and the harm of removal
    z = 3
    expected = stats.spearmanr(scores[z, truth.removed].numpy(), truth.harm[z].numpy()).statistic
    assert float(result.per_example[z]) == pytest.approx(expected, abs=1e-12)
    pearson = LOOPearson(n_removed=40).compute(scores, truth)
    expected = stats.pearsonr(scores[z, truth.removed].double().numpy(), truth.harm[z].numpy()).statistic
    assert float(pearson.per_example[z]) == pytest.approx(expected, abs=1e-6)
    assert get("random").fit(linear_task, model, linear_task.train_data).attribute(linear_task.test_data).shape == scores.shape
    random = metric.compute(get("random").fit(linear_task, model, linear_task.train_data).attribute(linear_task.test_data), truth)
    assert random.value < 0.5


def test_loo_runs_in_evaluate_next_to_lds(linear_task, tmp_path):
    result = tdaeval.evaluate(
        linear_task,
        attributors={"influence": get("influence", solver="explicit", damping=0.0), "random": "random"},
        metrics={"loo": {"n_removed": 20}, "lds": {"n_subsets": 10}},
        cache_dir=str(tmp_path),
    )
    assert result.get("influence", "loo").value > result.get("random", "loo").value
    assert result.get("influence", "loo").provenance["n_removed"] == 20


def test_bad_scores_and_parameters(linear_task, tmp_path):
    metric = get_metric("loo", n_removed=5)
    truth = metric.build_truth(linear_task, ArtifactStore(tmp_path))
    with pytest.raises(ConfigError, match="n_test=10"):
        metric.compute(torch.zeros(3, linear_task.n_train), truth)
    with pytest.raises(ConfigError, match="removes training index"):
        metric.compute(torch.zeros(linear_task.n_test, 2), truth)
    with pytest.raises(ConfigError, match="'n_bootstrap'"):
        LOO(n_bootstrap=1)
