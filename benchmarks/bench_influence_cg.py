"""Influence functions by conjugate gradients: tdaeval's ``influence(solver="cg")`` vs dattri's ``IFAttributorCG``.

Target (issue): on the digits MLP (``DigitsTask()`` defaults: 64-64-64-10, 8,970
parameters, 1,400 train x 100 test points, trained with ``train_model``),
tdaeval is >= 5x faster than dattri 0.3.0 at the same damping and the same
number of CG iterations, with the same scores after orientation.

Both sides solve ``(H + λI) x = ∇(-margin)(z)`` for every test point, ``H`` the
Hessian of the mean training loss at the trained model, then take inner
products with the per-example training-loss gradients:

* tdaeval: ``get("influence", solver="cg", damping=λ, max_iter=N, tol=0)``
  (``tol=0``: no early stop, N iterations like dattri; a row stops only if it
  meets non-positive curvature) → ``[n_test, n_train]``, already divided by
  ``n_train``. The default ``tol=1e-6`` is timed too (it stops at convergence).
* dattri: ``IFAttributorCG(task, max_iter=N, regularization=λ)`` on an
  ``AttributionTask`` whose ``loss_func`` is the mean cross-entropy and whose
  ``target_func`` is the mean ``-margin`` (the functions the ``dattri.influence``
  adapter builds), cached on the whole training set as one batch and called
  with one training batch and one test batch — dattri's fastest configuration:
  it re-solves the inverse-HVP for every (train batch, test batch) pair.
  ``[n_train, n_test]``, transposed and divided by ``n_train`` for comparison.
  It runs in the model's precision, float32 (its CG has no stopping test; rows
  whose recursive residual underflows become NaN and are reported), and under
  ``torch.no_grad()``: its ``torch.func`` transforms ignore that, but without
  it every CG iteration stays on an autograd graph hanging off the model's
  parameters (memory grows with the iterations: about 14 GB at 50 iterations
  here, killed for memory at 100 on a 23 GB machine, and several times slower).
  ``--dattri-plain`` times that plain call as well.

``fit`` + ``attribute`` are timed for both (fit holds the Hessian setup for
tdaeval, ``cache`` for dattri), one warm-up, then ``--repeat`` rounds with the
two sides interleaved; the median is reported. ``--dattri-test-points k`` times
dattri on the first k test points only and scales its time by ``n_test / k``
(CG is vmapped over test points, so its cost is linear in them).

    .venv/bin/python benchmarks/bench_influence_cg.py [--iterations 50 --damping 0.1 --repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings

import torch

from _common import machine, median, spread

from tdaeval.attributors import get
from tdaeval.attributors.adapters import measurement_badness
from tdaeval.datasets import Data
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def agreement(theirs: torch.Tensor, ours: torch.Tensor) -> tuple[float, float]:
    """(Pearson over all entries, max |theirs - ours| / max |ours|) on the rows where ``theirs`` is finite."""
    rows = torch.isfinite(theirs).all(1)
    a, b = theirs[rows].double().flatten(), ours[rows].double().flatten()
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return pearson, float((a - b).abs().max() / b.abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50, help="CG iterations N on both sides")
    parser.add_argument("--damping", type=float, default=0.1, help="λ added to the mean-loss Hessian on both sides")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--dattri-test-points", type=int, default=None,
                        help="time dattri on the first k test points and scale by n_test/k (default: all)")
    parser.add_argument("--dattri-plain", action="store_true",
                        help="also time dattri called without torch.no_grad() (as in its examples; slower, "
                             "memory grows with the iterations)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 is robust to other processes on the machine)")
    parser.add_argument("--target", type=float, default=5.0, help="required speed-up over dattri")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the speed target is missed")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        from dattri.algorithm import IFAttributorCG
        from dattri.task import AttributionTask
    except ImportError as err:
        print(f"dattri is NOT importable ({err}); install it with `.venv/bin/pip install dattri==0.3.0`.")
        return 2
    from tdaeval.attributors.adapters.dattri import dattri_objective

    task = DigitsTask()
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), seed=0).model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    train, test = task.train_data, task.test_data
    k = args.dattri_test_points or task.n_test
    dattri_test = test.subset(torch.arange(k))

    def ours(tol: float) -> torch.Tensor:
        attributor = get("influence", solver="cg", damping=args.damping, max_iter=args.iterations, tol=tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 "did not converge" warnings
            return attributor.fit(task, model, train).attribute(test)

    def dattri(data: Data, no_grad: bool = True) -> torch.Tensor:
        shape, x_dtype, y_dtype = tuple(train.inputs.shape[1:]), train.inputs.dtype, train.targets.dtype
        attribution_task = AttributionTask(
            loss_func=dattri_objective(model, task.loss, shape, x_dtype, y_dtype),
            target_func=dattri_objective(model, measurement_badness(task), shape, x_dtype, y_dtype),
            model=model,
            checkpoints=model.state_dict(),
        )
        attributor = IFAttributorCG(task=attribution_task, max_iter=args.iterations, regularization=args.damping)
        one_batch = torch.utils.data.DataLoader(train, batch_size=len(train), shuffle=False)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            attributor.cache(one_batch)
            scores = attributor.attribute(one_batch, torch.utils.data.DataLoader(data, batch_size=len(data), shuffle=False))
        return scores.detach().T / len(train)

    print(f"machine: {machine()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"digits MLP ({n_params} parameters), {task.n_train} train x {task.n_test} test, damping {args.damping}, "
          f"{args.iterations} CG iterations; median of {args.repeat} rounds after 1 warm-up"
          + (f"; dattri timed on {k} test points and scaled x{task.n_test / k:g}" if k != task.n_test else ""))

    # Warm-up (also the scores compared below).
    ours_scores = ours(0.0)
    ours_tol_scores = ours(1e-6)
    dattri_scores = dattri(dattri_test)
    if args.dattri_plain:
        dattri(dattri_test, no_grad=False)

    times: dict[str, list[float]] = {"tdaeval, tol=0 (N iterations)": [], "tdaeval, tol=1e-6 (default)": [], "dattri 0.3.0": []}
    if args.dattri_plain:
        times["dattri 0.3.0, autograd on"] = []
    for _ in range(args.repeat):
        times["tdaeval, tol=0 (N iterations)"].append(timed(lambda: ours(0.0))[1])
        times["tdaeval, tol=1e-6 (default)"].append(timed(lambda: ours(1e-6))[1])
        times["dattri 0.3.0"].append(timed(lambda: dattri(dattri_test))[1] * task.n_test / k)
        if args.dattri_plain:
            times["dattri 0.3.0, autograd on"].append(timed(lambda: dattri(dattri_test, no_grad=False))[1] * task.n_test / k)

    t_ours = median(times["tdaeval, tol=0 (N iterations)"])
    print(f"\n{'implementation':<34}{'median s':>10}{'min–max s':>16}{'x tdaeval':>11}")
    for name, ts in times.items():
        print(f"{name:<34}{median(ts):>10.3f}{spread(ts):>16}{median(ts) / t_ours:>10.1f}x")

    nan_rows = int((~torch.isfinite(dattri_scores).all(1)).sum())
    pearson, rel = agreement(dattri_scores, ours_scores[:k])
    pearson_tol, rel_tol = agreement(ours_tol_scores, ours_scores)
    print(f"\nagreement (after transposing dattri and dividing by n_train), on {k - nan_rows} of {k} test points:")
    print(f"  dattri vs tdaeval tol=0:        Pearson {pearson:.8f}, max |diff| / max |score| {rel:.2e}")
    print(f"  tdaeval tol=1e-6 vs tol=0:      Pearson {pearson_tol:.8f}, max |diff| / max |score| {rel_tol:.2e}")
    if nan_rows:
        print(f"  dattri returned NaN for {nan_rows} test point(s) (its float32 CG residual underflowed)")
    agree = pearson > 0.9999 and rel < 1e-3

    speedup = median(times["dattri 0.3.0"]) / t_ours
    best = min(times["dattri 0.3.0"]) / min(times["tdaeval, tol=0 (N iterations)"])
    default = median(times["dattri 0.3.0"]) / median(times["tdaeval, tol=1e-6 (default)"])
    met = speedup >= args.target and agree
    print(f"\nTARGET >= {args.target:g}x faster than dattri at the same iteration count, same scores: "
          f"{'MET' if met else 'NOT MET'} ({speedup:.1f}x of medians, {best:.1f}x of minimums; scores "
          f"{'agree' if agree else 'DISAGREE'})")
    print(f"(tdaeval with its default tol=1e-6, which stops at convergence: {default:.1f}x of medians)")
    if not agree:
        print("ERROR: influence scores differ between tdaeval and dattri", file=sys.stderr)
        return 2
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
