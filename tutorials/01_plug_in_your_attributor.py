"""Tutorial 1: plug your own attributor into tdaeval and compare it with the built-ins.

Run it with::

    python tutorials/01_plug_in_your_attributor.py [OUTPUT_DIR]

It trains a small MLP on scikit-learn's bundled digits (nothing is
downloaded), builds a linear datamodeling score (LDS) ground truth of 20
subset models trained from scratch, and ranks five attributors: a plain
function, an ``Attributor`` subclass, two built-ins by name and one built-in
by ``"module:Name"`` path. It takes well under a minute on 2 CPU cores.

Where it writes:

* ``results.json`` goes to OUTPUT_DIR, else ``$TDAEVAL_TUTORIAL_OUT``, else a
  new temporary directory (printed at the end);
* the ground-truth cache goes to ``$TDAEVAL_CACHE_DIR`` if set, else to a
  temporary directory that is removed at the end.

Nothing is written into the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import tdaeval
from tdaeval.attributors import Attributor
from tdaeval.datasets import Data
from tdaeval.tasks import DigitsTask

from _common import exit_code, main, write_results

# --- 1. A task: what is being explained --------------------------------------
# DigitsTask holds the data (400 training and 40 test images here), builds the
# model from a seed, trains it with a fixed recipe (SGD, 20 epochs) and defines
# the measurement: the correct-class margin
#     logit_y - logsumexp_{k != y} logit_k      (higher is better).
task = DigitsTask(n_train=400, n_test=40)


# --- 2. An attributor as a plain function ------------------------------------
# Any function (model, train, test) -> Tensor[n_test, n_train] works; `train`
# and `test` are tdaeval.datasets.Data with `.inputs` and `.targets`, `model`
# is the trained model in eval mode. Scores must be oriented so that a
# POSITIVE score means "this training image supports the test image's
# margin" (including it in training raises the margin).
#
# Here: raw pixel similarity, signed by class agreement (a similar image of the
# same class should help, a similar image of another class should hurt).
def same_class_pixel_similarity(model: torch.nn.Module, train: Data, test: Data) -> torch.Tensor:
    similarity = test.inputs @ train.inputs.T  # [n_test, n_train]
    same_class = test.targets.unsqueeze(1) == train.targets.unsqueeze(0)
    return torch.where(same_class, similarity, -similarity)


# --- 3. An attributor as a class ---------------------------------------------
# Subclass Attributor when there is train-side work to do once (in _fit) or
# parameters to record. Rules:
#   * set `name` (used in messages; this class is NOT registered globally, so
#     the name does not have to be unique);
#   * take every parameter explicitly in __init__ and store it under the same
#     name (tdaeval records them in the results as `attributor_params`);
#   * after fit(), self.task_, self.model_, self.train_ and self.checkpoints_
#     hold the task, the trained model, the training data and the checkpoints
#     of the training run;
#   * _attribute(test) returns the raw scores; attribute() validates them
#     (shape, dtype, finite values) and names this attributor in any error.
#
# Here: cosine similarity of the model's penultimate-layer embeddings, signed
# by class agreement as above.
class PenultimateSimilarity(Attributor):
    """Cosine similarity of penultimate-layer embeddings, optionally signed by class agreement."""

    name = "penultimate_similarity"

    def __init__(self, signed: bool = True) -> None:
        self.signed = signed

    def _embed(self, data: Data) -> torch.Tensor:
        # DigitsTask's MLP is an nn.Sequential: every layer but the last gives the embedding.
        with torch.no_grad():
            features = self.model_[:-1](data.inputs)
        return torch.nn.functional.normalize(features, dim=1)

    def _fit(self) -> None:
        # Train-side work, done once however many test sets are attributed.
        self.train_embeddings_ = self._embed(self.train_)

    def _attribute(self, test: Data) -> torch.Tensor:
        scores = self._embed(test) @ self.train_embeddings_.T  # [n_test, n_train]
        if self.signed:
            same_class = test.targets.unsqueeze(1) == self.train_.targets.unsqueeze(0)
            scores = torch.where(same_class, scores, -scores)
        return scores


def run(cache_dir: str, out_dir: Path) -> int:
    # --- 4. Evaluate: functions, instances, names and paths side by side -----
    # The dict keys are the names in the results. Built-ins go by registry
    # name ("grad_dot", "random"; `tdaeval ls` lists them) and any Attributor
    # subclass or function importable from your environment by "module:Name".
    # LDS retrains 20 models from scratch on random halves of the training data
    # (the quick start uses 100); the ground truth is cached in `cache_dir`, so
    # running the tutorial again with the same TDAEVAL_CACHE_DIR retrains nothing.
    result = tdaeval.evaluate(
        task,
        attributors={
            "pixels (function)": same_class_pixel_similarity,
            "embedding (class)": PenultimateSimilarity(),
            "grad_dot": "grad_dot",
            "grad_cos (module:Name)": "tdaeval.attributors.gradient:GradCos",
            "random": "random",
        },
        metrics={"lds": {"n_subsets": 20}},
        cache_dir=cache_dir,
    )

    # --- 5. Read the results -------------------------------------------------
    # One table per metric, ranked by a paired bootstrap over test points:
    # "1–2" is a 95% rank interval, i.e. the data do not separate the first two.
    print(result.table())
    path = write_results(result, out_dir)  # the versioned document: values, CIs, per-test values, cost, provenance
    print(f"\nwrote {path}")

    # Single numbers are available too: value, 95% CI, per-test values, NaNs skipped.
    grad_dot, random = result.get("grad_dot", "lds"), result.get("random", "lds")
    print(f"grad_dot LDS {grad_dot.value:.3f} (95% CI {grad_dot.ci[0]:.3f} to {grad_dot.ci[1]:.3f}), random {random.value:.3f}")

    # --- 6. Sanity checks (the tutorial's test relies on the exit code) ------
    problems = []
    written = {item["attributor"] for item in json.loads(path.read_text())["results"]}
    if written != set(result.attributors):
        problems.append(f"results.json holds {sorted(written)}, expected {sorted(result.attributors)}")
    if result.failures():
        problems.append(f"attributors that could not run: {[e.attributor for e in result.failures()]}")
    if not grad_dot.value > random.value:
        problems.append(f"grad_dot's LDS ({grad_dot.value:.3f}) is not above random's ({random.value:.3f})")
    return exit_code(problems)


if __name__ == "__main__":
    raise SystemExit(main(run))
