"""Tutorial 3: ensembles of attributors, and how much of a score is seed noise.

Run it with::

    python tutorials/03_ensembles_and_seed_noise.py [OUTPUT_DIR] [--full]

It trains the digits MLP (scikit-learn's bundled digits; nothing is
downloaded), builds one LDS ground truth and asks three questions:

1. Does averaging an attributor over independently trained models (a naive
   ensemble of ``I`` models) raise its LDS? For ``grad_dot`` and ``trak``,
   ``I`` in 1, 2, 4, 8.
2. Do the cheap ensembles (dropout passes and LoRA adapters on one trained
   model, checkpoints of one run) reach the naive ensemble's LDS at equal
   member counts, and at what training time, serving time and storage?
3. How many train–test scores are distinguishable from seed noise? The seed
   posterior retrains the model ``S`` times and gives each pair a p-value; and
   which noise dominates, the initialisation or the batch order?

By default it runs at a small size (400 training images, 40 test images, 20
subset models, 5 seeds: about a minute on 2 CPU cores); ``--full`` uses the
quick start's size (1,400 / 100, 100 subset models, 10 seeds).

Where it writes: ``results.json`` (the LDS evaluation) and ``seed_noise.json``
to OUTPUT_DIR, else ``$TDAEVAL_TUTORIAL_OUT``, else a new temporary
directory; the ground-truth cache to ``$TDAEVAL_CACHE_DIR`` if set, else a
temporary directory removed at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tdaeval
from tdaeval.attributors.ensembles import checkpoints, dropout, lora, naive
from tdaeval.attributors.seeds import seed_posterior
from tdaeval.errors import collect_warnings
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model

from _common import exit_code, main, write_results

FULL = "--full" in sys.argv

task = DigitsTask() if FULL else DigitsTask(n_train=400, n_test=40)
N_SUBSETS = 100 if FULL else 20
N_SEEDS = 10 if FULL else 5
MEMBERS = 8 if FULL else 4  # K for the equal-member comparison

# --- 1. Naive ensembles of I models --------------------------------------------
# naive(attributor, I): the fitted model plus I - 1 models trained from scratch
# with other seeds (all at once), the attributor's scores averaged over them.
NAIVE = {f"{name} naive I={i}": naive(name, n_models=i) for name in ("grad_dot", "trak") for i in (1, 2, 4, 8)}

# --- 2. Cheap ensembles at equal member counts -----------------------------------
# All four average grad_dot over K members; only the naive one trains K models.
CHEAP = {
    f"grad_dot naive K={MEMBERS}": naive("grad_dot", n_models=MEMBERS),
    f"grad_dot dropout K={MEMBERS}": dropout("grad_dot", n_passes=MEMBERS, p=0.1),
    f"grad_dot lora K={MEMBERS}": lora("grad_dot", n_adapters=MEMBERS, rank=4, steps=100),
    "grad_dot checkpoints C=6": checkpoints("grad_dot", n_checkpoints=6),
}


def seed_noise() -> dict[str, dict]:
    """Question 3: the fraction of pairs with p < 0.05 and the mean p-value, per attributor and noise source."""
    model = train_model(task, task.build_model(0), range(task.n_train), 0).model
    rows = {}
    for label, name, vary in (
        ("grad_dot", "grad_dot", "both"),
        ("influence", "influence", "both"),
        ("grad_dot, init only", "grad_dot", "init"),
        ("grad_dot, batch order only", "grad_dot", "order"),
    ):
        # the paper's SNR test, to reproduce its table (docs/ensembles.rst); the default, test="t",
        # is the calibrated one-sample t-test (docs/metrics/seed-noise.rst)
        said: list[str] = []  # e.g. an influence solve that did not converge: its numbers would mean nothing
        with collect_warnings(said):
            posterior = seed_posterior(name, n_seeds=N_SEEDS, vary=vary, test="snr").fit(task, model, task.train_data)
            result = posterior.attribute(task.test_data)
        rows[label] = {
            "warnings": said,
            "seeds": N_SEEDS,
            "fraction_p_below_0.05": float(result.reliable(0.05).float().mean()),
            "mean_p": float(result.p_value.mean()),
            "mean_std_over_mean_abs": float(result.std.mean() / result.mean.abs().mean()),
        }
    return rows


def run(cache_dir: str, out_dir: Path) -> int:
    result = tdaeval.evaluate(
        task,
        attributors={**NAIVE, **CHEAP},
        metrics={"lds": {"n_subsets": N_SUBSETS}},
        cache_dir=cache_dir,
        n_checkpoints=6,
        on_error="record",
    )
    print(result.table())
    write_results(result, out_dir)

    lds = {e.attributor: e.result.value for e in result.entries if e.result is not None}
    cost = {e.attributor: e.cost for e in result.entries}
    print("\n1. LDS of a naive ensemble of I models")
    for name in ("grad_dot", "trak"):
        print(f"  {name:<9}" + "".join(f"  I={i}: {lds.get(f'{name} naive I={i}', float('nan')):.3f}" for i in (1, 2, 4, 8)))

    print(f"\n2. Equal member counts (K = {MEMBERS}): quality next to cost")
    print(f"  {'ensemble':<28}{'LDS':>7}{'train s':>9}{'serve s':>9}{'storage KB':>12}")
    for label in CHEAP:
        c = cost[label]
        print(f"  {label:<28}{lds.get(label, float('nan')):>7.3f}{c.get('training_seconds', 0):>9.2f}"
              f"{c.get('serving_seconds', 0):>9.2f}{c.get('storage_bytes', 0) / 1024:>12.1f}")

    noise = seed_noise()
    print(f"\n3. Seed noise ({N_SEEDS} seeds; p-value of the per-draw signal-to-noise test)")
    print(f"  {'attributor':<30}{'p < 0.05':>10}{'mean p':>8}{'std / |mean|':>14}")
    for label, row in noise.items():
        print(f"  {label:<30}{row['fraction_p_below_0.05']:>10.3f}{row['mean_p']:>8.3f}{row['mean_std_over_mean_abs']:>14.2f}")
    (out_dir / "seed_noise.json").write_text(json.dumps(noise, indent=2))
    print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'seed_noise.json'}")

    problems = [f"{e.attributor} could not run: {e.error}" for e in result.failures()]
    problems += sorted({f"{e.attributor}: {w}" for e in result.entries for w in e.warnings})
    problems += [f"seed noise of {label}: {w}" for label, row in noise.items() for w in row["warnings"]]
    if not all(0.0 <= row["fraction_p_below_0.05"] <= 1.0 for row in noise.values()):
        problems.append("a fraction of reliable pairs outside [0, 1]")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
