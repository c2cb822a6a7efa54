"""Grad-Dot scores for all digits train x test pairs against the floor of one batched pass.

Target (issue #3): Grad-Dot scores for the 1,400 x 100 digits pairs take <= 3x
the floor: one batched forward+backward over the 1,400 training points plus the
score GEMM ``[n_test, P] @ [P, n_train]``. The per-sample ``vmap(grad)`` path
is timed beside it.

    python benchmarks/bench_grad_dot.py
"""

from __future__ import annotations

import sys

import torch

from tdaeval.attributors import get
from tdaeval.suites import train_reference
from tdaeval.tasks import DigitsTask

from _common import machine, timeit


def main() -> int:
    task = DigitsTask()
    model, _ = train_reference(task)
    x, y = task.train_data.inputs, task.train_data.targets
    n_params = sum(p.numel() for p in model.parameters())
    test_block = torch.randn(task.n_test, n_params)
    train_block = torch.randn(task.n_train, n_params)

    def floor() -> None:
        model.zero_grad()
        task.loss(model(x), y).sum().backward()
        test_block @ train_block.T

    def run(factorized: bool) -> torch.Tensor:
        attributor = get("grad_dot", factorized=factorized).fit(task, model, task.train_data)
        return attributor.attribute(task.test_data)

    torch.testing.assert_close(run(True), run(False), atol=1e-4, rtol=1e-3)
    t_floor = timeit(floor, repeat=20)
    t_factored = timeit(lambda: run(True), repeat=10)
    t_dense = timeit(lambda: run(False), repeat=5)
    print(f"machine: {machine()}")
    print(f"digits MLP ({n_params} parameters), {task.n_train} train x {task.n_test} test pairs\n")
    print(f"{'':<34}{'ms':>8}{'x floor':>10}")
    timings = (("floor (fwd+bwd + score GEMM)", t_floor), ("grad_dot, layer-wise factorised", t_factored),
               ("grad_dot, vmap(grad) per sample", t_dense))
    for name, seconds in timings:
        print(f"{name:<34}{seconds * 1e3:>8.1f}{seconds / t_floor:>9.1f}x")
    met = t_factored <= 3 * t_floor
    print(f"\ntarget <= 3x the floor: {'met' if met else 'NOT met'} ({t_factored / t_floor:.1f}x); same scores as vmap(grad): yes")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
