"""A suite's ``ranking`` section reaches the one ranking the run computes and stores."""

from __future__ import annotations

import pytest
import yaml

from tdaeval.suites import run_suite
from tdaeval.suites.ranking import rank_results

SUITE = {
    "name": "ranked",
    "task": {"name": "digits", "params": {"n_train": 40, "n_test": 6, "hidden": 8, "recipe": {"epochs": 1}}},
    "attributors": ["random", "grad_dot"],
    "metrics": [{"name": "lds", "params": {"n_subsets": 4}}],
    "ranking": {"alpha": 0.3, "n_resamples": 150, "correction": "none"},
    "store": "store",
}


@pytest.fixture
def result(tmp_path):
    path = tmp_path / "ranked.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return run_suite(path, progress=False)


def test_the_stored_rankings_use_the_suites_settings(result):
    settings = result.rankings.settings
    assert (settings["alpha"], settings["n_resamples"], settings["correction"]) == (0.3, 150, "none")
    assert result.provenance["ranking"] == SUITE["ranking"]


def test_the_stored_rows_equal_a_ranking_computed_with_those_settings(result):
    done = [e for e in result.entries if e.metric == "lds" and e.result is not None]
    expected = rank_results([e.attributor for e in done], [e.result for e in done], 0.3, 150,
                            result.rankings.settings["seed"], "none")
    stored = result.ranking("lds")
    assert stored == expected
    # RankRow equality leaves out the p-values; they depend on n_resamples, so they tell the settings apart
    assert [r.p_values for r in stored] == [r.p_values for r in expected]
