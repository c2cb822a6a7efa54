"""Tail-patch for several attributors: the batched one-step effect matrix + lookups vs Quanda's copy-and-step loop.

Target (issue #16, item 5): tail-patch for every attributor of a suite >= 20x
faster than the copy-the-model-and-step loop on the same queries and k.

tdaeval's side: the whole one-step effect matrix ``Δ [n_test, n_train]``
(:func:`tdaeval.groundtruth.tail_patch.one_step_effects`, no store: computed
from scratch) plus ``TailPatch.compute`` (top-k lookup, ceiling, bootstrap CI)
for each attributor. The loop's side is Quanda's ``TailPatchMetric`` algorithm
written out: for each attributor, each query and each of its top-k training
examples, deep-copy the model, build a fresh ``torch.optim`` optimizer, take
one step on that example's loss and measure the query; per query the mean of
``f_new − f_0``. Attribution scores are computed once, outside both timings.
The matrix is timed as the median of 3 runs after a warm-up, each lookup and
the loop (seconds to minutes) once.
Both sides must give the same per-query values (checked; exit 2 otherwise).

    python benchmarks/bench_tail_patch.py                          # digits logistic regression
    python benchmarks/bench_tail_patch.py --task language_model    # the LM task (issue #16), default corpus
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time

import torch

from tdaeval.attributors import get
from tdaeval.groundtruth.tail_patch import OneStepEffectTruth, one_step_effects, one_step_objective
from tdaeval.metrics.base import as_score_matrix
from tdaeval.metrics.tail_patch import TailPatch
from tdaeval.suites import train_reference
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask, get_task

from _common import exit_code, machine, measure, median, verdict

TARGET = 20.0


def make_task(name: str, epochs: int | None):
    if name == "digits-logreg":
        return DigitsTask(model="logreg", n_train=1400, n_test=100, recipe=TrainRecipe(epochs=epochs or 5, batch_size=64, lr=0.05))
    task = get_task(name)
    if epochs is not None:
        task = get_task(name, recipe=dataclasses.replace(task.recipe, epochs=epochs))
    return task


def copy_and_step(task, model, scores: torch.Tensor, k: int, eta: float, optimizer: str, delta: str, weight_decay: float) -> torch.Tensor:
    """Quanda's algorithm: ``[n_test]`` mean over each query's top-k of ``f(q; stepped copy) − f(q; θ)``."""
    f, _ = one_step_objective(task, delta)
    model = model.eval()
    test, train = task.test_data, task.train_data
    out = torch.zeros(task.n_test, dtype=torch.float64)
    top = scores.topk(k, dim=1).indices
    for q in range(task.n_test):
        x_q, y_q = test.inputs[q : q + 1], test.targets[q : q + 1]
        with torch.no_grad():
            before = f(model(x_q), y_q)
        total = 0.0
        for j in top[q].tolist():
            stepped = copy.deepcopy(model)
            params = [p for p in stepped.parameters() if p.requires_grad]
            if optimizer == "sgd":
                opt = torch.optim.SGD(params, lr=eta, weight_decay=weight_decay)
            elif optimizer == "adam":
                opt = torch.optim.Adam(params, lr=eta, weight_decay=weight_decay)
            else:
                opt = torch.optim.AdamW(params, lr=eta, weight_decay=weight_decay)
            opt.zero_grad()
            task.loss(stepped(train.inputs[j : j + 1]), train.targets[j : j + 1]).sum().backward()
            opt.step()
            with torch.no_grad():
                total += float(f(stepped(x_q), y_q) - before)
        out[q] = total / k
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits-logreg", help="digits-logreg (default) or a registered task name, e.g. language_model")
    parser.add_argument("--attributors", default="random,grad_dot,grad_cos,tracin,similarity")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--eta", type=float, default=None, help="default: the recipe's lr / 100")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    parser.add_argument("--delta", default="measurement", choices=("measurement", "logprob", "prob"))
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of the reference model (default: the task's)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is not met")
    args = parser.parse_args()

    torch.manual_seed(0)
    task = make_task(args.task, args.epochs)
    model, checkpoints = train_reference(task, seed=0, n_checkpoints=3)
    metric = TailPatch(k=args.k, eta=args.eta, optimizer=args.optimizer, delta=args.delta, weight_decay=args.weight_decay,
                       chunk_size=args.chunk_size)
    spec = metric.spec_for(task)
    scores = {}
    for name in args.attributors.split(","):
        attributor = get(name).fit(task, model, task.train_data, checkpoints=checkpoints)
        scores[name] = as_score_matrix(attributor.attribute(task.test_data), name).float()

    effects = one_step_effects(task, model, spec, chunk_size=args.chunk_size)  # warm-up, and the matrix the lookups read
    t_matrix = median(measure(lambda: one_step_effects(task, model, spec, chunk_size=args.chunk_size), repeat=3, warmup=0))
    _, higher = one_step_objective(task, spec.delta)
    truth = OneStepEffectTruth(effects, higher, spec)
    results, t_lookup = {}, {}
    for name, s in scores.items():
        start = time.perf_counter()
        results[name] = metric.compute(s, truth)
        t_lookup[name] = time.perf_counter() - start
    t_fast = t_matrix + sum(t_lookup.values())

    loop, t_loop = {}, {}
    for name, s in scores.items():
        start = time.perf_counter()
        loop[name] = copy_and_step(task, model, s, args.k, spec.eta, spec.optimizer, spec.delta, spec.weight_decay)
        t_loop[name] = time.perf_counter() - start
    t_slow = sum(t_loop.values())

    error = None
    sign = 1.0 if higher else -1.0
    for name in scores:
        fast_values = results[name].per_example
        scale = float(effects.abs().max())
        diff = float((fast_values - sign * loop[name]).abs().max())
        if diff > 1e-3 * scale + 1e-6:
            error = f"{name}: batched and copy-and-step tail-patch differ by {diff:.3g} (|Δ| up to {scale:.3g})"

    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"task {args.task}: {task.n_train} train x {task.n_test} test, {n_params} parameters; k={args.k}, eta={spec.eta:g} "
          f"({spec.optimizer}, delta={spec.delta})\n")
    print(f"{'attributor':<14}{'tail-patch':>12}{'share of ceiling':>18}{'loop s':>10}{'lookup ms':>11}")
    for name in scores:
        r = results[name]
        share = r.provenance["share_of_ceiling"]
        print(f"{name:<14}{r.value:>12.4g}{(share if share is not None else float('nan')):>18.3f}{t_loop[name]:>10.2f}"
              f"{t_lookup[name] * 1e3:>11.1f}")
    ceiling, chance = results[next(iter(scores))].provenance["ceiling"], results[next(iter(scores))].provenance["random_expectation"]
    print(f"ceiling (top-k of Δ) {ceiling:.4g}; random expectation {chance:.4g}\n")
    print(f"batched Δ matrix ({task.n_test * task.n_train} pairs): {t_matrix:.2f} s; lookups: {sum(t_lookup.values()):.3f} s; "
          f"total {t_fast:.2f} s")
    print(f"copy-and-step loop ({len(scores)} attributors x {task.n_test} queries x k={args.k} copies): {t_slow:.2f} s")
    ratio = t_slow / t_fast
    met = ratio >= TARGET
    print(f"\nTARGET >= {TARGET:g}x faster: {verdict(met)} ({ratio:.1f}x); same per-query values: {'yes' if error is None else 'NO'}")
    return exit_code(met, args.strict, error)


if __name__ == "__main__":
    sys.exit(main())
