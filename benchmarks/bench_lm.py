"""LM ground truth: 50 subset models of the default language-model task trained batched vs a plain PyTorch loop, with the arithmetic floor.

Target (issue #16, "Speed"): ``tdaeval.training.train_models`` trains the LM
ground truth (50 subset models, alpha = 0.5) >= 4x faster on 2 CPU cores than a
plain PyTorch loop of the same recipe.

Task: ``LanguageModelTask()`` defaults (fact corpus of 660 training sentences,
T = 6 positions, vocabulary 237; ``TinyCausalLM`` d_model 32, 1 block, 2 heads,
no dropout; SGD lr 0.5 momentum 0.9, batch 128, 100 epochs). Model *m* sees its
own random half of the training sentences (seeded) and is initialised from
seed *m* (``task.build_model(m)``: the same initial weights on every side).

Sides, each timed in the same process, interleaved round by round after a
warm-up:

* **tdaeval**: ``train_models(task, subsets, seeds)``: all models at once
  (stacked parameters; ``TinyCausalLM.stacked_forward``, one backward, foreach SGD);
* **plain loop**: what a user writes: for each model, ``torch.optim.SGD`` on
  ``task.build_model(seed)``, one ``randperm`` batch order per epoch (the
  generator seeded with the model's seed, as in tdaeval), per-example mean token
  NLL from ``F.cross_entropy(..., reduction="none")``, ``zero_grad`` /
  ``backward`` / ``step``;
* ``--vmap`` adds ``train_models`` with the ``stacked_forward`` hook switched off
  (the generic ``vmap(functional_call)`` path), to show what the hook buys.

**Arithmetic floor** (printed with both sides): the time of the matrix products
alone that one training of all the models must do, run as batched products at
this thread count: per step and model, the forward of every ``nn.Linear``
(``qkv``, attention ``proj``, ``mlp.fc``, ``mlp.proj``, ``head``) and of the two
attention products, and for the backward two products of each (input and
weight gradients), for every batch size a model's epoch has, times the epochs
and models. Everything else a step does (embedding, LayerNorm, GELU, softmax,
the loss's ``log_softmax``, the SGD update) comes on top, so no eager
implementation of this recipe can be faster than the floor, and ``plain loop /
floor`` bounds the speed-up any batching can reach here.

Agreement: every model of the plain loop is compared with the same model of
tdaeval (same data, seed, initialisation, batch order: equal up to float
summation order): max |difference| of the test measurement (answer log-odds).

    .venv/bin/python benchmarks/bench_lm.py [--models 50 --epochs 100 --threads 2 --repeat 1 --vmap]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tdaeval.training as training
from tdaeval.facts import IGNORE_INDEX
from tdaeval.task import TrainRecipe
from tdaeval.tasks.language import LanguageModelTask
from tdaeval.training import train_models

from _common import exit_code, machine, median, spread, verdict


def plain_loop(task: LanguageModelTask, subset: Tensor, seed: int) -> nn.Module:
    """One model, the way a PyTorch user trains it: torch.optim.SGD, randperm batches, per-example mean token NLL."""
    model = task.build_model(seed)
    r = task.recipe
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    x, y = task.train_data.inputs, task.train_data.targets
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(r.epochs):
        order = subset[torch.randperm(len(subset), generator=g)]
        for s in range(math.ceil(len(subset) / r.batch_size)):
            b = order[s * r.batch_size : (s + 1) * r.batch_size]
            targets = y[b]
            logits = model(x[b])  # [b, T, V]
            nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")  # [b, T]
            loss = (nll.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1).clamp_min(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def train_models_vmap(task: LanguageModelTask, subsets: list[Tensor], seeds: list[int]) -> training.StackedModels:
    """train_models with the model's stacked_forward hook ignored (the generic vmap path)."""
    original = training.stacked_forward_of
    training.stacked_forward_of = lambda model: None
    try:
        return train_models(task, subsets, seeds)
    finally:
        training.stacked_forward_of = original


def floor_shapes(task: LanguageModelTask, batch: int) -> list[tuple[int, int, int, int]]:
    """``(batch count, m, k, n)`` of every matrix product of one training step of one model on ``batch`` sentences.

    Forward ``[m, k] @ [k, n]`` per layer, then its two backward products (input gradient ``[m, n] @ [n, k]``,
    weight gradient ``[k, m] @ [m, n]``); attention products are batched over sentences and heads.
    """
    d, length, vocab, heads = task.d_model, task.max_len, task.vocab_size, task.n_heads
    tokens, d_head = batch * length, d // heads
    shapes: list[tuple[int, int, int, int]] = []

    def product(count: int, m: int, k: int, n: int) -> None:
        shapes.extend([(count, m, k, n), (count, m, n, k), (count, k, m, n)])

    for _ in range(task.n_layers):
        product(1, tokens, d, 3 * d)  # qkv
        product(batch * heads, length, d_head, length)  # q k^T
        product(batch * heads, length, length, d_head)  # weights v
        product(1, tokens, d, d)  # attention proj
        product(1, tokens, d, 4 * d)  # mlp.fc
        product(1, tokens, 4 * d, d)  # mlp.proj
    product(1, tokens, d, vocab)  # head
    return shapes


