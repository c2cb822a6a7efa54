"""Mislabel detection from self-influence: tdaeval's ``mislabel_detection`` vs dattri's ``mislabel_detection_auc`` (issue #6).

Synthetic self-influence for n training points, 10% of them flipped (flipped
points score higher on average), seed 0. tdaeval: ``MislabelDetection()``
from the self-influence vector — ROC-AUC with its bootstrap CI (2,000
resamples), average precision and the cumulative detection curve, all
O(n log n). dattri 0.3.0: ``dattri.metric.mislabel_detection_auc`` (AUC and
the ROC curve, O(n²)). Both get the same vectors; the AUCs must agree.

    .venv/bin/python benchmarks/bench_mislabel.py [--n 50000] [--dattri-n 5000 20000] [--strict]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tdaeval.metrics import MislabelDetection

from _common import exit_code, machine, verdict


def problem(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    flipped = torch.rand(n, generator=generator) < 0.1
    scores = torch.randn(n, generator=generator) + 1.5 * flipped.float()
    return scores, flipped


def timed(fn, repeat: int = 3) -> tuple[object, float]:
    out, best = None, float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dattri-n", type=int, nargs="*", default=[5_000, 20_000])
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    try:
        from dattri.metric import mislabel_detection_auc
    except ImportError as err:
        print(f"dattri is not importable ({err}); `pip install dattri==0.3.0`")
        return 2

    metric = MislabelDetection()
    print(f"machine: {machine()}\n")
    print(f"{'n':>8}{'tdaeval s':>12}{'dattri s':>11}{'AUC tdaeval':>14}{'AUC dattri':>12}")
    agree = True
    for n in sorted(set(args.dattri_n)):
        scores, flipped = problem(n)
        ours, t_ours = timed(lambda: metric.from_self_influence(scores, flipped))
        (auc, _), t_dattri = timed(lambda: mislabel_detection_auc(scores, flipped.long()), repeat=1)
        agree &= abs(ours.value - float(auc)) < 1e-3
        print(f"{n:>8}{t_ours:>12.3f}{t_dattri:>11.3f}{ours.value:>14.6f}{float(auc):>12.6f}")
    scores, flipped = problem(args.n)
    ours, t_ours = timed(lambda: metric.from_self_influence(scores, flipped))
    print(f"{args.n:>8}{t_ours:>12.3f}{'(not run)':>11}{ours.value:>14.6f}")
    met = t_ours < 1.0
    print(f"\nTARGET mislabel_detection at n = {args.n:,} under 1 s: {verdict(met)} ({t_ours:.3f} s, "
          f"AUC with a 2,000-resample CI, average precision and the detection curve)")
    return exit_code(met, args.strict, None if agree else "AUCs differ from dattri's")


if __name__ == "__main__":
    sys.exit(main())
