"""Further training of 100 left-out points x 10 seeds on digits: batched runs vs a Python loop of the same runs (issue #5).

The further-training gold standard (``tdaeval.groundtruth.further``) trains
``S · (k + 1)`` runs from the final model: 10 batch orders, each on the full
data and without each of 100 left-out points (1,010 runs of 5 epochs of SGD
on the digits MLP, ``DigitsTask()`` defaults). tdaeval trains them together
(``further_train``, ``vmap`` over stacked parameters, 256 runs per group, as
``build_further_training_groundtruth`` does); the loop trains the same runs
one at a time with the same function. The loop is timed on ``--loop-runs``
runs and scaled to all of them (each run costs the same); those runs must
give the same curves as in the batched computation.

    .venv/bin/python benchmarks/bench_further_training.py [--loop-runs 40] [--strict]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from tdaeval.groundtruth.further import further_train
from tdaeval.groundtruth.jobs import derive_seed
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model

from _common import exit_code, machine, verdict

TARGET = 8.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--left-out", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-runs", type=int, default=256, help="runs trained together")
    parser.add_argument("--loop-runs", type=int, default=40, help="runs timed in the loop (scaled to all)")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    task = DigitsTask()
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    generator = torch.Generator().manual_seed(0)
    left_out = torch.randperm(task.n_train, generator=generator)[: args.left_out].tolist()
    seeds = [derive_seed("bench-further", s) for s in range(args.seeds)]
    runs = [(xi, None) for xi in seeds] + [(xi, i) for i in left_out for xi in seeds]
    lr, batch = task.recipe.lr, task.recipe.batch_size

    start = time.perf_counter()
    batched = torch.cat([further_train(task, model, runs[s : s + args.max_runs], args.epochs, lr, batch)
                         for s in range(0, len(runs), args.max_runs)])
    t_batched = time.perf_counter() - start

    sample = runs[: args.loop_runs]
    start = time.perf_counter()
    looped = torch.cat([further_train(task, model, [run], args.epochs, lr, batch) for run in sample])
    t_sample = time.perf_counter() - start
    t_loop = t_sample * len(runs) / len(sample)
    diff = float((looped - batched[: len(sample)]).abs().max())

    def plain(order_seed, removed):
        """The same run written as an ordinary PyTorch loop (torch.optim.SGD, model.backward)."""
        member = copy.deepcopy(model).eval()
        optimizer = torch.optim.SGD(member.parameters(), lr=lr)
        for epoch in range(args.epochs):
            gen = torch.Generator().manual_seed(int(derive_seed("further-order", order_seed, epoch)))
            order = torch.randperm(task.n_train, generator=gen)
            if removed is not None:
                order = order[order != removed]
            for s in range(0, len(order), batch):
                b = order[s : s + batch]
                optimizer.zero_grad()
                task.loss(member(task.train_data.inputs[b]), task.train_data.targets[b]).mean().backward()
                optimizer.step()
        with torch.no_grad():
            return task.measure(member)

    start = time.perf_counter()
    plain_final = torch.stack([plain(*run) for run in sample])
    t_plain = (time.perf_counter() - start) * len(runs) / len(sample)
    diff_plain = float((plain_final - batched[: len(sample), -1]).abs().max())

    print(f"machine: {machine()}")
    print(f"digits MLP, {task.n_train} train x {task.n_test} test; {len(runs)} runs = {args.seeds} seeds x "
          f"({args.left_out} left out + full data), {args.epochs} epochs each\n")
    print(f"batched ({args.max_runs} runs per group): {t_batched:8.2f} s")
    print(f"loop, one run at a time:      {t_loop:8.2f} s  (timed on {len(sample)} runs: {t_sample:.2f} s, scaled)")
    print(f"plain PyTorch loop (SGD):     {t_plain:8.2f} s  (same runs, scaled)")
    ratio = t_loop / t_batched
    ratio_plain = t_plain / t_batched
    print(f"speed-up: {ratio:.1f}x over the loop of further_train, {ratio_plain:.1f}x over the plain loop; "
          f"max |difference| on the timed runs: {diff:.1e} (further_train), {diff_plain:.1e} (plain, final epoch)")
    met = min(ratio, ratio_plain) >= TARGET
    print(f"\nTARGET >= {TARGET:g}x: {verdict(met)}")
    return exit_code(met, args.strict, "batched and looped runs differ" if diff > 1e-3 or diff_plain > 1e-3 else None)


if __name__ == "__main__":
    sys.exit(main())
