"""Executor overhead (issue #8): the same LDS ground truth on ``local``, ``process:2`` and ``ray``.

Digits MLP (n_train 300, n_test 30), M subsets trained in batches of
``max_models``; each executor starts cold (a fresh store each time), and
its pool or Ray instance is started inside the timing, as a user's run would.
Reports the wall time, the overhead per batch relative to ``local``, checks
the ground truth is bit-identical, and estimates the break-even batch cost:
the training time per batch above which ``process:2`` beats ``local`` on
this machine (two workers can at best halve the time; their start-up and
transfer cost must be recovered).

    .venv/bin/python benchmarks/bench_executors.py [--subsets 32] [--max-models 4] [--epochs 20 40 80]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth, get_executor
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask

from _common import machine


def run(executor_spec: dict, task: DigitsTask, spec: LDSSpec) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with get_executor(executor_spec) as executor:
        truth = build_lds_groundtruth(task, spec, ArtifactStore(tempfile.mkdtemp(prefix="tdaeval-bench-exec-")), executor=executor)
    return time.perf_counter() - start, truth.outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subsets", type=int, default=32)
    parser.add_argument("--max-models", type=int, default=4)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 40, 160])
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    print(machine())
    n_batches = -(-args.subsets // args.max_models)
    specs = {"local": {"name": "local", "max_models": args.max_models},
             "process:2": {"name": "process", "workers": 2, "max_models": args.max_models}}
    if not args.skip_ray:
        specs["ray"] = {"name": "ray", "num_cpus": 2, "max_models": args.max_models}
    print(f"M={args.subsets} subsets in {n_batches} batches of {args.max_models}")
    print(f"{'epochs':>6} {'executor':<10} {'seconds':>8} {'per batch':>10} {'overhead/batch':>15}  identical")
    for epochs in args.epochs:
        task = DigitsTask(n_train=300, n_test=30, recipe=TrainRecipe(epochs=epochs))
        spec = LDSSpec(n_subsets=args.subsets)
        times, reference = {}, None
        for name, executor_spec in specs.items():
            seconds, outputs = run(executor_spec, task, spec)
            reference = outputs if reference is None else reference
            times[name] = seconds
            overhead = (seconds - times["local"]) / n_batches
            print(f"{epochs:>6} {name:<10} {seconds:>8.2f} {seconds / n_batches:>10.3f} {overhead:>+15.3f}  {torch.equal(outputs, reference)}")
        batch = times["local"] / n_batches
        for name in [n for n in specs if n != "local"]:
            fixed = times[name] - times["local"] / 2  # what two parallel workers add beyond halving the work
            print(f"{'':>6} local batch {batch:.3f} s; {name} fixed cost ≈ {fixed:.2f} s per run "
                  f"→ break-even at ≈ {max(fixed, 0) * 2 / n_batches:.3f} s of training per batch")


if __name__ == "__main__":
    main()
