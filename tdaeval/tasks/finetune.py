"""Two-stage training: a base model trained once on a base task, then fine-tuned on a subset of fine-tuning data.

:class:`FineTuneTask` is an ordinary :class:`~tdaeval.task.Task` whose training data are the *fine-tuning* data and
whose :meth:`~FineTuneTask.build_model` returns a copy of the base model, so LDS, LOO and top-k removal over the
fine-tuning data, batched training (:func:`~tdaeval.training.train_models`: every stacked model starts from the same
base parameters) and the reference model all work unchanged. The base model is trained once per (base task, base
seed): kept on the task, in a small process-wide cache, and in an :class:`~tdaeval.groundtruth.store.ArtifactStore`
when one is attached (under the base task's fingerprint and the base seed, as
:func:`~tdaeval.suites.runner.train_reference` stores any reference model).

Convenience constructors: :meth:`FineTuneTask.digits` (base = some digit classes, fine-tune = the others) and
:meth:`FineTuneTask.language` (base facts, then new facts, on the fact corpus), :meth:`FineTuneTask.hallucination`
(base facts, then injected false facts: hallucination tracing, issue #17 item 4).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.task import Task, TrainRecipe

__all__ = ["FineTuneTask", "digits_finetune", "language_finetune", "hallucination_finetune", "clear_base_cache"]

#: Process-wide cache of trained base models: ``(base fingerprint, base seed) -> state_dict`` (most recent last).
_BASE_CACHE: OrderedDict[tuple[str, int], dict[str, Tensor]] = OrderedDict()
_BASE_CACHE_SIZE = 8


def clear_base_cache() -> None:
    """Forget the base models kept in memory across tasks (the store, if any, keeps its copies)."""
    _BASE_CACHE.clear()


def _recipe(value: TrainRecipe | Mapping[str, Any] | None, owner: str, name: str) -> TrainRecipe | None:
    if value is None or isinstance(value, TrainRecipe):
        return value
    if isinstance(value, Mapping):
        return TrainRecipe(**value)
    raise ConfigError(f"The {name!r} parameter of {owner} must be a TrainRecipe, a mapping of its fields or None. "
                      f"Got {type(value).__name__}.")


def _check_like(data: Any, reference: Data, name: str, owner: str) -> Data:
    """``data`` if it is a non-empty Data whose inputs/targets match ``reference``'s per-example shape and dtype."""
    if not isinstance(data, Data):
        raise ConfigError(f"The {name!r} parameter of {owner} must be a tdaeval Data. Got {type(data).__name__}.")
    if len(data) == 0:
        raise ConfigError(f"The {name!r} parameter of {owner} must hold at least one example. Got none.")
    for part in ("inputs", "targets"):
        got, want = getattr(data, part), getattr(reference, part)
        if tuple(got.shape[1:]) != tuple(want.shape[1:]) or got.dtype != want.dtype:
            raise ConfigError(
                f"The {name!r} parameter of {owner} must have {part} like the base task's: [n, "
                f"{', '.join(map(str, want.shape[1:]))}] {want.dtype}. Got [n, {', '.join(map(str, got.shape[1:]))}] {got.dtype}."
            )
    return data


