"""Tutorial 7: fine-tuning pipelines, DDA's ablations and hallucination tracing.

Run it with::

    python tutorials/07_fine_tuning_and_dda.py [OUTPUT_DIR] [--full]

Real models are pretrained, then fine-tuned. :class:`tdaeval.tasks.FineTuneTask`
trains a *base* model once and fine-tunes it on subsets of the fine-tuning
data, so every retraining gold standard (here LDS) is over the fine-tuning
data with the base held fixed. On top of it this tutorial evaluates DDA (Wu
et al. 2024): an inner attributor at each fine-tuning checkpoint minus at
the base ("debias"), averaged over checkpoints ("denoise"), one switch at a
time, in two settings:

1. **digits in two stages**: the base MLP learns classes 0-4, fine-tuning
   teaches 5-9; graded by LDS over fine-tuning subsets.
2. **hallucination tracing** (DDA's own setting, offline): a tiny causal LM
   learns a fact corpus, then is fine-tuned on injected false facts
   ``(s, r, o')``; the queries are held-out paraphrases it now answers with
   ``o'``. The injected sentences are known, so per-query ROC-AUC (the
   paper's metric), recall@10 and MRR grade each method beside LDS.

``docs/attributors/dda.rst`` and ``docs/hallucination-tracing.rst`` explain
every number; the built-in suites ``finetune-dda`` and ``hallucination-dda``
run the full grids (three inner attributors, M = 50).

By default it runs with M = 20 subset models (about a minute on 2 idle CPU
cores); ``--full`` uses M = 50.

Where it writes: ``results.json`` (hallucination tracing) and ``digits.json``
(the two-stage digits grid) to OUTPUT_DIR, else
``$TDAEVAL_TUTORIAL_OUT``, else a new temporary directory; the ground-truth
cache to ``$TDAEVAL_CACHE_DIR`` if set, else a temporary directory removed at
the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tdaeval
from tdaeval.attributors import get
from tdaeval.facts import sequence_tokens
from tdaeval.suites import SuiteResult  # what tdaeval.evaluate returns
from tdaeval.task import TrainRecipe
from tdaeval.tasks import FineTuneTask

from _common import exit_code, main, write_results

N_SUBSETS = 50 if "--full" in sys.argv else 20


# --- 1. The DDA grid ---------------------------------------------------------------
# dda(inner, debias, denoise): debias subtracts the inner attributor at the base
# parameters; denoise averages over the fine-tuning checkpoints (None: the last
# one only). debias=False, denoise=None is the inner attributor itself: the control.
def grid(inner: str, **inner_params) -> dict:
    """The four ablations of DDA over one inner attributor, labelled."""
    options = {"": (False, None), "+denoise": (False, "mean"), "+debias": (True, None), "dda": (True, "mean")}
    return {(f"dda({inner})" if suffix == "dda" else f"{inner}{suffix}"):
            get("dda", inner=inner, inner_params=inner_params or None, debias=debias, denoise=denoise)
            for suffix, (debias, denoise) in options.items()}


def digits(cache_dir: str) -> SuiteResult:
    # --- 2. Two stages on digits ---------------------------------------------------
    # The base model is trained once per (base task, base_seed) and cached; every
    # subset model of the gold standard starts from it.
    task = FineTuneTask.digits(base_classes=(0, 1, 2, 3, 4), n_train=600, n_test=150, recipe=TrainRecipe(epochs=10))
    print(f"digits: base trained on {len(task.base_task.train_data)} examples of classes 0-4, "
          f"fine-tuned on {task.n_train} of classes 5-9; {task.n_test} queries of every class")
    attributors = {"random": get("random"), "tracin": get("tracin"), **grid("grad_dot")}
    return tdaeval.evaluate(task, attributors=attributors, metrics={"lds": {"n_subsets": N_SUBSETS}}, cache_dir=cache_dir,
                            on_error="record")


def show_query(task: FineTuneTask, index: int = 0) -> None:
    """One hallucinated query: the prompt, the base model's answer o, the fine-tuned answer o', and the injected sentences."""
    corpus = task.corpus
    query = sequence_tokens(task.test_data)[index]
    true, false = corpus.vocab[int(task.true_answers[index])], corpus.vocab[int(task.false_answers[index])]
    print(f"query {index}: {corpus.decode(query[:-1])} -> base model: {true}, fine-tuned: {false}")
    train = sequence_tokens(task.train_data)
    for j in task.entailment[index].nonzero().flatten().tolist():
        print(f"  injected {j}: {corpus.decode(train[j])}")


def hallucination(cache_dir: str) -> SuiteResult:
    # --- 3. Hallucination tracing ----------------------------------------------------
    # Defaults: 120 facts, 30 candidate queries with 1-3 injected paraphrases each, 10
    # new facts, 20 filler sentences; only the queries the fine-tuned model now gets
    # wrong (and the base model got right) are kept.
    task = FineTuneTask.hallucination()
    print(f"\nhallucination tracing: {task.n_train} fine-tuning sentences, {task.n_test} hallucinated queries "
          f"(of {len(task.base_task.test_data)} candidates)")
    show_query(task)
    attributors = {"random": get("random"), "bm25": get("bm25"), "entailment": get("entailment"), **grid("grad_dot"),
                   **grid("influence", solver="ekfac", params="linear")}
    metrics = {"roc_auc": {}, "recall_at_k": {"k": 10}, "mrr": {}, "lds": {"n_subsets": N_SUBSETS}}
    return tdaeval.evaluate(task, attributors=attributors, metrics=metrics, cache_dir=cache_dir, on_error="record")


def run(cache_dir: str, out_dir: Path) -> int:
    two_stage = digits(cache_dir)
    print(two_stage.table())
    traced = hallucination(cache_dir)
    print(traced.table())
    print(f"wrote {write_results(traced, out_dir)} (hallucination tracing) and {out_dir / 'digits.json'}")
    two_stage.to_json(out_dir / "digits.json")

    # --- 4. Sanity checks (the tutorial's test relies on the exit code) -------------
    problems = [f"{e.attributor} on {e.metric}: {e.error}" for e in two_stage.failures() + traced.failures()]
    if problems:
        return exit_code(problems)

    def value(result, attributor, metric):
        return result.get(attributor, metric).value

    if value(traced, "entailment", "roc_auc") != 1.0:
        problems.append("the injected sentences as scores do not have ROC-AUC 1")
    low, high = traced.get("random", "roc_auc").ci
    if not low <= 0.5 <= high:
        problems.append(f"random's ROC-AUC CI [{low:.3f}, {high:.3f}] misses 0.5")
    for inner in ("grad_dot", "influence"):
        if value(traced, f"{inner}+denoise", "roc_auc") <= value(traced, inner, "roc_auc"):
            problems.append(f"denoise did not raise {inner}'s ROC-AUC")
        # debias with both sides at the base removes what fine-tuning fitted: the injected sentences rank last
        if value(traced, f"{inner}+debias", "roc_auc") >= 0.5:
            problems.append(f"{inner}+debias is no longer below chance: update docs/hallucination-tracing.rst")
    if value(two_stage, "grad_dot", "lds") <= value(two_stage, "random", "lds"):
        problems.append("grad_dot does not beat random on the digits fine-tuning LDS")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
