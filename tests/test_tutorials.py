import json
import os
import subprocess
import sys
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def test_tutorial_01_runs(tmp_path):
    env = {**os.environ, "TDAEVAL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS / "01_plug_in_your_attributor.py"), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    names = {r["attributor"] for r in doc["results"]}
    assert names == {"pixels (function)", "embedding (class)", "grad_dot", "random"}
    assert "embedding (class)" in proc.stdout
