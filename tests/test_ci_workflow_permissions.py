"""The CI tutorial's workflows are safe for pull requests from forks (#14, item 15).

The job that runs suite code (the pull request's code) has a read-only token and no pull_request_target;
the comment is posted by a separate workflow_run workflow that never checks out or runs the pull request.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def _load(name):
    text = (TUTORIALS / name).read_text()
    doc = yaml.safe_load(text)
    return text, doc, doc.get("on", doc.get(True))  # YAML 1.1 reads the key 'on' as True


def test_the_checking_workflow_runs_pr_code_read_only():
    text, doc, on = _load("05_ci_workflow.yml")
    assert "pull_request" in on and "pull_request_target" not in on and "pull_request_target" not in text.split("#")[0]
    assert doc["permissions"] == {"contents": "read"}
    for name, job in doc["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        assert "secrets." not in yaml.safe_dump(job), name
        checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")]
        assert all(s["with"]["persist-credentials"] is False for s in checkouts)
        assert not any("sticky-pull-request-comment" in s.get("uses", "") for s in job["steps"])
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert uploads and uploads[0]["with"]["name"] == "tdaeval-report"


def test_the_comment_workflow_never_checks_out_or_runs_pr_code():
    _, doc, on = _load("05_ci_comment_workflow.yml")
    checking = _load("05_ci_workflow.yml")[1]
    assert list(on) == ["workflow_run"] and on["workflow_run"]["workflows"] == [checking["name"]]
    assert doc["permissions"] == {}
    for name, job in doc["jobs"].items():
        assert job["permissions"] == {"actions": "read", "pull-requests": "write"}, name
        for step in job["steps"]:
            uses = step.get("uses", "")
            assert not uses.startswith(("actions/checkout", "actions/setup-python", "actions/cache")), step
            assert "tdaeval" not in step.get("run", "").replace("tdaeval-report", ""), step  # runs no tdaeval, no suite
            assert "${{" not in step.get("run", ""), step  # no expression pasted into a shell script
        downloads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact")]
        assert downloads and downloads[0]["with"]["name"] == "tdaeval-report"


def test_the_tutorial_shows_both_workflows_as_they_are():
    text = (TUTORIALS / "05_ci.md").read_text()
    assert (TUTORIALS / "05_ci_comment_workflow.yml").read_text() in re.findall(r"```yml\n(.*?)```", text, re.S)
    assert "pull_request_target" in text and "--schema-only" in text
