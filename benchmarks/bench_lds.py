"""tdaeval.functional.lds vs dattri.metric.lds (and a scipy loop), same inputs, one run.

Target (issue #2): at n_train 5,000, n_test 1,000, M 100, tdaeval is >= 50x
faster than dattri 0.3.0 and gives the same per-test values.

    python benchmarks/bench_lds.py [--n-train 5000 --n-test 1000 --subsets 100]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import scipy.stats
import torch

from _common import machine, timeit

import tdaeval.functional as F


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    n_train, n_test, m = args.n_train, args.n_test, args.subsets
    size = int(args.alpha * n_train)
    scores = torch.randn(n_test, n_train, generator=g, dtype=torch.float64)
    indices = torch.stack([torch.randperm(n_train, generator=g)[:size] for _ in range(m)])  # [M, size]
    masks = torch.zeros(m, n_train, dtype=torch.bool).scatter_(1, indices, True)
    outputs = masks.double() @ (scores + torch.randn(n_test, n_train, generator=g, dtype=torch.float64)).T
    outputs[:, 0] = 1.0  # one constant test column: both must give NaN there

    print(f"machine: {machine()}")
    print(f"problem: n_train={n_train}, n_test={n_test}, M={m}, subset size={size}")

    ours = F.lds(scores, masks, outputs)
    t_ours = timeit(lambda: F.lds(scores, masks, outputs), repeat=args.repeat)
    rows = [("tdaeval.functional.lds", t_ours, 1.0)]

    def scipy_loop():
        preds = (masks.double() @ scores.T).numpy()
        return np.array([scipy.stats.spearmanr(preds[:, t], outputs[:, t].numpy()).statistic for t in range(n_test)])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input warning on column 0
        reference = scipy_loop()
        t_scipy = timeit(scipy_loop, repeat=1, warmup=0)
    rows.append(("scipy.stats.spearmanr loop", t_scipy, t_scipy / t_ours))
    agree_scipy = np.allclose(ours.numpy(), reference, atol=1e-10, equal_nan=True)

    agree_dattri = None
    try:
        from dattri.metric import lds as dattri_lds
    except ImportError:
        print("dattri is not installed (pip install 'tdaeval[dattri]'): timing tdaeval and scipy only")
    else:
        # dattri: scores [n_train, n_test], ground truth (values [M, n_test], indices [M, size]).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs, _ = dattri_lds(scores.T.contiguous(), (outputs, indices))
            t_dattri = timeit(lambda: dattri_lds(scores.T.contiguous(), (outputs, indices)), repeat=1, warmup=0)
        rows.append(("dattri 0.3.0 metric.lds", t_dattri, t_dattri / t_ours))
        agree_dattri = bool(
            torch.equal(torch.isnan(ours), torch.isnan(theirs))
            and torch.allclose(ours[~torch.isnan(ours)], theirs[~torch.isnan(theirs)].double(), atol=1e-10)
        )

    print(f"\n{'implementation':<30}{'seconds':>10}{'x tdaeval':>12}")
    for name, seconds, ratio in rows:
        print(f"{name:<30}{seconds:>10.3f}{ratio:>11.1f}x")
    print(f"\nsame values as scipy: {agree_scipy}; same values as dattri: {agree_dattri}")
    print(f"NaN test points (constant outputs): {int(torch.isnan(ours).sum())}")
    ok = agree_scipy and agree_dattri is not False
    if agree_dattri is not None:
        speedup = t_dattri / t_ours
        print(f"target >= 50x faster than dattri: {'met' if speedup >= 50 else 'NOT met'} ({speedup:.0f}x)")
        ok = ok and speedup >= 50
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
