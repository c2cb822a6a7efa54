"""Training 32 digits-MLP subset models at once vs one at a time, same recipe, one run.

Target (issue #2): ``tdaeval.training.train_models`` (stacked parameters,
``torch.func.vmap``) is >= 8x faster on 2 CPU cores than a plain PyTorch loop
that trains the models one at a time with the same recipe and the same subsets.

Recipe (``DigitsTask()`` defaults, read from the task so both sides agree): MLP
64-64-64-10 with ReLU and dropout 0.1 after each hidden layer, SGD lr 0.05
momentum 0.9, batch 64, 20 epochs, one ``randperm`` batch order per epoch;
each model sees its own random subset of 700 of the 1,400 training points and
is initialised from its own seed (the same initial weights on every side).

Three sides, timed interleaved (one run of each per round) after one warm-up
round, the median of ``--repeat`` rounds reported:

* ``train_models``: all models at once (tdaeval);
* plain loop: the loop below, one model at a time (``nn.Sequential`` with
  ordinary ``nn.Dropout``, ``torch.optim.SGD``, ``F.cross_entropy``);
* ``train_model``: tdaeval's own one-model loop, one model at a time.

The whole comparison runs with ``torch.set_flush_denormal`` off and on (the
same setting for every side). ``--profile`` adds a ``torch.profiler`` summary
of one ``train_models`` call.

    .venv/bin/python benchmarks/bench_training.py [--models 32 --repeat 5 --flush both --profile]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model, train_models

from _common import exit_code, machine, median, spread, verdict


def plain_loop(task: DigitsTask, subset: torch.Tensor, seed: int) -> nn.Module:
    """What a user would write: nn.Sequential with nn.Dropout, torch.optim.SGD, randperm batches."""
    torch.manual_seed(seed)  # the same initial weights as task.build_model(seed)
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


def mean_accuracy(task: DigitsTask, margins: torch.Tensor) -> float:
    """Mean test accuracy over models from margins ``[M, n_test]`` (margin > 0 means correct)."""
    return float((margins > 0).float().mean())


def time_rounds(sides: dict[str, Callable[[], object]], repeat: int, warmup: int) -> tuple[dict[str, list[float]], dict]:
    """Run every side once per round, interleaved; return the timings of the timed rounds and the last results."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, object] = {}
    for round_ in range(warmup + repeat):
        for name, fn in sides.items():
            start = time.perf_counter()
            last[name] = fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times, last


