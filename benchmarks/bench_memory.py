"""Peak memory of ``trak`` and ``influence(solver="ekfac")`` at 20,000 synthetic training points.

Each attributor is fitted and run in a fresh subprocess on an MLP 64-256-256-10
(about 85,000 parameters) over 20,000 synthetic training points and 100 test
points; the subprocess reports its peak resident memory (``ru_maxrss``), and
the baseline (imports, data and model, nothing attributed) is measured the
same way. All per-example gradients at once would take
20,000 × 85,000 × 4 bytes = 6.8 GB; the target is a peak under 2 GiB.

Usage: ``python benchmarks/bench_memory.py [--n-train N] [--strict]``
(``--strict``: exit 1 when a peak exceeds 2 GiB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import machine

LIMIT_GIB = 2.0

CHILD = r"""
import json, resource, sys, time
import torch
from tdaeval.attributors import get
from tdaeval.datasets import Data
from tdaeval.tasks import DigitsTask

n_train, n_test, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
generator = torch.Generator().manual_seed(0)
centers = torch.randn(10, 64, generator=generator) * 2
def synthetic(n):
    y = torch.randint(0, 10, (n,), generator=generator)
    return Data(centers[y] + torch.randn(n, 64, generator=generator), y)
task = DigitsTask(n_train=100, n_test=10, hidden=256)
task.train_data, task.test_data = synthetic(n_train), synthetic(n_test)
model = task.build_model(0).eval()
n_params = sum(p.numel() for p in model.parameters())
start = time.perf_counter()
if which != "baseline":
    params = {"trak": {}, "ekfac": {"solver": "ekfac"}}[which]
    name = "trak" if which == "trak" else "influence"
    scores = get(name, **params).fit(task, model, task.train_data).attribute(task.test_data)
    assert scores.shape == (n_test, n_train)
seconds = time.perf_counter() - start
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds, "n_params": n_params}))
"""


def run(which: str, n_train: int, n_test: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(n_train), str(n_test), which], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    print(machine())
    baseline = run("baseline", args.n_train, args.n_test)
    print(f"{args.n_train} train x {args.n_test} test, {baseline['n_params']} parameters; "
          f"baseline (imports, data, model): {baseline['peak_mib']:.0f} MiB")
    failed = False
    for which, label in (("trak", "trak (k = 512)"), ("ekfac", "influence(solver='ekfac')")):
        result = run(which, args.n_train, args.n_test)
        peak_gib = result["peak_mib"] / 1024
        ok = peak_gib < LIMIT_GIB
        failed |= not ok
        print(f"{label:28s} peak {result['peak_mib']:7.0f} MiB ({peak_gib:.2f} GiB, {'<' if ok else '>='} {LIMIT_GIB} GiB), "
              f"{result['seconds']:.1f} s")
    if failed and args.strict:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
