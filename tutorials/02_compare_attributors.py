"""Tutorial 2: compare built-in estimators and other libraries' attributors side by side.

Run it with::

    python tutorials/02_compare_attributors.py [OUTPUT_DIR] [--full]

It trains the digits MLP (scikit-learn's bundled digits; nothing is
downloaded), builds an LDS ground truth of subset models trained from
scratch, and evaluates every built-in estimator family next to the adapters
for captum (a core dependency) and, when they are installed, dattri, TRAK and
kronfluence (``pip install 'tdaeval[dattri,trak,kronfluence]'``). Adapters
whose library is missing are listed with the command that installs them.

By default it runs at a small size (400 training images, 40 test images, 20
subset models: about a minute on 2 CPU cores); ``--full`` uses the quick
start's size (1,400 / 100, 100 subset models).

Where it writes: ``results.json`` to OUTPUT_DIR, else
``$TDAEVAL_TUTORIAL_OUT``, else a new temporary directory; the ground-truth
cache to ``$TDAEVAL_CACHE_DIR`` if set, else a temporary directory removed at
the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tdaeval
from tdaeval.attributors import get
from tdaeval.attributors.adapters import AdapterAttributor
from tdaeval.tasks import DigitsTask

from _common import exit_code, main, write_results

FULL = "--full" in sys.argv

# --- 1. The task --------------------------------------------------------------
task = DigitsTask() if FULL else DigitsTask(n_train=400, n_test=40)
N_SUBSETS = 100 if FULL else 20

# --- 2. The contenders ----------------------------------------------------------
# Built-ins by registry name with parameters: (name, params). Every family is
# here: gradient similarity, TracIn, influence functions with three of the
# inverse-HVP solvers, TRAK, Source / FAST-Source, representer points,
# embedding similarity and the random baseline.
BUILTINS = {
    "grad_dot": ("grad_dot", {}),
    "grad_cos": ("grad_cos", {}),
    "tracin": ("tracin", {}),
    "influence (cg)": ("influence", {"solver": "cg"}),
    "influence (ekfac)": ("influence", {"solver": "ekfac"}),
    "influence (astra)": ("influence", {"solver": "astra", "astra_iter": 100}),
    "trak": ("trak", {}),
    "trak (checkpoints)": ("trak", {"use_checkpoints": True}),
    "source": ("source", {"n_segments": 3}),
    "fast_source": ("fast_source", {"n_segments": 3}),
    "representer": ("representer", {}),
    "similarity": ("similarity", {}),
    "random": ("random", {}),
}

# The same ideas as implemented by other libraries, behind the same interface.
# Each adapter converts its library's layout and sign to ours
# ([n_test, n_train], positive = supports), so the numbers are comparable.
ADAPTERS = {
    "captum TracInCP": ("captum.tracin_cp", {}),
    "captum similarity": ("captum.similarity", {}),
    "dattri grad_dot": ("dattri.grad_dot", {}),
    "dattri influence (cg)": ("dattri.influence", {"solver": "cg"}),
    "traker TRAK": ("trak.traker", {}),
    "kronfluence ekfac": ("kronfluence.ekfac", {}),
}


def contenders() -> tuple[dict[str, object], list[str]]:
    """Attributor instances by display name, and a note for each adapter that cannot run here."""
    chosen, missing = {}, []
    for label, (name, params) in BUILTINS.items():
        chosen[label] = get(name, **params)
    for label, (name, params) in ADAPTERS.items():
        try:
            attributor = get(name, **params)
        except tdaeval.errors.ConfigError as err:  # not registered in this version
            missing.append(f"{label}: {err}")
            continue
        if isinstance(attributor, AdapterAttributor) and not attributor.available():
            missing.append(f"{label}: pip install 'tdaeval[{attributor.extra}]'")
            continue
        chosen[label] = attributor
    return chosen, missing


def run(cache_dir: str, out_dir: Path) -> int:
    attributors, missing = contenders()
    # --- 3. Evaluate: one ground truth, every attributor -----------------------
    # The reference model is trained once with 6 checkpoints (TracIn and Source
    # use them); the LDS ground truth is shared by all attributors and cached.
    # on_error="record" keeps going when one attributor fails and reports why.
    result = tdaeval.evaluate(
        task,
        attributors=attributors,
        metrics={"lds": {"n_subsets": N_SUBSETS}},
        cache_dir=cache_dir,
        n_checkpoints=6,
        on_error="record",
    )

    # --- 4. Read the comparison --------------------------------------------------
    # Ranks come from a paired bootstrap over test points: attributors whose
    # rank intervals overlap are not separated by this data. The cost columns
    # (fit and attribute seconds) put quality next to price.
    print(result.table())
    if missing:
        print("\nnot run here (library not installed):")
        for line in missing:
            print(f"  {line}")
    print(f"\nwrote {write_results(result, out_dir)}")

    # --- 5. Sanity checks (the tutorial's test relies on the exit code) -------
    problems = [f"{e.attributor} could not run: {e.error}" for e in result.failures()]
    failed = {e.attributor for e in result.failures()}
    lds = {name: result.get(name, "lds").value for name in result.attributors if name not in failed}
    if lds.get("grad_cos", 0) <= lds.get("random", 0):
        problems.append(f"grad_cos ({lds.get('grad_cos')}) is not above random ({lds.get('random')})")
    if "captum TracInCP" in lds and abs(lds["captum TracInCP"] - lds["tracin"]) > 0.02:
        problems.append(f"captum's TracInCP ({lds['captum TracInCP']:.3f}) and ours ({lds['tracin']:.3f}) disagree")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
