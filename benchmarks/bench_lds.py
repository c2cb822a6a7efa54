"""tdaeval.functional.lds vs dattri.metric.lds (and a scipy spearmanr loop): same problem, one run.

Target (issue #2): at n_train 5,000, n_test 1,000, M 100, tdaeval is >= 50x
faster than dattri 0.3.0 and gives the same per-test values (max abs
difference < 1e-6, NaN at the same test points).

Both libraries get the same problem, each in its own layout:

* tdaeval: ``scores [n_test, n_train]``, boolean ``masks [M, n_train]``,
  ``outputs [M, n_test]``;
* dattri: ``scores.T [n_train, n_test]`` and the ground-truth tuple
  ``(outputs [M, n_test], indices [M, subset size])``; the masks are built from
  those indices. ``dattri.metric.lds`` correlates the outputs as given (only its
  ground-truth *helper* negates a loss), so the outputs are passed unchanged.

Test point 0 has constant outputs: both must return NaN there.

    .venv/bin/python benchmarks/bench_lds.py [--n-train 5000 --n-test 1000 --subsets 100 --repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import scipy.stats
import torch

import tdaeval.functional as F

from _common import exit_code, machine, measure, median, spread, verdict


def make_problem(n_train: int, n_test: int, m: int, alpha: float, dtype: torch.dtype, seed: int):
    """Random scores, M random subsets of size ``alpha * n_train`` and outputs correlated with the scores."""
    g = torch.Generator().manual_seed(seed)
    size = int(alpha * n_train)
    scores = torch.randn(n_test, n_train, generator=g, dtype=dtype)
    indices = torch.stack([torch.randperm(n_train, generator=g)[:size] for _ in range(m)])  # [M, size]
    masks = torch.zeros(m, n_train, dtype=torch.bool).scatter_(1, indices, True)
    noise = torch.randn(n_test, n_train, generator=g, dtype=dtype)
    outputs = (masks.to(dtype) @ (scores + noise).T).contiguous()  # [M, n_test], LDS around 0.7
    outputs[:, 0] = 1.0  # constant outputs at test point 0: NaN on every side
    return scores, masks, indices, outputs


def compare(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[bool, float]:
    """(NaN positions equal, max abs difference over the non-NaN test points)."""
    theirs = torch.as_tensor(theirs, dtype=torch.float64)
    same_nan = bool(torch.equal(torch.isnan(ours), torch.isnan(theirs)))
    finite = ~torch.isnan(ours) & ~torch.isnan(theirs)
    diff = float((ours[finite] - theirs[finite]).abs().max()) if finite.any() else 0.0
    return same_nan, diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--subsets", type=int, default=100, help="M, the number of subsets")
    parser.add_argument("--alpha", type=float, default=0.5, help="subset fraction")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="dtype of scores and outputs (tdaeval's scores are float32)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per implementation (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-6, help="largest allowed per-test difference")
    parser.add_argument("--target", type=float, default=50.0, help="required speed-up over dattri")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the speed target is missed")
    args = parser.parse_args()

    n_train, n_test, m = args.n_train, args.n_test, args.subsets
    scores, masks, indices, outputs = make_problem(n_train, n_test, m, args.alpha, getattr(torch, args.dtype), args.seed)
    assert bool((masks.sum(1) == indices.shape[1]).all()), "masks and indices describe different subsets"

    print(f"machine: {machine()}")
    print(f"problem: n_train={n_train}, n_test={n_test}, M={m}, subset size={indices.shape[1]}, {args.dtype}; "
          f"median of {args.repeat} runs after 1 warm-up")

    rows = []  # (name, times)

    # tdaeval: [n_test, n_train] scores, boolean masks.
    ours = F.lds(scores, masks, outputs)
    rows.append(("tdaeval.functional.lds", measure(lambda: F.lds(scores, masks, outputs), repeat=args.repeat)))
    gemm = measure(lambda: F.subset_predictions(scores, masks), repeat=args.repeat)

    # scipy reference: the same predictions, one spearmanr call per test point.
    def scipy_loop() -> np.ndarray:
        preds = F.subset_predictions(scores, masks).numpy()
        outs = outputs.double().numpy()
        return np.array([scipy.stats.spearmanr(preds[:, t], outs[:, t]).statistic for t in range(n_test)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about the constant test point
        reference = scipy_loop()
        rows.append(("scipy.stats.spearmanr loop", measure(scipy_loop, repeat=args.repeat, warmup=0)))
    checks = [("scipy spearmanr loop", *compare(ours, torch.from_numpy(reference)))]

    # dattri: [n_train, n_test] scores, ground truth (values [M, n_test], indices [M, size]).
    try:
        from dattri.metric import lds as dattri_lds
    except ImportError as err:
        print(f"\n*** dattri is NOT importable ({err}); install it with `.venv/bin/pip install dattri==0.3.0`. "
              "Timing tdaeval and scipy only: the dattri target cannot be checked. ***")
        dattri_lds = None
    if dattri_lds is not None:
        scores_t = scores.T.contiguous()
        ground_truth = (outputs, indices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs, _ = dattri_lds(scores_t, ground_truth)
            rows.append(("dattri 0.3.0 metric.lds", measure(lambda: dattri_lds(scores_t, ground_truth),
                                                            repeat=args.repeat, warmup=0)))
        checks.append(("dattri 0.3.0", *compare(ours, theirs)))

    t_ours = median(rows[0][1])
    print(f"\n{'implementation':<30}{'median s':>10}{'min–max s':>16}{'x tdaeval time':>16}")
    for name, times in rows:
        print(f"{name:<30}{median(times):>10.4f}{spread(times):>16}{median(times) / t_ours:>15.1f}x")
    print(f"  (tdaeval's subset-prediction GEMM alone: {median(gemm):.4f} s of the {t_ours:.4f} s)")

    print(f"\n{'values compared with':<24}{'NaN positions equal':>21}{'max abs diff':>14}{'agree':>7}")
    agree = True
    for name, same_nan, diff in checks:
        ok = same_nan and diff < args.atol
        agree &= ok
        print(f"{name:<24}{str(same_nan):>21}{diff:>14.2e}{'yes' if ok else 'NO':>7}")
    print(f"NaN test points in tdaeval's result: {int(torch.isnan(ours).sum())} (expected 1); "
          f"mean LDS {float(ours.nanmean()):.3f}")

    target_met = None
    if dattri_lds is not None:
        speedup = median(rows[-1][1]) / t_ours
        target_met = speedup >= args.target and agree
        print(f"\nTARGET >= {args.target:g}x faster than dattri with the same values: "
              f"{verdict(target_met)} ({speedup:.0f}x, values {'agree' if agree else 'DISAGREE'})")
    else:
        print(f"\nTARGET >= {args.target:g}x faster than dattri: NOT CHECKED (dattri missing)")
    return exit_code(target_met, args.strict, None if agree else "per-test LDS values differ between implementations")


if __name__ == "__main__":
    sys.exit(main())
