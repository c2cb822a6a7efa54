"""The built-in ``fact-verify`` suite (issue #17, FASTTRACK's protocol offline): it validates, builds, and its run shows the
orderings the protocol is about (the oracle judge is the ceiling, clustering costs recall, word matching takes
contradictions for support)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tdaeval.attributors.cluster_verify import ClusterVerify
from tdaeval.cli import app
from tdaeval.suites import build_suite, run_suite
from tdaeval.suites.schema import builtin_suites
from tdaeval.tasks.language import LanguageModelTask

ATTRIBUTORS = ["random", "bm25", "grad_dot", "grad_cos", "verify-oracle-all", "verify-oracle-2of8", "verify-noisy-0.1",
               "verify-lexical", "verify-learned"]
METRICS = ["set_f1", "set_precision", "set_recall", "contradiction_rate_at_k", "mrr"]


def test_fact_verify_is_builtin_validates_and_builds():
    assert "fact-verify" in builtin_suites()
    res = CliRunner().invoke(app, ["validate", "fact-verify"])
    assert res.exit_code == 0, res.output
    built = build_suite("fact-verify")
    assert isinstance(built.task, LanguageModelTask) and built.task.corpus.params["conflicts"] == 0.2
    assert list(built.attributors) == ATTRIBUTORS
    assert [m.name for m in built.metrics] == METRICS
    judges = {label: a.judge for label, a in built.attributors.items() if isinstance(a, ClusterVerify)}
    assert judges == {"verify-oracle-all": "oracle", "verify-oracle-2of8": "oracle", "verify-noisy-0.1": "noisy_oracle",
                      "verify-lexical": "lexical", "verify-learned": "learned"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fact_verify_runs_with_the_protocols_orderings(tmp_path):
    result = run_suite("fact-verify", cache_dir=tmp_path / "store", progress=False)
    assert result.failures() == []

    def value(attributor, metric):
        return result.get(attributor, metric).value

    assert value("verify-oracle-all", "set_f1") == 1.0  # every sentence judged by the corpus's own facts
    assert value("verify-oracle-2of8", "set_recall") < 0.6  # two of eight clusters: most proponents never judged
    assert value("verify-learned", "set_f1") > 0.9
    assert value("verify-lexical", "set_precision") < 0.5 < value("verify-lexical", "set_recall")  # word matching over-accepts
    assert value("random", "set_f1") < 0.05
    # relevant is not supporting: word matching ranks contradictions in its top 10, gradients do not
    assert value("bm25", "contradiction_rate_at_k") > value("grad_dot", "contradiction_rate_at_k")
    bm25 = result.get("bm25", "contradiction_rate_at_k")
    assert bm25.value > bm25.provenance["random_interval"][1]  # above what a random ranking reaches 95% of the time