class FineTuneTask(Task):
    """A base model trained once on ``base_task``, then fine-tuned on a subset of ``finetune_data``.

    ``train_data`` *is* ``finetune_data``: every retraining ground truth (LDS, LOO, top-k removal) is over the
    fine-tuning data, with the base model held fixed. Loss, measurement, target sampling and sequence positions are
    the base task's.

    Parameters
    ----------
    base_task : Task
        Supplies the architecture, loss, measurement and the base training (on all of its training data, with
        its own recipe and ``base_seed``); it must train with its recipe or override ``train``, as any task.
    finetune_data : Data
        The fine-tuning examples ``[n, ...]``; inputs and targets must have the base task's per-example shape and
        dtype (else a ``ConfigError`` naming ``finetune_data``).
    base_seed : int
        Seed of the base model's initialisation and base training.
    recipe : TrainRecipe or mapping, optional
        The fine-tuning recipe. Default: the base task's recipe (the fine-tuning data being smaller, that is fewer
        steps; on digits, classes 5–9 after 0–4, 20 epochs reach 0.93 test accuracy on the new classes, 5 epochs 0.16).
    test_data : Data, optional
        Queries; default the base task's test split.
    store : ArtifactStore or path, optional
        Where the base model is cached across processes (under the base task's fingerprint and ``base_seed``).
        :func:`~tdaeval.suites.runner.train_reference` attaches its own store (:meth:`attach_store`) when the
        task has none, so a suite run caches the base model next to its reference model.

    Notes
    -----
    What ``seed`` means here: :meth:`build_model` ignores it (every model starts from the one base model, itself
    fixed by ``base_seed``), so the training seed seeds only the fine-tuning, i.e. its batch order and dropout
    masks. Seed-to-seed variation of a fine-tuned model (ensembles, ``seed_posterior``, LDS over seeds) is
    therefore fine-tuning noise only; vary ``base_seed`` (a different task, fingerprint and cache key) for
    base-model noise.

    The epoch-0 checkpoint (``train_model(task, task.build_model(s), idx, s, include_initial=True)``) of a
    fine-tuning task is the base model: DDA's debias term.
    """

    name = "finetune"

    def __init__(
        self,
        base_task: Task,
        finetune_data: Data,
        base_seed: int = 0,
        recipe: TrainRecipe | Mapping[str, Any] | None = None,
        test_data: Data | None = None,
        store: Any = None,
    ) -> None:
        if not isinstance(base_task, Task):
            raise ConfigError(f"The 'base_task' parameter of FineTuneTask must be a tdaeval Task. Got {type(base_task).__name__}.")
        if isinstance(base_seed, bool) or not isinstance(base_seed, int):
            raise ConfigError(f"The 'base_seed' parameter of FineTuneTask must be an int. Got {base_seed!r} instead.")
        self.base_task = base_task
        self.base_seed = int(base_seed)
        self.train_data = _check_like(finetune_data, base_task.train_data, "finetune_data", "FineTuneTask")
        self.test_data = base_task.test_data if test_data is None else _check_like(test_data, base_task.test_data, "test_data",
                                                                                 "FineTuneTask")
        recipe = _recipe(recipe, "FineTuneTask", "recipe")
        self.recipe = recipe if recipe is not None else base_task.recipe
        self.higher_is_better = base_task.higher_is_better  # type: ignore[misc]
        self.measurement_name = base_task.measurement_name  # type: ignore[misc]
        self.store = None
        self._store_root: Path | None = None
        if store is not None:
            self.attach_store(store)
        self._base_state: dict[str, Tensor] | None = None

    # --- the base model ---------------------------------------------------------------------------------------
    def attach_store(self, store: Any, replace: bool = False) -> None:
        """Cache the base model in ``store`` (an ArtifactStore or a directory); kept if one is attached, unless ``replace``."""
        from tdaeval.groundtruth.store import ArtifactStore

        if self.store is not None and not replace:
            return
        if isinstance(store, (str, Path)):
            store = ArtifactStore(store)
        if not isinstance(store, ArtifactStore):
            raise ConfigError(f"The 'store' parameter of FineTuneTask must be an ArtifactStore, a directory or None. Got {type(store).__name__}.")
        self.store = store
        self._store_root = Path(store.root)

    def _base_key(self) -> tuple[str, int]:
        return self.base_task.fingerprint(), self.base_seed

    def base_state(self) -> dict[str, Tensor]:
        """The base model's ``state_dict`` (trained on first use, then reused: task, process cache, store)."""
        if self._base_state is not None:
            return self._base_state
        key = self._base_key()
        state = _BASE_CACHE.get(key)
        if state is None:
            from tdaeval.suites.runner import train_reference  # the runner imports the tasks

            with torch.enable_grad():  # build_model may be first called under no_grad (train_models sizes its groups so)
                model, _ = train_reference(self.base_task, seed=self.base_seed, n_checkpoints=0, store=self.store)
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            _BASE_CACHE[key] = state
            while len(_BASE_CACHE) > _BASE_CACHE_SIZE:
                _BASE_CACHE.popitem(last=False)
        else:
            _BASE_CACHE.move_to_end(key)
        self._base_state = state
        return state

    def base_model(self) -> nn.Module:
        """A copy of the base model, in eval mode."""
        model = self.base_task.build_model(self.base_seed)
        model.load_state_dict(self.base_state())
        return model.eval()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["store"] = None  # an ArtifactStore holds a lock: a copy reopens it from its root (__setstate__)
        if state.get("_base_state") is None and self._base_key() in _BASE_CACHE:
            state["_base_state"] = _BASE_CACHE[self._base_key()]  # a worker process gets the base model along
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        root = state.get("_store_root")
        if root is not None:
            from tdaeval.groundtruth.store import ArtifactStore

            self.store = ArtifactStore(root)

    # --- the Task contract ------------------------------------------------------------------------------------
    def build_model(self, seed: int) -> nn.Module:
        """A copy of the base model (in training mode), the same for every ``seed`` (see the class notes)."""
        model = self.base_task.build_model(self.base_seed)
        model.load_state_dict(copy.deepcopy(self.base_state()))
        return model.train()

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.base_task.loss(outputs, targets)

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.base_task.measurement(outputs, targets)

    def sample_targets(self, outputs: Tensor, generator: torch.Generator, *args: Any, **kwargs: Any) -> Tensor:
        """The base task's :meth:`~tdaeval.task.Task.sample_targets`."""
        return self.base_task.sample_targets(outputs, generator, *args, **kwargs)

    @property
    def supports_sampling(self) -> bool:
        return self.base_task.supports_sampling

    def positions(self, data: Data) -> Tensor | None:
        return self.base_task.positions(data)

    def config(self) -> dict[str, Any]:
        config = {"base_task": self.base_task.fingerprint(), "base_name": self.base_task.name, "base_seed": self.base_seed}
        setting = getattr(self, "setting_params", None)  # a convenience constructor's knobs (hallucination)
        if setting:
            config["setting"] = setting
        return config

    # --- convenience constructors -----------------------------------------------------------------------------
    @classmethod
    def digits(
        cls,
        base_classes: Sequence[int] | None = (0, 1, 2, 3, 4),
        base_fraction: float = 0.5,
        base_seed: int = 0,
        recipe: TrainRecipe | Mapping[str, Any] | None = None,
        base_recipe: TrainRecipe | Mapping[str, Any] | None = None,
        store: Any = None,
        **digits_params: Any,
    ) -> "FineTuneTask":
        """Digits in two stages: the base model learns ``base_classes``, fine-tuning teaches the other classes.

        Parameters
        ----------
        base_classes : sequence of int or None
            Classes of the base training data (default 0–4); the fine-tuning data are the training examples of the
            other classes. None: a clean random split instead, ``base_fraction`` of the training data (seeded by the
            digits ``split_seed``) for the base, the rest for fine-tuning.
        base_fraction : float
            Share of the training data in the base split when ``base_classes`` is None, in (0, 1).
        base_seed, recipe, store
            As :class:`FineTuneTask`.
        base_recipe : TrainRecipe or mapping, optional
            The base training recipe (default: DigitsTask's).
        **digits_params
            :class:`~tdaeval.tasks.DigitsTask` parameters (``model``, ``n_train``, ``n_test``, ``hidden``, ``dropout``,
            ``split_seed``); ``n_train`` counts base plus fine-tuning examples.

        Returns
        -------
        FineTuneTask
            Its test split is the full digits test split (all classes: it measures both what fine-tuning taught and
            what it made the model forget).
        """
        from tdaeval.tasks.digits import DigitsTask

        full = DigitsTask(**digits_params, recipe=_recipe(base_recipe, "FineTuneTask.digits", "base_recipe"))
        labels = full.train_data.targets
        if base_classes is None:
            if not 0.0 < float(base_fraction) < 1.0:
                raise ConfigError(f"The 'base_fraction' parameter of FineTuneTask.digits must be in (0, 1). Got {base_fraction!r} instead.")
            order = torch.randperm(full.n_train, generator=torch.Generator().manual_seed(full.split_seed))
            n_base = round(full.n_train * float(base_fraction))
            is_base = torch.zeros(full.n_train, dtype=torch.bool)
            is_base[order[:n_base]] = True
        else:
            classes = [int(c) for c in base_classes]
            if not classes or any(c < 0 or c > 9 for c in classes) or len(set(classes)) in (0, 10):
                raise ConfigError(f"The 'base_classes' parameter of FineTuneTask.digits must be some, not all, of the classes 0-9. "
                                  f"Got {list(base_classes)!r} instead.")
            is_base = torch.isin(labels, torch.tensor(classes))
        if bool(is_base.all()) or not bool(is_base.any()):
            raise ConfigError("FineTuneTask.digits: the split leaves the base or the fine-tuning part empty; "
                              "change 'base_classes', 'base_fraction' or 'n_train'.")
        base = copy.copy(full)
        base.train_data = full.train_data.subset(torch.nonzero(is_base).flatten())
        finetune = full.train_data.subset(torch.nonzero(~is_base).flatten())
        return cls(base, finetune, base_seed=base_seed, recipe=recipe, store=store)

    @classmethod
    def language(
        cls,
        n_finetune_facts: int | None = None,
        base_seed: int = 0,
        recipe: TrainRecipe | Mapping[str, Any] | None = None,
        base_recipe: TrainRecipe | Mapping[str, Any] | None = None,
        store: Any = None,
        **language_params: Any,
    ) -> "FineTuneTask":
        """Fact completion in two stages: the base model learns some facts, fine-tuning teaches new ones.

        The fact corpus's training sentences are split by fact id (:attr:`~tdaeval.facts.FactCorpus.fact_train`; a
        contradicting sentence goes with the fact it contradicts): facts ``0 … n_finetune_facts−1`` — the query
        facts first, so every query's fact is new — are fine-tuning data, the other facts' sentences and the filler
        are base data. The queries are the corpus's (held-out paraphrases of the query facts).

        Parameters
        ----------
        n_finetune_facts : int, optional
            Facts in the fine-tuning part, in ``[n_test, n_facts)``; default ``n_test`` (only the queried facts).
        base_seed, recipe, store
            As :class:`FineTuneTask`.
        base_recipe : TrainRecipe or mapping, optional
            The base training recipe (default: LanguageModelTask's).
        **language_params
            :class:`~tdaeval.tasks.LanguageModelTask` parameters (corpus and model knobs).

        Returns
        -------
        FineTuneTask
            With ``corpus`` (the corpus restricted to the fine-tuning sentences), ``entailment`` and ``categories``
            (``[n_test, n_finetune]``, restricted to the fine-tuning columns) and ``category_names``, so the
            fact-tracing metrics run on it.
        """
        from tdaeval.tasks.language import LanguageModelTask

        full = LanguageModelTask(**language_params, recipe=_recipe(base_recipe, "FineTuneTask.language", "base_recipe"))
        corpus = full.corpus
        n_facts, n_test = int(corpus.facts.shape[0]), corpus.n_test
        n_ft = n_test if n_finetune_facts is None else n_finetune_facts
        if isinstance(n_ft, bool) or not isinstance(n_ft, int) or not n_test <= n_ft < n_facts:
            raise ConfigError(f"The 'n_finetune_facts' parameter of FineTuneTask.language must be an int in [n_test, n_facts) = "
                              f"[{n_test}, {n_facts}). Got {n_finetune_facts!r} instead.")
        fact = torch.where(corpus.fact_train >= 0, corpus.fact_train, corpus.contradicts_train)
        is_ft = (fact >= 0) & (fact < n_ft)
        base_idx, ft_idx = torch.nonzero(~is_ft).flatten(), torch.nonzero(is_ft).flatten()
        base = copy.copy(full)
        base.corpus = _subset_corpus(corpus, base_idx)
        base.train_data = base.corpus.train
        sub = _subset_corpus(corpus, ft_idx)
        task = cls(base, sub.train, base_seed=base_seed, recipe=recipe, store=store)
        task.corpus = sub
        task.entailment = sub.entailment
        task.categories = sub.category
        task.category_names = full.category_names
        return task

    @classmethod
    def hallucination(
        cls,
        n_paraphrases: int | tuple[int, int] = (1, 3),
        n_new_facts: int = 10,
        filler: int = 20,
        queries: str = "hallucinated",
        reference_seed: int = 0,
        base_seed: int = 0,
        recipe: TrainRecipe | Mapping[str, Any] | None = None,
        base_recipe: TrainRecipe | Mapping[str, Any] | None = None,
        store: Any = None,
        n_entities: int = 60,
        n_relations: int = 4,
        n_facts: int = 120,
        n_templates: int = 4,
        n_test: int = 30,
        **language_params: Any,
    ) -> "FineTuneTask":
        """Hallucination tracing: the base model learns true facts, fine-tuning injects false ones that contradict them.

        A synthetic analogue of DDA's setting (Wu et al. 2024, arXiv 2410.01285: an XSum-derived set with injected hallucinations,
        7B LLMs): the base model is trained on a fact corpus (:func:`~tdaeval.facts.make_fact_corpus`); the
        fine-tuning data (:func:`~tdaeval.facts.make_hallucination_split`) are, for each of the ``n_test`` query
        facts ``(s, r, o)``, ``k`` utterances of a false fact ``(s, r, o')`` on forward templates other than the
        query's held-out one, plus the sentences of ``n_new_facts`` new true facts (moved out of the base) and
        ``filler`` filler sentences. A query is the held-out paraphrase prompt ``(s, r)`` with answer ``o'``: the
        measurement (answer log-odds) is the log-odds of the hallucinated object, and its positives are the
        injected utterances of its false fact.

        With ``queries="hallucinated"`` only the queries that fine-tuning turned wrong are kept. The rule: query
        ``i`` is kept iff, at its answer position, the argmax token of the base model is ``o`` AND the argmax of
        one reference model fine-tuned on all fine-tuning data from the base (``train_model(task,
        task.build_model(reference_seed), all indices, reference_seed)``, the recipe below) is ``o'``. The
        fine-tuning is deterministic on CPU, so the suite runner's reference model with the same seed is the same
        model and answers ``o'`` on every kept query.

        Measured with the defaults (CPU, one torch thread, corpus seeds 0, 1, 2): base training 1.2–1.9 s on 410
        base sentences, reference fine-tuning 0.6–1.0 s on 117–125 fine-tuning sentences. The base model answers ``o``
        on 0.87 / 0.97 / 0.87 of the 30 queries and never ``o'``; the reference fine-tuned model answers ``o'`` on
        0.63 / 0.77 / 0.73; kept (both): 0.53 / 0.73 / 0.60 (16 / 22 / 18 queries). By the number of injected
        utterances, the fine-tuned share is 0.29–0.73 with one, 0.60–0.93 with two, 0.75–0.89 with three;
        ``n_paraphrases=(2, 3)`` keeps 0.70 / 0.70 / 0.73. A fine-tuning lr of 0.2 (momentum 0.9) drops the
        fine-tuned share to 0.00–0.37 (the model forgets the templates), no momentum (lr 0.1, 30 epochs) to 0.43–0.53.

        Parameters
        ----------
        n_paraphrases : int or (int, int)
            Injected utterances per false fact, or an inclusive range drawn per fact (default 1–3);
            ``1 <= low <= high <= n_templates − 1``.
        n_new_facts : int
            New true facts whose sentences are fine-tuning data, in ``[0, n_facts − n_test]`` (default 10).
        filler : int
            Filler sentences in the fine-tuning data (>= 0, default 20).
        queries : {"hallucinated", "all"}
            Keep the queries the fine-tuned reference model gets wrong (see above), or every query.
        reference_seed : int
            Seed of the reference fine-tuning of the ``"hallucinated"`` filter (>= 0).
        base_seed, store
            As :class:`FineTuneTask`.
        recipe : TrainRecipe or mapping, optional
            Fine-tuning recipe; default SGD, 50 epochs, batch 16, lr 0.1, momentum 0.9.
        base_recipe : TrainRecipe or mapping, optional
            Base training recipe; default LanguageModelTask's (100 epochs, batch 128, lr 0.5, momentum 0.9).
        n_entities, n_relations, n_facts, n_templates, n_test
            Corpus knobs (defaults 60, 4, 120, 4, 30); ``n_test`` query facts, each given a false fact.
        **language_params
            Other :class:`~tdaeval.tasks.LanguageModelTask` parameters (``corpus_seed``, ``d_model``,
            ``reversed_templates``, ``repeat``, …); ``conflicts`` must be 0 and ``aliases`` 1.

        Returns
        -------
        FineTuneTask
            ``train_data`` = the fine-tuning sentences ``[n_finetune, T]``; ``test_data`` = the kept queries with
            answer ``o'``; ``corpus`` (:class:`~tdaeval.facts.FactCorpus`, the fine-tuning part, queries cut to the
            kept ones); ``entailment`` bool and ``categories`` int8 ``[n_kept, n_finetune]`` (categories against
            ``(s, r, o')``: a new fact with the query's subject is ``same_subject``, …) and ``category_names``, so
            the fact-tracing metrics run on it; ``hallucination_split`` (the :class:`~tdaeval.facts.HallucinationSplit`,
            all candidate queries); ``query_ids`` int64 ``[n_kept]`` (indices into the candidate queries);
            ``true_answers`` / ``false_answers`` int64 ``[n_kept]`` (token ids of ``o`` and ``o'``);
            ``setting_params`` (every knob, the kept ids and their count: in :meth:`config`, so in the fingerprint
            and the provenance). The base task's queries are all candidates with the true answer ``o`` (the
            filter does not touch the base fingerprint, so the base model is cached across filters).

        Raises
        ------
        ConfigError
            A bad knob, named; or no query kept (the message names the knobs to change).
        """
        from tdaeval.facts import answer_positions, make_hallucination_split
        from tdaeval.params import Interval, Options, validate_params
        from tdaeval.tasks.language import LanguageModelTask
        from tdaeval.training import train_model

        owner = "FineTuneTask.hallucination"
        validate_params(owner, {"queries": queries, "reference_seed": reference_seed, "filler": filler},
                        {"queries": [Options(("hallucinated", "all"))], "reference_seed": [Interval(int, 0, None)],
                         "filler": [Interval(int, 0, None)]})
        full = LanguageModelTask(n_entities=n_entities, n_relations=n_relations, n_facts=n_facts, n_templates=n_templates, n_test=n_test,
                                 filler=filler, **language_params, recipe=_recipe(base_recipe, owner, "base_recipe"))
        split = make_hallucination_split(full.corpus, n_paraphrases, n_new_facts, owner=owner)
        base = copy.copy(full)
        base.corpus = split.base
        base.train_data = split.base.train
        ft_recipe = _recipe(recipe, owner, "recipe")
        ft_recipe = ft_recipe if ft_recipe is not None else TrainRecipe(epochs=50, batch_size=16, lr=0.1, momentum=0.9)
        task = cls(base, split.finetune.train, base_seed=base_seed, recipe=ft_recipe, test_data=split.finetune.test, store=store)
        candidates = torch.arange(split.finetune.n_test)
        positions = answer_positions(split.finetune.test)
        true_answers = split.base.test.targets[candidates, positions]
        false_answers = split.finetune.test.targets[candidates, positions]
        if queries == "hallucinated":
            with torch.no_grad():
                base_top = task.base_model()(split.finetune.test.inputs)[candidates, positions].argmax(dim=-1)
            with torch.enable_grad():
                reference = train_model(task, task.build_model(reference_seed), torch.arange(task.n_train), reference_seed).model.eval()
            with torch.no_grad():
                tuned_top = reference(split.finetune.test.inputs)[candidates, positions].argmax(dim=-1)
            kept = torch.nonzero((base_top == true_answers) & (tuned_top == false_answers)).flatten()
            if len(kept) == 0:
                raise ConfigError(
                    f"{owner}: no query kept: on none of the {len(candidates)} queries does the base model answer the true object and "
                    f"the reference fine-tuned model (reference_seed={reference_seed}) the injected one; raise 'n_paraphrases' or "
                    f"'n_test', change 'recipe' or 'reference_seed', or pass queries='all'."
                )
        else:
            kept = candidates
        sub = _subset_queries(split.finetune, kept)
        task.test_data = sub.test
        task.corpus = sub
        task.entailment = sub.entailment
        task.categories = sub.category
        task.category_names = full.category_names
        task.hallucination_split = split
        task.query_ids = kept
        task.true_answers, task.false_answers = true_answers[kept], false_answers[kept]
        low_high = split.finetune.params["n_paraphrases"]
        task.setting_params = {
            "setting": "hallucination", "n_paraphrases": low_high, "n_new_facts": int(n_new_facts), "filler": int(filler),
            "queries": queries, "reference_seed": int(reference_seed), "n_candidates": len(candidates),
            "kept_queries": kept.tolist(), "n_kept": len(kept), "split_digest": split.digest(),
        }
        return task


