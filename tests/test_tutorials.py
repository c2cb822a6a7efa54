"""The tutorials run as scripts, write only where they are told, and pass their own checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

TUTORIAL_01_ATTRIBUTORS = {"pixels (function)", "embedding (class)", "grad_dot", "grad_cos (module:Name)", "random"}


@pytest.mark.parametrize("out_via", ["argument", "environment"])
def test_tutorial_01_runs(tmp_path, out_via):
    out_dir = tmp_path / "out"
    env = {**os.environ, "TDAEVAL_CACHE_DIR": str(tmp_path / "cache")}
    args = [sys.executable, str(TUTORIALS / "01_plug_in_your_attributor.py")]
    if out_via == "argument":
        args.append(str(out_dir))
        env.pop("TDAEVAL_TUTORIAL_OUT", None)
    else:
        env["TDAEVAL_TUTORIAL_OUT"] = str(out_dir)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    results = out_dir / "results.json"
    assert results.is_file(), proc.stdout + proc.stderr
    doc = json.loads(results.read_text())
    assert {r["attributor"] for r in doc["results"]} == TUTORIAL_01_ATTRIBUTORS
    assert all(r["error"] is None and r["value"] is not None for r in doc["results"])
    for name in TUTORIAL_01_ATTRIBUTORS:
        assert name in proc.stdout  # the printed table
    # The ground truth went to TDAEVAL_CACHE_DIR, and nothing else was written next to the script.
    assert any((tmp_path / "cache" / "objects").rglob("*.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]
