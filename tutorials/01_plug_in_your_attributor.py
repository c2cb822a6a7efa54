"""Tutorial 1: plug your own attributor into tdaeval and compare it with the built-ins.

Run it with ``python tutorials/01_plug_in_your_attributor.py [OUTPUT_DIR]``.
It trains a small MLP on scikit-learn's bundled digits, builds a linear
datamodeling score (LDS) ground truth of 20 subset models trained from
scratch, and ranks four attributors. It takes well under a minute on 2 CPU
cores and writes only to OUTPUT_DIR (default: a temporary directory) and to
the ground-truth cache (``$TDAEVAL_CACHE_DIR`` or a temporary directory).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

import tdaeval
from tdaeval.attributors import Attributor
from tdaeval.tasks import DigitsTask

# --- 1. A task: what is being explained --------------------------------------
# DigitsTask holds the data (400 training and 40 test images here), builds the
# model from a seed, trains it with a fixed recipe and defines the measurement:
# the correct-class margin, higher is better.
task = DigitsTask(n_train=400, n_test=40)


# --- 2. An attributor as a plain function ------------------------------------
# Any function (model, train, test) -> Tensor[n_test, n_train] works. Scores are
# oriented so that a positive score means "this training image supports the
# test image's margin". Here: raw pixel similarity, restricted to training
# images of the test image's class (a same-class image should help, another
# class should not).
def same_class_pixel_similarity(model, train, test):
    similarity = test.inputs @ train.inputs.T  # [n_test, n_train]
    same_class = test.targets.unsqueeze(1) == train.targets.unsqueeze(0)
    return torch.where(same_class, similarity, -similarity)


# --- 3. An attributor as a class ---------------------------------------------
# Subclass Attributor when there is train-side work to cache (in _fit) or
# parameters to record. Every parameter is explicit in __init__; the fitted
# task, model and training data are available as self.task_, self.model_ and
# self.train_.
class PenultimateSimilarity(Attributor):
    """Cosine similarity of the model's penultimate-layer embeddings, signed by class agreement."""

    name = "penultimate_similarity"

    def __init__(self, signed: bool = True) -> None:
        self.signed = signed

    def _embed(self, data):
        with torch.no_grad():
            features = self.model_[:-1](data.inputs)  # every layer but the last
        return torch.nn.functional.normalize(features, dim=1)

    def _fit(self) -> None:
        self.train_embeddings_ = self._embed(self.train_)

    def _attribute(self, test):
        scores = self._embed(test) @ self.train_embeddings_.T
        if self.signed:
            same_class = test.targets.unsqueeze(1) == self.train_.targets.unsqueeze(0)
            scores = torch.where(same_class, scores, -scores)
        return scores


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tdaeval-tutorial-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = os.environ.get("TDAEVAL_CACHE_DIR") or tempfile.mkdtemp(prefix="tdaeval-cache-")

    # --- 4. Evaluate: names, functions and instances side by side -----------
    # Built-ins go by registry name ("grad_dot", "random"); a "module:Name"
    # string works too. LDS retrains 20 models on random halves of the data.
    result = tdaeval.evaluate(
        task,
        attributors={
            "pixels (function)": same_class_pixel_similarity,
            "embedding (class)": PenultimateSimilarity(),
            "grad_dot": "grad_dot",
            "random": "random",
        },
        metrics={"lds": {"n_subsets": 20}},
        cache_dir=cache_dir,
    )

    # --- 5. Read the results -------------------------------------------------
    # The table ranks by a paired bootstrap over test points: "1–2" means the
    # data do not separate the first two.
    print(result.table())
    path = out_dir / "results.json"
    result.to_json(path)
    print(f"\nwrote {path}")

    grad_dot, random = result.get("grad_dot", "lds"), result.get("random", "lds")
    if not grad_dot.value > random.value:
        print("unexpected: grad_dot is not above random", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
