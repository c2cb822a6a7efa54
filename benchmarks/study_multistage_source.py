"""Does Source's edge over influence functions on multi-stage training reproduce here? (issue #17 item 6)

Source (Bae et al. 2024, arXiv 2405.12186) claims it suits settings where implicit-differentiation influence
functions struggle, multi-stage training among them. This study grades ``source``, ``fast_source``, EK-FAC influence
(``influence``, ``solver="ekfac"``, at the final parameters) and ``tracin`` (over the same checkpoints as Source) by
LDS over the *fine-tuning* data, on two two-stage tasks and a single-stage control of each:

* ``digits two-stage``: the built-in suite ``finetune-source`` run as it is (``run_suite``): an MLP learns digit
  classes 0-4, then is fine-tuned on 5-9 (``FineTuneTask.digits``; 10 fine-tuning epochs; LDS M = 50, 3 seeds).
* ``digits one-stage``: the same fine-tuning data, recipe, queries and metric, trained from a random initialisation
  (a ``DigitsTask`` whose training data are the fine-tuning data): the only change is the base stage.
* ``lm two-stage`` / ``lm one-stage``: the same on the fact corpus (``FineTuneTask.language``: base facts, then the
  queried facts; gradient methods on ``params="linear"``, EK-FAC's requirement, for all of them).

Per setting it prints the suite's LDS ranking (paired bootstrap over queries, Holm, rank intervals) and the paired
difference of Source against each rival with its 95% CI (``tdaeval.functional.paired_bootstrap_differences``). The
"edge on multi-stage" is the difference-in-differences ``(Source − rival | two-stage) − (Source − rival | one-stage)``,
per query (both settings share the queries; checked by digest), with a paired-bootstrap CI over queries. The single
machine and the wall time are printed last. Usage::

    .venv/bin/python benchmarks/study_multistage_source.py [--threads 2] [--skip-lm]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import torch

from tdaeval.functional.ranking import paired_bootstrap_differences
from tdaeval.suites import build_suite, evaluate, run_suite
from tdaeval.suites.config import parse_suite
from tdaeval.tasks.finetune import FineTuneTask

from _common import machine

RIVALS = ("ekfac", "tracin")
METHODS = ("source", "fast_source")

LM_TWO_STAGE = """
version: 1
name: finetune-source-lm
description: Source vs EK-FAC influence vs TracIn on LM fine-tuning (base facts, then the queried facts).
task:
  factory: tdaeval.tasks.finetune:language_finetune
  params:
    n_entities: 100
    n_facts: 120
    n_test: 30
    n_finetune_facts: 60
    base_recipe: {epochs: 60}
    recipe: {epochs: 30}
attributors:
  - random
  - {use: source, params: {n_segments: 3, params: linear}}
  - {use: fast_source, params: {n_segments: 3, params: linear}}
  - {use: influence, name: ekfac, params: {solver: ekfac, params: linear}}
  - {use: tracin, params: {params: linear}}
metrics:
  - lds
n_checkpoints: 5
groundtruth:
  n_subsets: 40
  alpha: 0.5
  n_seeds: 2
  seed: 0
"""


def one_stage_control(task: FineTuneTask):
    """The fine-tuning data, recipe and queries, trained from the base task's random initialisation (one stage)."""
    control = copy.copy(task.base_task)
    control.train_data = task.train_data
    control.test_data = task.test_data
    control.recipe = task.recipe
    if hasattr(task, "corpus"):  # the LM task: its entailment and categories are read from the corpus
        control.corpus = task.corpus
    return control


def run_setting(suite, store: str):
    """``{setting: (SuiteResult, task, seconds)}`` for the two-stage suite and its one-stage control."""
    out = {}
    start = time.perf_counter()
    built = build_suite(suite)
    result = run_suite(built, cache_dir=store, progress=False)
    out["two-stage"] = (result, built.task, time.perf_counter() - start)
    fresh = build_suite(suite)  # fresh (unfitted) attributors and metrics for the control
    control = one_stage_control(fresh.task)
    start = time.perf_counter()
    result = evaluate(control, attributors=fresh.attributors, metrics=fresh.metrics, cache_dir=store, seed=fresh.config.seed,
                      n_checkpoints=fresh.config.n_checkpoints, on_error="record", progress=False)
    out["one-stage"] = (result, control, time.perf_counter() - start)
    return out


def per_query(result, name: str) -> torch.Tensor:
    return result.get(name, "lds").per_example.double()


def fmt(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def report(label: str, runs: dict, n_resamples: int = 2000) -> list[str]:
    rows = []
    for stage, (result, task, seconds) in runs.items():
        failures = result.failures()
        print(f"\n## {label} {stage}: n_finetune = {task.n_train}, n_queries = {task.n_test}, {seconds:.1f} s"
              + (f"; FAILED: {failures}" if failures else ""))
        print(f"{'attributor':<12} {'LDS':>7} {'95% CI':>18}  rank  tied with")
        for row in result.ranking("lds"):
            print(f"{row.attributor:<12} {row.value:7.3f} [{row.ci[0]:+.3f}, {row.ci[1]:+.3f}]  {row.rank_label:<5} "
                  f"{', '.join(row.tied_with) or '-'}")
    (two, two_task, _), (one, one_task, _) = runs["two-stage"], runs["one-stage"]
    same_queries = two_task.test_data.digest() == one_task.test_data.digest()
    print(f"\n{label}: paired differences in LDS over queries (95% paired-bootstrap CI; queries shared: {same_queries})")
    print(f"{'pair':<24} {'two-stage':>26} {'one-stage':>26} {'difference-in-differences':>30}  p")
    for method in METHODS:
        for rival in RIVALS:
            d_two = per_query(two, method) - per_query(two, rival)
            d_one = per_query(one, method) - per_query(one, rival)
            cells = []
            for d in (d_two, d_one):
                diff, low, high, _ = paired_bootstrap_differences(torch.stack([d, torch.zeros_like(d)]), n_resamples)
                cells.append(fmt(float(diff[0, 1]), float(low[0, 1]), float(high[0, 1])))
            if not same_queries:
                raise SystemExit(f"{label}: the two settings' queries differ; the difference-in-differences is not paired.")
            diff, low, high, p = paired_bootstrap_differences(torch.stack([d_two, d_one]), n_resamples)
            did = fmt(float(diff[0, 1]), float(low[0, 1]), float(high[0, 1]))
            line = f"{method + ' - ' + rival:<24} {cells[0]:>26} {cells[1]:>26} {did:>30}  {float(p[0, 1]):.3f}"
            print(line)
            rows.append(f"{label} | {line}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-lm", action="store_true", help="digits only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        runs = {"digits": run_setting("finetune-source", os.path.join(store, "digits"))}
        if not args.skip_lm:
            runs["lm"] = run_setting(parse_suite(LM_TWO_STAGE, source="study_multistage_source.py"), os.path.join(store, "lm"))
        for label, setting in runs.items():
            report(label, setting)
    print(f"\nmachine: {machine()}")
    print(f"total wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