def floor_seconds(task: LanguageModelTask, n_models: int, subset_size: int, repeat: int) -> tuple[float, float]:
    """Seconds and FLOPs of the matrix products of training ``n_models`` models (all at once, as bmm), best of ``repeat``."""
    r = task.recipe
    sizes = [min(r.batch_size, subset_size - s) for s in range(0, subset_size, r.batch_size)]
    total, flops = 0.0, 0.0
    for size in sorted(set(sizes)):
        operands = []
        for count, m, k, n in floor_shapes(task, size):
            a = torch.randn(n_models * count, m, k)
            b = torch.randn(n_models * count, k, n)
            operands.append((a, b, torch.empty(n_models * count, m, n)))
            flops += 2.0 * n_models * count * m * k * n * sizes.count(size) * r.epochs

        def step() -> None:
            for a, b, out in operands:
                torch.bmm(a, b, out=out)

        step()
        best = math.inf
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(10):
                step()
            best = min(best, (time.perf_counter() - start) / 10)
        total += best * sizes.count(size) * r.epochs
    return total, flops


def time_rounds(sides: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Every side once per round, interleaved; timings and the last results."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, object] = {}
    for _ in range(repeat):
        for name, fn in sides.items():
            start = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    return times, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50, help="number of subset models")
    parser.add_argument("--alpha", type=float, default=0.5, help="subset fraction of the training sentences")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's recipe, 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every side")
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds (median reported)")
    parser.add_argument("--loop-models", type=int, default=None,
                        help="train only the first K models with the plain loop and scale its time by models/K (default: all)")
    parser.add_argument("--vmap", action="store_true", help="also time train_models without the stacked_forward hook")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets; model m uses seed m")
    parser.add_argument("--target", type=float, default=4.0, help="required speed-up over the plain loop")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="max |measurement difference| batched vs plain loop, relative to the largest |measurement|, "
                             "counted as agreement (float summation order drifts over 100 epochs at lr 0.5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the speed target is missed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    task = LanguageModelTask()
    if args.epochs is not None:
        r = task.recipe
        task.recipe = TrainRecipe(epochs=args.epochs, batch_size=r.batch_size, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    size = round(args.alpha * task.n_train)
    g = torch.Generator().manual_seed(args.seed)
    subsets = [torch.randperm(task.n_train, generator=g)[:size] for _ in range(args.models)]
    seeds = list(range(args.models))
    k = args.models if args.loop_models is None else min(args.loop_models, args.models)
    m = args.models
    print(f"machine: {machine()}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{m} models, subsets of {size} of {task.n_train} sentences, T {task.max_len}, V {task.vocab_size}, "
          f"d_model {task.d_model}, {task.n_layers} block(s), {task.recipe}")
    if k < m:
        print(f"plain loop: first {k} models trained and timed, time scaled by {m}/{k}")

    train_models(task, subsets[:2], seeds[:2])  # warm-up (allocator, kernels)
    plain_loop(task, subsets[0], seeds[0])
    sides: dict[str, Callable[[], object]] = {
        "tdaeval train_models": lambda: train_models(task, subsets, seeds),
        "plain loop": lambda: [plain_loop(task, s, seed) for s, seed in zip(subsets[:k], seeds[:k])],
    }
    if args.vmap:
        sides["train_models, vmap path"] = lambda: train_models_vmap(task, subsets, seeds)
    times, last = time_rounds(sides, args.repeat)
    times["plain loop"] = [t * m / k for t in times["plain loop"]]
    floor, flops = floor_seconds(task, m, size, repeat=3)

    ours = median(times["tdaeval train_models"])
    plain = median(times["plain loop"])
    print(f"\n{'side':<28}{'median s':>10}{'min–max s':>16}{'ms/model':>10}{'plain / side':>14}{'side / floor':>14}")
    for name, values in times.items():
        t = median(values)
        print(f"{name:<28}{t:>10.2f}{spread(values):>16}{t / m * 1e3:>10.1f}{plain / t:>13.2f}x{t / floor:>13.2f}x")
    print(f"{'floor (matmuls only)':<28}{floor:>10.2f}{'':>16}{floor / m * 1e3:>10.1f}{plain / floor:>13.2f}x{1.0:>13.2f}x"
          f"   ({flops / 1e12:.2f} TFLOP at {flops / floor / 1e9:.0f} GFLOP/s)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    batched = last["tdaeval train_models"].measure(task)[:k]
    looped = torch.stack([task.measure(model) for model in last["plain loop"]])
    diff = float((batched - looped).abs().max())
    scale = float(looped.abs().max())
    print(f"\nagreement over {k} models × {task.n_test} queries: max |Δ answer log-odds| {diff:.2e} (max |value| {scale:.1f})")
    error = None if diff <= args.tolerance * scale else f"batched and plain-loop models differ by {diff:.2e} > {args.tolerance} × {scale:.1f}"
    met = plain / ours >= args.target
    print(f"TARGET batched >= {args.target:g}x faster than the plain loop: {verdict(met)} ({plain / ours:.2f}x; "
          f"the floor allows at most {plain / floor:.2f}x)")
    return exit_code(met, args.strict, error)


if __name__ == "__main__":
    sys.exit(main())
