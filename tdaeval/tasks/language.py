"""Fact completion with a tiny causal language model trained here: the language-model task of fact tracing."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.facts import CATEGORIES, IGNORE_INDEX, FactCorpus, check_corpus_params, last_target_positions, make_fact_corpus
from tdaeval.nn import TinyCausalLM
from tdaeval.params import Instance, Interval, Options, validate_params
from tdaeval.task import Task, TrainRecipe
from tdaeval.tasks.classification import margin

__all__ = ["LanguageModelTask", "token_log_probs"]

_MEASUREMENTS = {"log_odds": "answer_log_odds", "logprob": "answer_logprob"}


def token_log_probs(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(target)`` at every position and where a target exists (``vmap``-safe).

    Parameters
    ----------
    outputs : Tensor
        ``[n, T, V]`` logits.
    targets : Tensor
        ``[n, T]`` int64, :data:`~tdaeval.facts.IGNORE_INDEX` where there is no target.

    Returns
    -------
    tuple of Tensor
        ``[n, T]`` log-probabilities (0 where ignored) and the ``[n, T]`` bool mask of real targets.
    """
    mask = targets != IGNORE_INDEX
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    log_probs = outputs.log_softmax(dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return log_probs * mask, mask


class LanguageModelTask(Task):
    """Fact completion on a generated fact corpus (:func:`~tdaeval.facts.make_fact_corpus`) with :class:`~tdaeval.nn.TinyCausalLM`.

    Training examples are the corpus's sentences (next-token targets at every position); test examples are the
    queries (a held-out paraphrase's prompt, the object as the one target). The training sentences that state a
    query's fact are known (:attr:`entailment`), so attribution can be scored against them, and the retraining
    gold standards (LDS, LOO) run as on any task, batched with ``vmap``.

    Parameters
    ----------
    n_entities, n_relations, n_facts, n_templates, n_test, reversed_templates, aliases, repeat, repeat_fraction, conflicts, filler
        The corpus knobs of :func:`~tdaeval.facts.make_fact_corpus` (``n_test`` = queries).
    corpus_seed : int
        Seed of the corpus (the model seed is the one passed to :meth:`build_model` / training).
    d_model, n_layers, n_heads : int
        Model size (:class:`~tdaeval.nn.TinyCausalLM`); ``n_heads`` divides ``d_model``.
    dropout : float
        :class:`~tdaeval.nn.SeededDropout` rate in the blocks, in [0, 1).
    measurement : {"log_odds", "logprob"}
        ``log_odds``: the answer's ``logit_a − logsumexp_{k≠a} logit_k`` at the answer position (the classification
        margin there; measurement name ``answer_log_odds``). ``logprob``: the sum of ``log p(target)`` over the
        row's targets, for a query ``log p(answer)`` = minus its loss (Quanda/FTRACE; ``answer_logprob``).
    recipe : TrainRecipe, optional
        Default SGD, lr 0.5, momentum 0.9, batch 128, 100 epochs: on the default corpus train object accuracy 1.00,
        held-out-paraphrase accuracy 0.77–0.90 over model seeds. lr 0.5 is near the edge of stability: with
        ``reversed_templates=1`` it diverges (train object accuracy 0.03–0.54 over three seeds), where lr 0.2 reaches
        0.91–0.99 (held-out 0.38–0.68). With ``aliases >= 2`` held-out accuracy is 0 by construction (see
        :func:`~tdaeval.facts.make_fact_corpus`).

    Attributes
    ----------
    corpus : FactCorpus
        The generated corpus; :attr:`entailment` (the known proponents) and :attr:`categories` read it.
    category_names : tuple of str
        :data:`~tdaeval.facts.CATEGORIES`.
    """

    name = "language_model"
    higher_is_better = True

    _MODEL_CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "d_model": [Interval(int, 1, None)],
        "n_layers": [Interval(int, 1, None)],
        "n_heads": [Interval(int, 1, None)],
        "dropout": [Interval(float, 0.0, 1.0, closed="left")],
        "measurement": [Options(tuple(_MEASUREMENTS))],
        "recipe": [None, Instance(TrainRecipe)],
    }

    def __init__(
        self,
        n_entities: int = 200,
        n_relations: int = 8,
        n_facts: int = 240,
        n_templates: int = 3,
        n_test: int = 60,
        reversed_templates: int = 0,
        aliases: int = 1,
        repeat: int = 1,
        repeat_fraction: float = 1.0,
        conflicts: float = 0.0,
        filler: int = 0,
        corpus_seed: int = 0,
        d_model: int = 32,
        n_layers: int = 1,
        n_heads: int = 2,
        dropout: float = 0.0,
        measurement: Literal["log_odds", "logprob"] = "log_odds",
        recipe: TrainRecipe | None = None,
    ) -> None:
        knobs = {"n_entities": n_entities, "n_relations": n_relations, "n_facts": n_facts, "n_templates": n_templates,
                 "n_test": n_test, "corpus_seed": corpus_seed, "reversed_templates": reversed_templates, "aliases": aliases,
                 "repeat": repeat, "repeat_fraction": repeat_fraction, "conflicts": conflicts, "filler": filler}
        check_corpus_params("LanguageModelTask", knobs, seed_name="corpus_seed")
        validate_params("LanguageModelTask", {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "dropout": dropout,
                                              "measurement": measurement, "recipe": recipe}, self._MODEL_CONSTRAINTS)
        if d_model % n_heads:
            raise ConfigError(f"The 'n_heads' parameter of LanguageModelTask must divide d_model = {d_model}. Got {n_heads} instead.")
        knobs["seed"] = knobs.pop("corpus_seed")
        self.corpus: FactCorpus = make_fact_corpus(**knobs)
        self.d_model, self.n_layers, self.n_heads, self.dropout = d_model, n_layers, n_heads, float(dropout)
        self.measurement_kind = measurement
        #: Instance attribute (the base declares a class default): the two measurements get different fingerprints.
        self.measurement_name = _MEASUREMENTS[measurement]  # type: ignore[misc]
        self.recipe = recipe if recipe is not None else TrainRecipe(epochs=100, batch_size=128, lr=0.5, momentum=0.9)
        self.train_data, self.test_data = self.corpus.train, self.corpus.test
        self.category_names = CATEGORIES

    @property
    def entailment(self) -> Tensor:
        """bool ``[n_test, n_train]``: training sentence ``j`` states query ``i``'s fact."""
        return self.corpus.entailment

    @property
    def categories(self) -> Tensor:
        """int8 ``[n_test, n_train]``: codes into :attr:`category_names`."""
        return self.corpus.category

    @property
    def vocab_size(self) -> int:
        """Vocabulary size ``V``."""
        return len(self.corpus.vocab)

    @property
    def max_len(self) -> int:
        """Input width ``T`` (longest sentence minus one)."""
        return int(self.train_data.inputs.shape[1])

    def config(self) -> dict[str, Any]:
        corpus = {("corpus_seed" if k == "seed" else k): v for k, v in self.corpus.params.items()}
        return {**corpus, "d_model": self.d_model, "n_layers": self.n_layers, "n_heads": self.n_heads, "dropout": self.dropout,
                "measurement": self.measurement_kind}

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return TinyCausalLM(self.vocab_size, self.max_len, self.d_model, self.n_layers, self.n_heads, self.dropout)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example mean token NLL over the non-ignored positions, ``[n]`` from ``[n, T, V]`` and ``[n, T]``."""
        log_probs, mask = token_log_probs(outputs, targets)
        return -log_probs.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1)

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """``[n]``, higher is better: the answer's log-odds at the last target position, or the summed target log-probability."""
        if self.measurement_kind == "logprob":
            return token_log_probs(outputs, targets)[0].sum(dim=-1)
        position = last_target_positions(targets).clamp_min(0)
        vocab = outputs.shape[-1]
        logits = outputs.gather(-2, position.view(-1, 1, 1).expand(-1, 1, vocab)).squeeze(-2)  # [n, V]
        answer = targets.gather(-1, position.unsqueeze(-1)).squeeze(-1)
        return margin(logits, answer)

    def sample_targets(self, outputs: Tensor, generator: torch.Generator, targets: Tensor | None = None) -> Tensor:
        """Next tokens drawn from ``softmax(outputs)`` at every position (for the Fisher), ``[n, T]`` int64.

        Parameters
        ----------
        outputs : Tensor
            ``[n, T, V]`` logits.
        generator : torch.Generator
            Draws the tokens.
        targets : Tensor, optional
            ``[n, T]`` observed targets: where they are :data:`~tdaeval.facts.IGNORE_INDEX` (padding, a query's
            prompt) the draw is replaced by it too, so the sampled loss covers the same positions. Without
            them every position gets a token (the caller cannot tell padding from text).
        """
        probs = torch.softmax(outputs.detach().double(), dim=-1).cpu()
        n, length, vocab = probs.shape
        draws = torch.multinomial(probs.reshape(-1, vocab), 1, generator=generator).view(n, length)
        if targets is not None:
            draws = torch.where(targets.cpu() != IGNORE_INDEX, draws, IGNORE_INDEX)
        return draws.to(outputs.device)

    def positions(self, data: Data) -> Tensor:
        """bool ``[n, T]``: where ``data``'s targets are not the ignore index (every real position of a sentence; a query's answer position)."""
        return data.targets != IGNORE_INDEX

    @torch.no_grad()
    def answer_accuracy(self, model: nn.Module, data: Data | None = None) -> Tensor:
        """Whether the model's top token at each row's last target position is that target, ``[n]`` bool.

        On the test split: held-out-paraphrase accuracy; on train, for forward sentences: object accuracy.
        """
        data = self.test_data if data is None else data
        was_training = model.training
        model.eval()
        device = next(iter(model.parameters())).device
        logits = model(data.inputs.to(device)).cpu()
        model.train(was_training)
        position = last_target_positions(data.targets).clamp_min(0)
        predicted = logits[torch.arange(len(data)), position].argmax(dim=-1)
        return predicted == data.targets[torch.arange(len(data)), position]
