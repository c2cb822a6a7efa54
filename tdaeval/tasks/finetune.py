"""Two-stage training: a base model trained once on a base task, then fine-tuned on a subset of fine-tuning data.

:class:`FineTuneTask` is an ordinary :class:`~tdaeval.task.Task` whose training data are the *fine-tuning* data and
whose :meth:`~FineTuneTask.build_model` returns a copy of the base model, so LDS, LOO and top-k removal over the
fine-tuning data, batched training (:func:`~tdaeval.training.train_models`: every stacked model starts from the same
base parameters) and the reference model all work unchanged. The base model is trained once per (base task, base
seed): kept on the task, in a small process-wide cache, and in an :class:`~tdaeval.groundtruth.store.ArtifactStore`
when one is attached (under the base task's fingerprint and the base seed, as
:func:`~tdaeval.suites.runner.train_reference` stores any reference model).

Convenience constructors: :meth:`FineTuneTask.digits` (base = some digit classes, fine-tune = the others) and
:meth:`FineTuneTask.language` (base facts, then new facts, on the fact corpus).
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

__all__ = ["FineTuneTask", "digits_finetune", "language_finetune", "clear_base_cache"]

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
        return {"base_task": self.base_task.fingerprint(), "base_name": self.base_task.name, "base_seed": self.base_seed}

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
