"""Influence functions by conjugate gradients: tdaeval's ``influence(solver="cg")`` vs dattri's ``IFAttributorCG``.

Target (issue): on the digits MLP (``DigitsTask()`` defaults: 64-64-64-10, 8,970
parameters, 1,400 train x 100 test points, trained with ``train_model``),
tdaeval is >= 5x faster than dattri 0.3.0 at the same damping, with the same
scores after orientation.

"The same scores" is made concrete as the same accuracy of the inverse-HVP:
tdaeval runs its default (block CG, ``tol=1e-6`` on the true residual);
dattri's CG has no stopping test, so it gets the number of iterations N that
tdaeval's row-wise CG (the same algorithm as dattri's) needs to reach that
residual on every test point (``--iterations`` overrides). Both are compared
with a tight reference (row-wise CG to ``tol=1e-9``).

Both sides solve ``(H + λI) x = ∇(-margin)(z)`` for every test point, ``H`` the
Hessian of the mean training loss at the trained model, then take inner
products with the per-example training-loss gradients:

* tdaeval: ``get("influence", solver="cg", damping=λ)`` (block CG, default
  ``tol=1e-6``) → ``[n_test, n_train]``, already divided by ``n_train``.
  Also timed: ``cg_block=False`` (row-wise CG, ``tol=1e-6``) and row-wise CG
  with ``tol=0`` for exactly N iterations, dattri's setting.
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
``--dattri-train-batch B`` hands dattri a training loader in batches of B
(the usual way to call it) instead of one batch: it then re-solves every
test point's inverse-HVP once per training batch.

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

from tdaeval.attributors import get
from tdaeval.attributors.adapters import measurement_badness
from tdaeval.datasets import Data
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model

from _common import exit_code, machine, median, spread, verdict


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
    parser.add_argument("--iterations", type=int, default=None,
                        help="dattri's CG iterations N (default: what tdaeval's row-wise CG needs for tol=1e-6)")
    parser.add_argument("--damping", type=float, default=0.1, help="λ added to the mean-loss Hessian on both sides")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--dattri-test-points", type=int, default=None,
                        help="time dattri on the first k test points and scale by n_test/k (default: all)")
    parser.add_argument("--dattri-train-batch", type=int, default=None,
                        help="dattri's training-loader batch size (default: the whole training set, its fastest "
                             "configuration); dattri re-solves the inverse-HVP for every training batch")
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

    def ours(tol: float = 1e-6, block: bool = True, max_iter: int = 100, counter: list | None = None) -> torch.Tensor:
        attributor = get("influence", solver="cg", damping=args.damping, max_iter=max_iter, tol=tol, cg_block=block)
        attributor.fit(task, model, train)
        if counter is not None:
            hessian = attributor.hessian_

            def counted(vectors):
                counter.append(len(vectors))
                return hessian(vectors)

            attributor.hessian_ = counted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 "did not converge" warnings
            return attributor.attribute(test)

    def dattri(data: Data, no_grad: bool = True) -> torch.Tensor:
        shape, x_dtype, y_dtype = tuple(train.inputs.shape[1:]), train.inputs.dtype, train.targets.dtype
        attribution_task = AttributionTask(
            loss_func=dattri_objective(model, task.loss, shape, x_dtype, y_dtype),
            target_func=dattri_objective(model, measurement_badness(task), shape, x_dtype, y_dtype),
            model=model,
            checkpoints=model.state_dict(),
        )
        attributor = IFAttributorCG(task=attribution_task, max_iter=iterations, regularization=args.damping)
        one_batch = torch.utils.data.DataLoader(train, batch_size=len(train), shuffle=False)
        train_loader = torch.utils.data.DataLoader(train, batch_size=args.dattri_train_batch or len(train), shuffle=False)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            attributor.cache(one_batch)
            scores = attributor.attribute(train_loader, torch.utils.data.DataLoader(data, batch_size=len(data), shuffle=False))
        return scores.detach().T / len(train)

    reference = ours(tol=1e-9, block=False, max_iter=1000)
    rowwise_products: list[int] = []
    ours(block=False, counter=rowwise_products)
    iterations = args.iterations or len(rowwise_products)
    block_products: list[int] = []
    ours(counter=block_products)

    print(f"machine: {machine()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"digits MLP ({n_params} parameters), {task.n_train} train x {task.n_test} test, damping {args.damping}, "
          f"dattri {iterations} CG iterations (tdaeval: block CG {len(block_products)} products, row-wise CG "
          f"{len(rowwise_products)} to tol=1e-6); median of {args.repeat} rounds after 1 warm-up"
          + (f"; dattri timed on {k} test points and scaled x{task.n_test / k:g}" if k != task.n_test else "")
          + (f"; dattri's training loader in batches of {args.dattri_train_batch}" if args.dattri_train_batch else ""))

    # Warm-up (also the scores compared below).
    ours_scores = ours()
    rowwise_scores = ours(block=False)
    fixed_scores = ours(tol=0.0, block=False, max_iter=iterations)
    dattri_scores = dattri(dattri_test)
    if args.dattri_plain:
        dattri(dattri_test, no_grad=False)

    times: dict[str, list[float]] = {
        "tdaeval, block CG (default)": [], "tdaeval, row-wise CG": [], "tdaeval, row-wise, N iterations": [],
        "dattri 0.3.0, N iterations": [],
    }
    if args.dattri_plain:
        times["dattri 0.3.0, autograd on"] = []
    for _ in range(args.repeat):
        times["tdaeval, block CG (default)"].append(timed(lambda: ours())[1])
        times["tdaeval, row-wise CG"].append(timed(lambda: ours(block=False))[1])
        times["tdaeval, row-wise, N iterations"].append(timed(lambda: ours(tol=0.0, block=False, max_iter=iterations))[1])
        times["dattri 0.3.0, N iterations"].append(timed(lambda: dattri(dattri_test))[1] * task.n_test / k)
        if args.dattri_plain:
            times["dattri 0.3.0, autograd on"].append(timed(lambda: dattri(dattri_test, no_grad=False))[1] * task.n_test / k)

    t_ours = median(times["tdaeval, block CG (default)"])
    print(f"\n{'implementation':<36}{'median s':>10}{'min–max s':>16}{'x tdaeval':>11}")
    for name, ts in times.items():
        print(f"{name:<36}{median(ts):>10.3f}{spread(ts):>16}{median(ts) / t_ours:>10.1f}x")

    nan_rows = int((~torch.isfinite(dattri_scores).all(1)).sum())
    print("\nagreement with the reference (row-wise CG to tol=1e-9), dattri transposed and divided by n_train:")
    rows = {"tdaeval block CG (default)": ours_scores, "tdaeval row-wise CG": rowwise_scores,
            "tdaeval row-wise, N iterations": fixed_scores}
    for name, scores in rows.items():
        pearson, rel = agreement(scores, reference)
        print(f"  {name:<32} Pearson {pearson:.8f}, max |diff| / max |score| {rel:.2e}")
    pearson, rel = agreement(dattri_scores, reference[:k])
    print(f"  {'dattri 0.3.0, N iterations':<32} Pearson {pearson:.8f}, max |diff| / max |score| {rel:.2e}"
          f" (on {k - nan_rows} of {k} test points)")
    if nan_rows:
        print(f"  dattri returned NaN for {nan_rows} test point(s) (its float32 CG residual underflowed)")
    ours_pearson, ours_rel = agreement(ours_scores, reference)
    agree = pearson > 0.9999 and rel < 1e-3 and ours_pearson > 0.9999 and ours_rel < 1e-3

    speedup = median(times["dattri 0.3.0, N iterations"]) / t_ours
    best = min(times["dattri 0.3.0, N iterations"]) / min(times["tdaeval, block CG (default)"])
    met = speedup >= args.target and agree
    print(f"\nTARGET >= {args.target:g}x faster than dattri at the same accuracy, same scores: "
          f"{verdict(met)} ({speedup:.1f}x of medians, {best:.1f}x of minimums; scores "
          f"{'agree' if agree else 'DISAGREE'})")
    same_algorithm = median(times["dattri 0.3.0, N iterations"]) / median(times["tdaeval, row-wise, N iterations"])
    print(f"(the same algorithm, row-wise CG for exactly N iterations on both sides: {same_algorithm:.1f}x of medians)")
    return exit_code(met, args.strict, None if agree else "influence scores differ between tdaeval and dattri")


if __name__ == "__main__":
    sys.exit(main())
