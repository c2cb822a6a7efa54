"""End-to-end time of ``tdaeval quickstart`` as a subprocess, cold (empty cache) and warm (cache reused).

Target (issue #2): the cold run takes under 2 minutes on 2 CPU cores with an
LDS ground truth of at least 50 subsets (the default is 100).

The command is the venv's ``tdaeval`` script next to ``sys.executable``:

    tdaeval quickstart --out <tmp>/out-cold --cache-dir <tmp>/cache [--subsets M]

run once with a fresh, empty cache directory (cold: reference model, M subset
models, every built-in attributor) and once more with the same cache (warm: the
ground truth is read back). Times include interpreter start-up and imports.

    .venv/bin/python benchmarks/bench_quickstart.py [--subsets 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import exit_code, machine, verdict


def run(command: list[str]) -> tuple[float, str]:
    """Wall-clock seconds of ``command`` and its stdout; exits when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed with exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=None,
                        help="pass --subsets M to quickstart (default: not passed, quickstart's own default of 100)")
    parser.add_argument("--attributor", "-a", action="append", default=None,
                        help="pass --attributor NAME (repeatable; default: every built-in attributor)")
    parser.add_argument("--limit", type=float, default=120.0, help="cold-run time limit in seconds")
    parser.add_argument("--min-subsets", type=int, default=50, help="fewest subsets the target allows")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()

    tdaeval = Path(sys.executable).with_name("tdaeval")
    if not tdaeval.exists():
        raise SystemExit(f"no tdaeval script next to {sys.executable}; install tdaeval into this environment")
    extra: list[str] = []
    if args.subsets is not None:
        extra += ["--subsets", str(args.subsets)]
    for name in args.attributor or []:
        extra += ["--attributor", name]

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="tdaeval-bench-") as tmp:
        cache = Path(tmp) / "cache"
        cold_out, warm_out = Path(tmp) / "out-cold", Path(tmp) / "out-warm"
        base = [str(tdaeval), "quickstart", "--cache-dir", str(cache)]
        print(f"command: tdaeval quickstart --out <tmp>/out-cold --cache-dir <tmp>/cache {' '.join(extra)}".rstrip())
        cold, table = run(base + ["--out", str(cold_out)] + extra)
        warm, _ = run(base + ["--out", str(warm_out)] + extra)
        doc = json.loads((cold_out / "results.json").read_text())
        warm_doc = json.loads((warm_out / "results.json").read_text())

    lds = doc["provenance"]["metrics"]["lds"]
    m = int(lds["n_subsets"])
    same = [r["value"] for r in doc["results"]] == [r["value"] for r in warm_doc["results"]]
    print("\nquickstart output (cold run):")
    print("\n".join("  " + line for line in table.strip().splitlines()))
    attribute_s = sum(r["cost"]["fit_s"] + r["cost"]["attribute_s"] for r in doc["results"])
    print(f"\n{'run':<34}{'seconds':>9}")
    print(f"{'cold (empty cache)':<34}{cold:>9.1f}")
    print(f"{'warm (ground truth cached)':<34}{warm:>9.1f}")
    print(f"{'cold - warm (ground-truth training)':<34}{cold - warm:>9.1f}")
    print(f"{'attributors fit + attribute (cold)':<34}{attribute_s:>9.1f}")
    print(f"LDS subsets M = {m} (recorded in results.json), {len(doc['results'])} attributors; "
          f"warm results identical to cold: {same}")

    met = cold < args.limit and m >= args.min_subsets
    print(f"\nTARGET cold < {args.limit:g} s with >= {args.min_subsets} subsets: "
          f"{verdict(met)} ({cold:.1f} s, M = {m})")
    return exit_code(met, args.strict)


if __name__ == "__main__":
    sys.exit(main())
