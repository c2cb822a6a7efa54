"""End-to-end time of ``tdaeval quickstart``, cold (empty cache) and warm (cache reused).

Target (issue #2): under 2 minutes on 2 CPU cores with an LDS ground truth of
at least 50 subsets (the default is 100).

    python benchmarks/bench_quickstart.py [--subsets 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine


def run(tdaeval: Path, out: Path, cache: Path, subsets: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(tdaeval), "quickstart", "--out", str(out), "--cache-dir", str(cache), "--subsets", str(subsets)],
        capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"tdaeval quickstart failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=100)
    args = parser.parse_args()
    tdaeval = Path(sys.executable).with_name("tdaeval")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        cold = run(tdaeval, out, cache, args.subsets)
        warm = run(tdaeval, out, cache, args.subsets)
        doc = json.loads((out / "results.json").read_text())
    print(f"\nsubsets M={args.subsets}: cold {cold:.1f} s, warm (ground truth cached) {warm:.1f} s")
    for item in doc["results"]:
        print(f"  {item['attributor']:<10} LDS {item['value']:.3f}  CI [{item['ci'][0]:.3f}, {item['ci'][1]:.3f}]")
    met = cold < 120 and args.subsets >= 50
    print(f"target cold < 120 s with >= 50 subsets: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
