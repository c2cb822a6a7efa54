"""Ensemble members computed batched vs a Python loop over members (issue #4), K = 16 on digits.

What an ensemble computes per member, side by side:

* naive members: 16 digits MLPs trained from scratch on all 1,400 training
  points (``DigitsTask()`` recipe, 20 epochs) with ``train_models`` (stacked
  parameters + ``vmap``) vs a loop of ``train_model`` calls; same seeds, and
  the test margins must agree.
* LoRA members: 16 rank-4 adapters on every layer of one trained MLP,
  fine-tuned for 100 SGD steps with ``finetune_adapters`` on all 16 at once vs
  one at a time (the same function with one model); the adapters must agree.
* serving: ``grad_dot`` over the 16 naive members (1,400 x 100 pairs each),
  all at once (``MemberStack``: stacked parameters, ``vmap``, layer-wise
  factors; what the ensembles do for ``grad_dot`` / ``grad_cos``) vs one
  ``grad_dot`` after the other; the mean scores must agree.

Timings are medians after a warm-up. Usage::

    .venv/bin/python benchmarks/bench_ensembles.py [--members 16] [--repeat 3] [--device cpu] [--strict]

``--device cuda`` runs the same comparison on a GPU.
"""

from __future__ import annotations

import argparse
import sys

import torch

from tdaeval.attributors import get
from tdaeval.attributors._members import MemberStack, stack_members
from tdaeval.attributors.ensembles import finetune_adapters
from tdaeval.attributors.gradient import _measurement_objective
from tdaeval.nn import add_lora, lora_parameters
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model, train_models

from _common import exit_code, machine, measure, median, verdict

TARGET = 4.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16, help="K, members per ensemble")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--steps", type=int, default=100, help="LoRA fine-tuning steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    task = DigitsTask()
    k, device = args.members, args.device
    everything = torch.arange(task.n_train)
    seeds = list(range(100, 100 + k))
    rows = []

    # --- naive members: training ------------------------------------------------------------------------------
    def batched_training():
        return train_models(task, [everything] * k, seeds, device=device)

    def looped_training():
        return [train_model(task, task.build_model(s), everything, s, device=device).model for s in seeds]

    stacked, looped = batched_training(), looped_training()
    test = task.test_data.to(device)
    margins_batched = torch.stack([task.measure(stacked.model(i), test) for i in range(k)])
    margins_looped = torch.stack([task.measure(m, test) for m in looped])
    agree_training = float((margins_batched - margins_looped).abs().max())
    t_batched = median(measure(batched_training, repeat=args.repeat))
    t_looped = median(measure(looped_training, repeat=args.repeat))
    rows.append(("naive members: training", t_batched, t_looped, f"max |margin diff| {agree_training:.1e}"))

    # --- LoRA members: fine-tuning ---------------------------------------------------------------------------
    base = looped[0].eval()
    recipe = task.recipe
    data = task.train_data.to(device)

    def batched_lora():
        models = [add_lora(base, 4, s) for s in seeds]
        return finetune_adapters(task, models, data, seeds, args.steps, recipe.lr, recipe.batch_size, recipe.momentum)

    def looped_lora():
        return [
            finetune_adapters(task, [add_lora(base, 4, s)], data, [s], args.steps, recipe.lr, recipe.batch_size, recipe.momentum)[0]
            for s in seeds
        ]

    together, alone = batched_lora(), looped_lora()
    agree_lora = max(
        float((lora_parameters(a)[name] - lora_parameters(b)[name]).detach().abs().max())
        for a, b in zip(together, alone)
        for name in lora_parameters(a)
    )
    t_lora_batched = median(measure(batched_lora, repeat=args.repeat))
    t_lora_looped = median(measure(looped_lora, repeat=args.repeat))
    rows.append((f"LoRA members: {args.steps} fine-tuning steps", t_lora_batched, t_lora_looped, f"max |adapter diff| {agree_lora:.1e}"))

    # --- serving: grad_dot over the members ----------------------------------------------------------------
    members = [stacked.model(i).eval() for i in range(k)]
    objective = _measurement_objective(task)

    def serve_batched():
        stack = stack_members(members, task.train_data.inputs[:1])
        train_factors = stack.factors(task.loss, task.train_data)
        return MemberStack.mean_products(stack.factors(objective, task.test_data), train_factors)

    def serve_looped():
        total = 0
        for model in members:
            total = total + get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
        return total / k

    expected = serve_looped()
    agree_serving = float((serve_batched() - expected).abs().max() / expected.abs().max())
    t_serve_batched = median(measure(serve_batched, repeat=args.repeat))
    t_serve_looped = median(measure(serve_looped, repeat=args.repeat))
    rows.append(("serving: grad_dot, 1,400 x 100 pairs", t_serve_batched, t_serve_looped, f"max rel. score diff {agree_serving:.1e}"))

    print(f"machine: {machine()}; device {device}")
    print(f"digits MLP, {task.n_train} train x {task.n_test} test, K = {k} members; median of {args.repeat} rounds\n")
    print(f"{'computation':<40}{'batched s':>11}{'loop s':>10}{'speed-up':>10}   check")
    met = True
    for name, batched, loop, check in rows:
        ratio = loop / batched
        met &= ratio >= TARGET
        print(f"{name:<40}{batched:>11.3f}{loop:>10.3f}{ratio:>9.1f}x   {check}")
    print(f"\nTARGET >= {TARGET:g}x for batched member computation: {verdict(met)}")
    ok = agree_training < 1e-3 and agree_lora < 1e-4 and agree_serving < 1e-4
    return exit_code(met, args.strict, None if ok else "batched and looped members differ")


if __name__ == "__main__":
    sys.exit(main())