def profile_train_models(task: DigitsTask, subsets: list[torch.Tensor], seeds: list[int], rows: int) -> None:
    """torch.profiler summary of one train_models call: top ops by self CPU time and a grouping by kind."""
    from torch.profiler import ProfilerActivity, profile

    train_models(task, subsets, seeds)  # warm
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_models(task, subsets, seeds)
    wall = time.perf_counter() - start
    averages = prof.key_averages()
    print(f"\ntorch.profiler, one train_models call ({len(seeds)} models; {wall:.2f} s wall under the profiler):")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    groups = {
        "matmul (bmm/mm/addmm)": ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm"),
        "elementwise (mul/add/relu/ge/threshold_backward/clamp/...)": (
            "aten::mul", "aten::add", "aten::add_", "aten::threshold_backward", "aten::clamp_min", "aten::ge",
            "aten::relu", "aten::sub", "aten::div", "aten::mul_", "aten::neg", "aten::where", "aten::fill_",
            "aten::_foreach_add_", "aten::_foreach_mul_", "aten::sum",
        ),
        "cross-entropy (log_softmax, nll_loss)": (
            "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
            "aten::nll_loss_backward",
        ),
        "gather rows / copies / dtype casts": ("aten::index", "aten::copy_", "aten::_to_copy", "aten::gather"),
    }
    total = sum(e.self_cpu_time_total for e in averages)
    print(f"{'self CPU time by kind':<62}{'ms':>8}{'share':>8}")
    seen = 0.0
    for label, names in groups.items():
        t = sum(e.self_cpu_time_total for e in averages if e.key in names)
        seen += t
        print(f"{label:<62}{t / 1e3:>8.0f}{t / total:>8.0%}")
    print(f"{'everything else (views, dispatch, vmap, autograd bookkeeping, randperm)':<62}"
          f"{(total - seen) / 1e3:>8.0f}{(total - seen) / total:>8.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32, help="number of subset models")
    parser.add_argument("--subset-size", type=int, default=700, help="training points per subset (of 1,400)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--flush", choices=["both", "off", "on"], default="both",
                        help="torch.set_flush_denormal setting(s), applied to every side")
    parser.add_argument("--no-train-model", action="store_true", help="skip the tdaeval train_model side")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler summary of train_models")
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets; model m uses seed m")
    parser.add_argument("--target", type=float, default=8.0, help="required speed-up over the plain loop")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the speed target is missed")
    args = parser.parse_args()

    task = DigitsTask()
    g = torch.Generator().manual_seed(args.seed)
    subsets = [torch.randperm(task.n_train, generator=g)[: args.subset_size] for _ in range(args.models)]
    seeds = list(range(args.models))
    m = args.models
    print(f"machine: {machine()}")
    print(f"{m} models, subsets of {args.subset_size} of {task.n_train}, MLP 64-{task.hidden}-{task.hidden}-10, "
          f"dropout {task.dropout}, {task.recipe}")
    print(f"{args.warmup} warm-up round, then {args.repeat} timed rounds, sides interleaved; median (min–max) reported")

    sides: dict[str, Callable[[], object]] = {
        "train_models (batched)": lambda: train_models(task, subsets, seeds),
        "plain loop, one at a time": lambda: [plain_loop(task, s, seed) for s, seed in zip(subsets, seeds)],
    }
    if not args.no_train_model:
        sides["train_model, one at a time"] = lambda: [
            train_model(task, task.build_model(seed), s, seed).model for s, seed in zip(subsets, seeds)
        ]

    settings = {"both": [False, True], "off": [False], "on": [True]}[args.flush]
    results: dict[bool, dict[str, list[float]]] = {}
    last: dict[str, object] = {}
    for flush in settings:
        supported = torch.set_flush_denormal(flush)
        if flush and not supported:
            print("torch.set_flush_denormal(True) is not supported on this CPU; skipping")
            continue
        results[flush], last = time_rounds(sides, args.repeat, args.warmup)
    torch.set_flush_denormal(False)

    names = list(sides)
    batched = names[0]
    print(f"\n{'flush':<7}{'side':<29}{'median s':>10}{'min–max s':>14}{'ms/model':>10}{'x faster':>10}")
    for flush, times in results.items():
        t_batched = median(times[batched])
        for name in names:
            t = median(times[name])
            ratio = "" if name == batched else f"{t / t_batched:.1f}x"
            print(f"{'on' if flush else 'off':<7}{name:<29}{t:>10.2f}{spread(times[name]):>14}{t / m * 1e3:>10.1f}"
                  f"{ratio:>10}")
        per_round = [p / b for p, b in zip(times[names[1]], times[batched])]
        print(f"{'':<7}plain / batched, round by round: {', '.join(f'{r:.1f}' for r in per_round)}")

    # Quality: the models of the last round (flush setting as last run).
    margins = {
        batched: last[batched].measure(task),
        names[1]: torch.stack([task.measure(model) for model in last[names[1]]]),
    }
    if len(names) > 2:
        margins[names[2]] = torch.stack([task.measure(model) for model in last[names[2]]])
    print(f"\nmean test accuracy over the {m} models ({task.n_test} test points):")
    for name, values in margins.items():
        print(f"  {name:<29}{mean_accuracy(task, values):.3f}   (mean margin {float(values.mean()):.3f})")
    acc_gap = abs(mean_accuracy(task, margins[batched]) - mean_accuracy(task, margins[names[1]]))
    similar = acc_gap <= 0.02
    print(f"  batched vs plain loop: {'similar' if similar else 'NOT similar'} (gap {acc_gap:.3f}; "
          "dropout masks differ, so the models differ)")
    if len(names) > 2:
        diff = float((margins[batched] - margins[names[2]]).abs().max())
        print(f"  batched vs train_model (same dropout masks by design): max |margin difference| {diff:.2e}")

    if args.profile:
        profile_train_models(task, subsets, seeds, args.profile_rows)

    print()
    met_all = True
    for flush, times in results.items():
        ratio = median(times[names[1]]) / median(times[batched])
        met = ratio >= args.target
        met_all &= met
        print(f"TARGET >= {args.target:g}x faster than the plain loop, flush_denormal {'on' if flush else 'off'}: "
              f"{verdict(met)} ({ratio:.1f}x median)")
    return exit_code(met_all, args.strict, None if similar else "batched models do not reach the plain loop's accuracy")


if __name__ == "__main__":
    sys.exit(main())
