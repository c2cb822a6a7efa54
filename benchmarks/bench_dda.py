"""DDA's shared train-side work vs a loop that refits ``grad_dot`` per checkpoint (issue #17, "Speed and cost").

Task: ``FineTuneTask.digits()`` (the digits MLP, 64-64-64-10; base model on classes 0–4, fine-tuned on 5–9), the
fine-tuning run with ``E = 5`` checkpoints plus the epoch-0 one (``include_initial=True``, the base ``θ_0``).

* ``dda``: ``DDA(inner="grad_dot")`` (debias on, denoise ``"mean"``), its shared path: the ``E + 1`` parameter
  sets stacked, the per-example layer factors of the training data at all of them from one ``vmap`` pass (``fit``)
  and of the test data from one more (``attribute``), then batched products.
* ``loop``: what DDA costs without shared work, written out: per checkpoint (and at the base) a model holding those
  parameters (its copy timed as fit, as DDA's is), a fresh ``grad_dot`` fitted to it and its scores; then ``mean_e(I_e − I_0)``.
* ``dda generic``: ``DDA(..., batch_members=False)``, the library's own per-checkpoint path (for reference).

The three must give the same scores (rtol 1e-5). Times are the minimum of ``--repeat`` runs after a warm-up, fit
(train side) and attribute (test side) separately. Usage::

    .venv/bin/python benchmarks/bench_dda.py [--repeat 5] [--threads 2] [--strict]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

from tdaeval.attributors import DDA, get
from tdaeval.tasks import FineTuneTask
from tdaeval.training import train_model

from _common import exit_code, machine, verdict

TARGET = 2.0
E = 5


def _model_at(model, params):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(params[name])
    return out.eval()


def run_dda(task, run, **params):
    start = time.perf_counter()
    dda = DDA(inner="grad_dot", **params).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    scores = dda.attribute(task.test_data)
    return scores.double(), fit, time.perf_counter() - start


def run_loop(task, run):
    """One grad_dot fitted per parameter set (base first), then the debiased mean over the fine-tuning checkpoints."""
    fit = attribute = 0.0
    per_set = []
    for checkpoint in run.checkpoints:  # epoch 0 (the base) first, then epochs 1..E
        start = time.perf_counter()
        model = _model_at(run.model, checkpoint.params)  # DDA's fit builds these models too: timed on both sides
        inner = get("grad_dot").fit(task, model, task.train_data)
        fit += time.perf_counter() - start
        start = time.perf_counter()
        per_set.append(inner.attribute(task.test_data).double())
        attribute += time.perf_counter() - start
    scores = torch.stack([s - per_set[0] for s in per_set[1:]]).mean(0)
    return scores, fit, attribute


def best(fn, repeat):
    fn()  # warm-up
    runs = [fn() for _ in range(repeat)]
    return runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs), min(r[1] + r[2] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is not met")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = FineTuneTask.digits()
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=E, include_initial=True)
    assert [c.epoch for c in run.checkpoints][0] == 0 and len(run.checkpoints) == E + 1
    n_params = sum(p.numel() for p in run.model.parameters())
    print(f"machine: {machine()}; nproc {os.cpu_count()}; load average {os.getloadavg()}")
    print(f"task: FineTuneTask.digits() MLP ({n_params} parameters), n_train {task.n_train}, n_test {task.n_test}, "
          f"E = {E} checkpoints + the base")

    rows = {
        "dda (shared)": best(lambda: run_dda(task, run), args.repeat),
        "loop of grad_dot": best(lambda: run_loop(task, run), args.repeat),
        "dda generic": best(lambda: run_dda(task, run, batch_members=False), args.repeat),
    }
    reference = rows["loop of grad_dot"][0]
    error = None
    print(f"\n{'path':<18} {'fit s':>8} {'attribute s':>12} {'total s':>9}   max |Δ| / max |scores|")
    for name, (scores, fit, attribute, total) in rows.items():
        rel = float((scores - reference).abs().max() / reference.abs().max())
        print(f"{name:<18} {fit:>8.4f} {attribute:>12.4f} {total:>9.4f}   {rel:.2e}")
        if not torch.allclose(scores, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max())):
            error = f"{name} differs from the loop (relative {rel:.2e})"
    ratio = rows["loop of grad_dot"][3] / rows["dda (shared)"][3]
    fit_ratio = rows["loop of grad_dot"][1] / rows["dda (shared)"][1]
    met = ratio >= TARGET
    print(f"\nratio loop / shared: total {ratio:.2f}x (fit {fit_ratio:.2f}x); load average after {os.getloadavg()}")
    print(f"TARGET >= {TARGET:g}x for dda's shared path over the per-checkpoint loop: {verdict(met)}")
    return exit_code(met, args.strict, error)


if __name__ == "__main__":
    sys.exit(main())
