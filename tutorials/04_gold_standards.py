"""Tutorial 4: the same attributors judged by different gold standards.

Run it with::

    python tutorials/04_gold_standards.py [OUTPUT_DIR] [--full]

LDS asks whether scores add up to the effect of removing half the data;
leave-one-out asks about removing one point; top-k removal asks whether the
points an attributor ranks highest really hold the prediction up; further
training asks, for the final model alone, what happens when it keeps training
without a point. This tutorial evaluates six attributors on the digits MLP
(scikit-learn's bundled digits; nothing is downloaded) under each gold
standard and prints how long each took, so you can budget a real run.

By default it runs at a small size (400 training images, 40 test images:
about a minute on 2 CPU cores); ``--full`` uses the quick start's size
(1,400 / 100) and the metrics' larger settings.

Where it writes: ``results.json`` (all metrics) and ``timings.json`` to
OUTPUT_DIR, else ``$TDAEVAL_TUTORIAL_OUT``, else a new temporary directory;
the ground-truth cache to ``$TDAEVAL_CACHE_DIR`` if set, else a temporary
directory removed at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import tdaeval
from tdaeval.suites import SuiteResult
from tdaeval.tasks import DigitsTask

from _common import exit_code, main, write_results

FULL = "--full" in sys.argv

task = DigitsTask() if FULL else DigitsTask(n_train=400, n_test=40)
ATTRIBUTORS = ["grad_dot", "grad_cos", "tracin", "influence", "trak", "random"]

# Each gold standard with its settings; the comment is its cost in model trainings.
METRICS = {
    # M subsets x R seeds, shared by every attributor
    "lds": {"n_subsets": 100 if FULL else 20},
    # R x (n_removed + 1) retrainings, shared; R paired seeds average out some seed noise
    "loo": {"n_removed": 100 if FULL else 40, "n_seeds": 3},
    # 3 selections x len(k_grid) x R x test points per attributor (random removals shared)
    "topk_removal": {"k_grid": [10, 20, 40], "n_seeds": 2, "n_test_points": 20 if FULL else 10},
    # S x (n_left_out + 1) further-training runs of the explained model, shared
    "further_training": {"n_left_out": 100 if FULL else 40, "n_seeds": 10 if FULL else 5, "epochs": 5 if FULL else 3},
}


def run(cache_dir: str, out_dir: Path) -> int:
    # One evaluate() per gold standard, so that each one's wall time (ground
    # truth + attributors) can be read separately; the reference model and
    # the attributors' work are the same every time.
    entries, timings = [], {}
    for name, params in METRICS.items():
        start = time.perf_counter()
        result = tdaeval.evaluate(task, attributors=ATTRIBUTORS, metrics={name: params}, cache_dir=cache_dir,
                                  n_checkpoints=5, on_error="record")
        timings[name] = time.perf_counter() - start
        entries += result.entries
        print(result.table())
        print(f"({name}: {timings[name]:.1f} s)\n")
    combined = SuiteResult(entries=entries, task=result.task, provenance=result.provenance)
    write_results(combined, out_dir)
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=2))

    print("value of each attributor under each gold standard (95% CI in results.json)")
    print(f"  {'attributor':<12}" + "".join(f"{m:>18}" for m in METRICS))
    for attributor in ATTRIBUTORS:
        cells = []
        for metric in METRICS:
            try:
                cells.append(f"{combined.get(attributor, metric).value:>18.3f}")
            except KeyError:
                cells.append(f"{'failed':>18}")
        print(f"  {attributor:<12}" + "".join(cells))
    print("\nwall time per gold standard, six attributors, cold cache: "
          + ", ".join(f"{m} {t:.1f} s" for m, t in timings.items()))
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'timings.json'}")

    problems = [f"{e.attributor} on {e.metric}: {e.error}" for e in combined.failures()]
    if combined.get("grad_cos", "topk_removal").value <= combined.get("random", "topk_removal").value:
        problems.append("removing grad_cos's top-scored points hurt less than removing random ones")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
