"""Tutorial 6: fact tracing on a tiny language model: attribution, influence and the retraining gold standard.

Run it with::

    python tutorials/06_fact_tracing.py [OUTPUT_DIR] [--full]

It generates a fact corpus (invented entities and relations, several
paraphrase templates per relation; nothing is downloaded), trains a tiny
causal transformer on it, and asks each attributor which training sentences
support the model's answer to a held-out paraphrase. Because the corpus is
built here, the sentences that state each query's fact (its *proponents*)
are known, so three different questions can be asked of the same scores:

* **attribution** (MRR, hit@k, recall@k, precision@k): does the attributor
  find the proponents? No model is retrained; the truth is the corpus.
* **influence** (tail-patch): does one small SGD step on the attributor's
  top-k sentences raise the answer? A one-step, first-order question.
* **the retraining gold standard** (LDS): do the scores predict how the
  answer changes when models are retrained from scratch on half the data?

It then turns on the corpus's lexical control (``aliases=2``: a query names
its entities by other words than its proponents do) to show what word
overlap was worth. ``docs/fact-tracing.rst`` explains every number.

By default it runs at the size of the ``lm-smoke`` suite (120 facts, 330
training sentences, 30 queries, 10 subset models: well under a minute on 2
idle CPU cores); ``--full`` uses the default corpus and ``lm-standard``'s
M = 50 (several minutes).

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
from tdaeval.facts import sequence_tokens
from tdaeval.groundtruth import ArtifactStore
from tdaeval.suites import train_reference
from tdaeval.task import TrainRecipe
from tdaeval.tasks import LanguageModelTask

from _common import exit_code, main, write_results

FULL = "--full" in sys.argv

# --- 1. The corpus and the model ---------------------------------------------------
# Every knob of the corpus is a constructor argument (aliases, reversed_templates,
# repeat, conflicts, filler: see docs/fact-tracing.rst); the model is a one-block
# causal transformer (d = 32), trained with SGD. The default recipe is 100 epochs;
# the small corpus needs fewer.
SMALL = {"n_entities": 100, "n_facts": 120, "n_test": 30, "recipe": TrainRecipe(epochs=60, batch_size=128, lr=0.5, momentum=0.9)}
CORPUS = {} if FULL else SMALL
N_SUBSETS = 50 if FULL else 10
task = LanguageModelTask(**CORPUS)

# --- 2. The contenders ---------------------------------------------------------------
# bm25 is model-free word matching; "entailment" is not a method but a reference
# row: the known proponents as scores (1 for a proponent, else 0).
ATTRIBUTORS = {
    "random": get("random"),
    "bm25": get("bm25"),  # query = prompt + answer
    "bm25 (prompt)": get("bm25", query="prompt"),
    "entailment": get("entailment"),
    "similarity": get("similarity"),  # hidden states pooled over the answer positions
    "grad_dot": get("grad_dot"),
    "grad_cos": get("grad_cos"),
}

# --- 3. The metrics ----------------------------------------------------------------
# Retrieval metrics read the corpus's entailment matrix; tail_patch steps the
# reference model once per training sentence (eta = lr / 100 by default, the sane
# regime); lds retrains N_SUBSETS models on random halves of the data.
METRICS = {"mrr": {}, "hit_at_k": {"k": 10}, "recall_at_k": {"k": 10}, "precision_at_k": {"k": 10}, "tail_patch": {"k": 10},
           "lds": {"n_subsets": N_SUBSETS}}


def show_query(corpus, index: int = 0) -> None:
    """Print one query (prompt -> answer) and the training sentences that state its fact."""
    query = sequence_tokens(corpus.test)[index]
    print(f"query {index}: {corpus.decode(query[:-1])} -> {corpus.decode(query[-1:])}")
    train = sequence_tokens(corpus.train)
    for j in corpus.entailment[index].nonzero().flatten().tolist():
        print(f"  proponent {j}: {corpus.decode(train[j])}")


def run(cache_dir: str, out_dir: Path) -> int:
    corpus = task.corpus
    print(f"{corpus.n_train} training sentences, {corpus.n_test} queries, vocabulary {task.vocab_size}, "
          f"{int(corpus.entailment.sum(dim=1).float().mean())} proponents per query\n")
    show_query(corpus)

    # --- 4. Evaluate: one reference model, one truth per metric, every attributor --
    result = tdaeval.evaluate(task, attributors=ATTRIBUTORS, metrics=METRICS, cache_dir=cache_dir, on_error="record")
    print()
    print(result.table())
    # The explained model, loaded from the store where evaluate() left it (same seed and checkpoints).
    model, _ = train_reference(task, seed=0, n_checkpoints=5, store=ArtifactStore(cache_dir))
    print(f"held-out-paraphrase accuracy of the explained model: {float(task.answer_accuracy(model).float().mean()):.2f}")

    # What each number is compared with: the closed-form random baseline of the
    # retrieval metrics, and tail-patch's ceiling (the top-k of the one-step effects).
    mrr_random = result.get("random", "mrr").provenance["random_baseline"]
    hit_random = result.get("random", "hit_at_k").provenance["random_baseline"]
    tail = result.get("grad_dot", "tail_patch").provenance
    print(f"\nrandom baselines (closed form): MRR {mrr_random:.4f}, hit@10 {hit_random:.4f}; "
          f"tail-patch ceiling {tail['ceiling']:.4f} at eta = {tail['eta']:g}")
    print(f"wrote {write_results(result, out_dir)}")

    # --- 5. Lexical control: the same facts, entities named differently in queries --
    # With aliases=2 each entity has two surface forms, and a query's forms are
    # disjoint from its proponents'. Word matching loses its shortcut; so does a
    # word-level model, which cannot relate two forms (accuracy drops to chance).
    controlled = LanguageModelTask(**CORPUS, aliases=2)
    lexical = tdaeval.evaluate(controlled, attributors=["random", "bm25", "similarity", "grad_cos"], metrics=["mrr"],
                               cache_dir=cache_dir, on_error="record")
    print("\nwith lexical control (aliases=2):")
    print(lexical.table())

    # --- 6. Sanity checks (the tutorial's test relies on the exit code) -----------
    problems = [f"{e.attributor} on {e.metric}: {e.error}" for e in result.failures() + lexical.failures()]
    if problems:
        return exit_code(problems)
    value = {(e.attributor, e.metric): e.result.value for e in result.entries}
    if value["entailment", "mrr"] != 1.0:
        problems.append(f"the entailment indicator's MRR is {value['entailment', 'mrr']}, not 1")
    low, high = result.get("random", "mrr").ci
    if not low <= mrr_random <= high:
        problems.append(f"random's MRR CI [{low:.4f}, {high:.4f}] misses its closed form {mrr_random:.4f}")
    if value["bm25", "mrr"] <= value["grad_dot", "mrr"]:
        problems.append("bm25 does not beat grad_dot on MRR")
    if value["grad_dot", "tail_patch"] <= value["bm25", "tail_patch"]:
        problems.append("grad_dot does not beat bm25 on tail-patch")
    if value["entailment", "lds"] <= value["random", "lds"] + 0.2:
        problems.append(f"the entailment indicator's LDS ({value['entailment', 'lds']:.3f}) is not far above random's")
    if lexical.get("bm25", "mrr").value >= value["bm25", "mrr"]:
        problems.append("bm25's MRR did not drop under lexical control")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
