"""Training 32 digits-MLP subset models at once vs one at a time, same recipe, one run.

Target (issue #2): ``tdaeval.training.train_models`` (stacked parameters,
``torch.func`` vmap) is >= 8x faster on 2 CPU cores than a plain PyTorch loop
training the models one at a time with the same recipe (DigitsTask defaults:
MLP 64-64-10, dropout 0.1, SGD lr 0.05 momentum 0.9, batch 64, 20 epochs;
subsets of 700 of the 1,400 training points).

    python benchmarks/bench_training.py [--models 32 --repeat 3]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import nn

from _common import machine, timeit

from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model, train_models


def plain_loop(task: DigitsTask, subset: torch.Tensor, seed: int) -> nn.Module:
    """What a user would write: nn.Sequential with nn.Dropout, torch.optim.SGD, randperm batches."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, task.hidden), nn.ReLU(), nn.Dropout(task.dropout),
        nn.Linear(task.hidden, task.hidden), nn.ReLU(), nn.Dropout(task.dropout),
        nn.Linear(task.hidden, 10),
    )
    r = task.recipe
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    x, y = task.train_data.inputs, task.train_data.targets
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(r.epochs):
        order = subset[torch.randperm(len(subset), generator=g)]
        for s in range(math.ceil(len(subset) / r.batch_size)):
            b = order[s * r.batch_size : (s + 1) * r.batch_size]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(task: DigitsTask, margins: torch.Tensor) -> float:
    return float((margins > 0).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    task = DigitsTask()
    g = torch.Generator().manual_seed(0)
    subsets = [torch.randperm(task.n_train, generator=g)[: task.n_train // 2] for _ in range(args.models)]
    seeds = list(range(args.models))
    print(f"machine: {machine()}")
    print(f"{args.models} models, subsets of {len(subsets[0])}, recipe {task.recipe}")

    results = {}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        t_batched = timeit(lambda: train_models(task, subsets, seeds), repeat=args.repeat)
        t_plain = timeit(lambda: [plain_loop(task, s, seed) for s, seed in zip(subsets, seeds)], repeat=args.repeat)
        t_ours_seq = timeit(
            lambda: [train_model(task, task.build_model(seed), s, seed) for s, seed in zip(subsets, seeds)],
            repeat=1,
        )
        results[flush] = (t_batched, t_plain, t_ours_seq)
    torch.set_flush_denormal(False)

    batched_acc = accuracy(task, train_models(task, subsets, seeds).measure(task))
    plain_acc = sum(accuracy(task, task.measure(plain_loop(task, s, seed))) for s, seed in zip(subsets, seeds)) / len(seeds)

    print(f"\n{'flush denormals':<17}{'batched s':>10}{'plain loop s':>14}{'train_model s':>15}{'plain/batched':>15}{'train_model/batched':>21}")
    for flush, (tb, tp, ts) in results.items():
        print(f"{str(flush):<17}{tb:>10.2f}{tp:>14.2f}{ts:>15.2f}{tp / tb:>14.1f}x{ts / tb:>20.1f}x")
    print(f"\nper model: batched {results[False][0] / args.models * 1e3:.0f} ms, plain loop {results[False][1] / args.models * 1e3:.0f} ms")
    print(f"mean test accuracy: batched {batched_acc:.3f}, plain loop {plain_acc:.3f}")
    best = max(tp / tb for tb, tp, _ in results.values())
    default = results[False][1] / results[False][0]
    print(f"target >= 8x vs the plain loop: {'met' if default >= 8 else 'NOT met'} at default settings ({default:.1f}x; best {best:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