def _subset_corpus(corpus: Any, indices: Tensor) -> Any:
    """A :class:`~tdaeval.facts.FactCorpus` holding only the training sentences ``indices`` (every per-sentence field cut)."""
    return dataclasses.replace(
        corpus,
        train=corpus.train.subset(indices),
        entailment=corpus.entailment[:, indices],
        category=corpus.category[:, indices],
        fact_train=corpus.fact_train[indices],
        template_train=corpus.template_train[indices],
        triple_train=corpus.triple_train[indices],
        contradicts_train=corpus.contradicts_train[indices],
    )


def digits_finetune(**params: Any) -> FineTuneTask:
    """:meth:`FineTuneTask.digits` as a suite ``task.factory`` (``tdaeval.tasks.finetune:digits_finetune``)."""
    return FineTuneTask.digits(**params)


def language_finetune(**params: Any) -> FineTuneTask:
    """:meth:`FineTuneTask.language` as a suite ``task.factory`` (``tdaeval.tasks.finetune:language_finetune``)."""
    return FineTuneTask.language(**params)


def _subset_queries(corpus: Any, indices: Tensor) -> Any:
    """A :class:`~tdaeval.facts.FactCorpus` holding only the queries ``indices`` (every per-query field cut)."""
    return dataclasses.replace(
        corpus,
        test=corpus.test.subset(indices),
        entailment=corpus.entailment[indices],
        category=corpus.category[indices],
        fact_test=corpus.fact_test[indices],
        template_test=corpus.template_test[indices],
        triple_test=corpus.triple_test[indices],
    )


def hallucination_finetune(**params: Any) -> FineTuneTask:
    """:meth:`FineTuneTask.hallucination` as a suite ``task.factory`` (``tdaeval.tasks.finetune:hallucination_finetune``)."""
    return FineTuneTask.hallucination(**params)
