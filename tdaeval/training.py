"""Training one model, or many small models at once with ``torch.func``.

:func:`train_model` is a plain PyTorch loop (``torch.optim.SGD``).
:func:`train_models` trains many models of the same task together: their
parameters are stacked, one forward of all models (the model's own
``stacked_forward`` hook where it has one, see :func:`stacked_forward_of`,
else ``vmap(functional_call)``) and one backward per step compute every
model's gradient, each model with its own subset, seed, initialisation and
batch order; models with large outputs train in consecutive groups
(:data:`GROUP_OUTPUT_BYTES`). Both use the same batch order (``torch.Generator`` seeded
with the model's seed, one ``randperm`` per epoch) and, through
:class:`tdaeval.nn.SeededDropout`, the same dropout masks, so they give the same
models up to floating-point summation order.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.nn import (
    SeededDropout,
    draw_words,
    dropout_generator,
    noise_words,
    scaled_keep_mask,
    seed_dropout,
    unseed_dropout,
)

if TYPE_CHECKING:  # task.py trains with train_model; this module reads only what a Task declares
    from tdaeval.task import Task, TrainRecipe

__all__ = [
    "Checkpoint", "TrainRun", "StackedModels", "train_model", "train_models", "checkpoint_epochs",
    "set_training_seed", "training_seed", "stacked_forward_of", "GROUP_OUTPUT_BYTES",
]

#: Attribute under which a trained model carries the seed of the run that produced it.
TRAINING_SEED_ATTRIBUTE = "tdaeval_training_seed"


def set_training_seed(model: nn.Module, seed: int) -> nn.Module:
    """Record on ``model`` the seed of the training run that produced it (kept by ``copy.deepcopy``).

    Attributors whose output is random by design (``random``) derive their
    randomness from it, so that models of different seeds get different draws.

    Parameters
    ----------
    model : nn.Module
        The trained model (tagged in place).
    seed : int
        The run's seed.

    Returns
    -------
    nn.Module
        ``model``.
    """
    setattr(model, TRAINING_SEED_ATTRIBUTE, int(seed))
    return model


def training_seed(model: nn.Module) -> int | None:
    """The seed recorded by :func:`set_training_seed` (``train_model``, ``train_reference``, ``seed_posterior``), or None."""
    value = getattr(model, TRAINING_SEED_ATTRIBUTE, None)
    return None if value is None else int(value)


@dataclass
class Checkpoint:
    """Parameters saved at the end of an epoch, with the learning rate in use.

    Attributes
    ----------
    epoch : int
        Epochs completed when saved (1-based); 0 for the initial parameters, recorded only on request
        (``train_model(..., include_initial=True)``; for a :class:`~tdaeval.tasks.finetune.FineTuneTask` these are
        the base model).
    lr : float
        Learning rate of the steps that led here (the TracIn weight); 0.0 for the epoch-0 checkpoint, since no
        step led there, so that it adds nothing to a learning-rate-weighted sum (TracIn) it is passed to.
    params : dict of str to Tensor
        Detached copies of the model's parameters.
    """

    epoch: int
    lr: float
    params: dict[str, Tensor]


@dataclass
class TrainRun:
    """A trained model (in eval mode) and the checkpoints saved on the way."""

    model: nn.Module
    checkpoints: list[Checkpoint] = field(default_factory=list)
    seed: int = 0


def checkpoint_epochs(epochs: int, n_checkpoints: int) -> list[int]:
    """Epochs (1-based) at which to save ``n_checkpoints`` evenly spaced checkpoints, last included."""
    if n_checkpoints <= 0:
        return []
    n_checkpoints = min(n_checkpoints, epochs)
    return sorted({max(1, round(epochs * (k + 1) / n_checkpoints)) for k in range(n_checkpoints)})


def _as_indices(train_indices: Tensor | Sequence[int], n_train: int) -> Tensor:
    idx = torch.as_tensor(train_indices, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise ConfigError("The 'train_indices' parameter must hold at least one index. Got an empty set.")
    if int(idx.min()) < 0 or int(idx.max()) >= n_train:
        raise ConfigError(
            f"The 'train_indices' parameter must hold indices in [0, {n_train}). "
            f"Got values from {int(idx.min())} to {int(idx.max())}."
        )
    return idx


def train_model(
    task: Task,
    model: nn.Module,
    train_indices: Tensor | Sequence[int],
    seed: int,
    *,
    n_checkpoints: int = 0,
    device: str | torch.device = "cpu",
    include_initial: bool = False,
) -> TrainRun:
    """Train ``model`` in place with the task's recipe, one model, plain PyTorch loop.

    Parameters
    ----------
    task : Task
        Supplies data, loss and recipe.
    model : nn.Module
        Initialised model (e.g. ``task.build_model(seed)``).
    train_indices : Tensor
        ``[k]`` indices into ``task.train_data``.
    seed : int
        Seeds the batch order and the dropout masks.
    n_checkpoints : int
        Evenly spaced end-of-epoch checkpoints to keep (the last is the final model).
    device : str or torch.device
        Where to train.
    include_initial : bool
        Also record ``model``'s parameters before the first step as ``Checkpoint(epoch=0, lr=0.0)``, first in
        ``checkpoints`` (opt-in: off by default, so the default checkpoint lists, and the sums TracIn and Source form
        over them, are unchanged). For a fine-tuning task these are the base model (DDA's debias term). Its learning
        rate is 0.0 (no step led there), so a TracIn-style ``Σ lr · g·g`` it enters by mistake is unchanged.

    Returns
    -------
    TrainRun
    """
    recipe = task.recipe
    idx = _as_indices(train_indices, task.n_train)
    model = model.to(device)
    x_all = task.train_data.inputs.to(device)
    y_all = task.train_data.targets.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    generator = torch.Generator().manual_seed(int(seed))
    save_at = set(checkpoint_epochs(recipe.epochs, n_checkpoints))
    checkpoints: list[Checkpoint] = []
    if include_initial:
        initial = {k: v.detach().clone() for k, v in model.named_parameters()}
        checkpoints.append(Checkpoint(epoch=0, lr=0.0, params=initial))
    n = idx.numel()
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    model.train()
    seed_dropout(model, int(seed))
    for epoch in range(recipe.epochs):
        order = idx[torch.randperm(n, generator=generator)].to(device)
        for s in range(steps_per_epoch):
            batch = order[s * recipe.batch_size : (s + 1) * recipe.batch_size]
            loss = task.loss(model(x_all[batch]), y_all[batch]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch + 1 in save_at:
            params = {k: v.detach().clone() for k, v in model.named_parameters()}
            checkpoints.append(Checkpoint(epoch=epoch + 1, lr=recipe.lr, params=params))
    unseed_dropout(model)
    model.eval()
    set_training_seed(model, int(seed))
    return TrainRun(model=model, checkpoints=checkpoints, seed=int(seed))


class StackedModels:
    """``M`` models of one architecture held as stacked parameters ``[M, ...]``.

    Parameters
    ----------
    template : nn.Module
        A model of the architecture (its own weights are not used).
    params, buffers : dict of str to Tensor
        Stacked tensors, leading dimension ``M``.
    """

    def __init__(self, template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        self.template = copy.deepcopy(template).eval()
        self.params = params
        self.buffers = buffers

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedModels":
        """Stack the parameters and buffers of models of identical architecture."""
        params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k, _ in models[0].named_parameters()}
        buffers = {k: torch.stack([dict(m.named_buffers())[k].detach() for m in models]) for k, _ in models[0].named_buffers()}
        return cls(models[0], params, buffers)

    @classmethod
    def concatenate(cls, parts: Sequence["StackedModels"]) -> "StackedModels":
        """The models of ``parts`` (same architecture) in order, as one stack."""
        params = {k: torch.cat([p.params[k] for p in parts]) for k in parts[0].params}
        buffers = {k: torch.cat([p.buffers[k] for p in parts]) for k in parts[0].buffers}
        return cls(parts[0].template, params, buffers)

    def model(self, index: int) -> nn.Module:
        """Model ``index`` as an ordinary module in eval mode."""
        model = copy.deepcopy(self.template)
        persistent = model.state_dict().keys()
        tensors = {**self.params, **self.buffers}
        model.load_state_dict({k: tensors[k][index] for k in persistent})
        return model.eval()

    @torch.no_grad()
    def measure(self, task: Task, data: Data | None = None) -> Tensor:
        """Measurement of every model on ``data`` (default: the task's test split).

        Returns
        -------
        Tensor
            ``[M, n]`` float32.
        """
        data = task.test_data if data is None else data
        device = next(iter(self.params.values())).device
        x, y = data.inputs.to(device), data.targets.to(device)

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor]) -> Tensor:
            return task.measurement(functional_call(self.template, (params, buffers), (x,)), y)

        try:
            return vmap(one)(self.params, self.buffers).float()
        except RuntimeError:
            return torch.stack([task.measure(self.model(i), data) for i in range(len(self))])


def train_models(
    task: Task,
    subsets: Sequence[Tensor] | Tensor,
    seeds: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    batched: bool = True,
) -> StackedModels:
    """Train one model per ``(subset, seed)`` pair, all at once where possible.

    Parameters
    ----------
    task : Task
        Supplies data, model factory, loss and recipe.
    subsets : sequence of Tensor or Tensor
        ``M`` index tensors into ``task.train_data`` (or one ``[M, k]`` tensor).
    seeds : sequence of int
        ``M`` seeds; seed ``m`` initialises model ``m`` and orders its batches.
    device : str or torch.device
        Where to train.
    batched : bool
        Stack the models and train them together (through the model's
        ``stacked_forward`` hook, else ``vmap``; in groups of at most as many
        models as keep one step's stacked output under
        :data:`GROUP_OUTPUT_BYTES`). Falls back to one at a
        time when the task overrides ``train`` or the subsets differ in size
        (silently: both are expected), and with a warning when ``vmap`` cannot
        run the model.

    Returns
    -------
    StackedModels
        The ``M`` trained models in the order given.
    """
    subsets = [_as_indices(s, task.n_train) for s in subsets]
    seeds = [int(s) for s in seeds]
    if len(subsets) != len(seeds):
        raise ConfigError(
            f"train_models expects one seed per subset. Got {len(subsets)} subsets and {len(seeds)} seeds."
        )
    if not subsets:
        raise ConfigError("train_models expects at least one subset. Got none.")
    same_size = len({s.numel() for s in subsets}) == 1
    if batched and same_size and task.trains_with_recipe:
        try:
            first = task.build_model(seeds[0]).to(device)  # sizes the groups, then trains as model 0: every model is built once
            size = _group_size(task, first, len(seeds), device)
            groups = [
                _train_stacked(task, subsets[start : start + size], seeds[start : start + size], device,
                               first_model=first if start == 0 else None)
                for start in range(0, len(seeds), size)
            ]
            return groups[0] if len(groups) == 1 else StackedModels.concatenate(groups)
        except _VmapUnsupported as err:
            warnings.warn(
                f"Batched training is not possible for {type(task).__name__} ({err}); training one model at a time.",
                stacklevel=2,
            )
    models = [task.train(task.build_model(seed).to(device), s, seed) for s, seed in zip(subsets, seeds)]
    return StackedModels.from_models(models)


class _VmapUnsupported(Exception):
    pass


#: Largest model output of one training step, in bytes, that :func:`train_models` lets a group of stacked models
#: reach: more models are trained in consecutive groups. On the language-model task (logits ``[M, 128, 6, 237]``,
#: 0.7 MB per model) 50 models at once took 20% longer per model than groups of 25 (one thread, memory traffic).
GROUP_OUTPUT_BYTES = 16 * 2**20


@torch.no_grad()
def _group_size(task: Task, model: nn.Module, n_models: int, device: str | torch.device) -> int:
    """How many models to stack at once: as many as keep the stacked output of one step under GROUP_OUTPUT_BYTES.

    ``model`` is one of the models to train (its forward runs in eval mode on one batch; its mode is restored).
    """
    was_training = model.training
    batch = task.train_data.inputs[: task.recipe.batch_size].to(device)
    try:
        outputs = model.eval()(batch)
    finally:
        model.train(was_training)
    if not isinstance(outputs, Tensor):
        return n_models
    per_model = outputs.numel() * outputs.element_size()
    return max(1, min(n_models, GROUP_OUTPUT_BYTES // max(per_model, 1)))


def stacked_forward_of(model: nn.Module) -> Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor] | None:
    """The model's optional ``stacked_forward(params, buffers, inputs)`` hook, or None.

    A module may define ``stacked_forward(params, buffers, inputs) -> outputs`` that computes ``M`` models at once
    from parameters and buffers stacked ``[M, ...]`` under its own names, on inputs ``[M, b, ...]``, returning
    ``[M, b, ...]``: ``outputs[m]`` must equal ``functional_call(model, (params[m], buffers[m]), (inputs[m],))`` up to
    floating-point summation order, differentiably in ``params``, with dropout (in training mode) from the
    ``"<name>.mask"`` buffers the stacked trainer fills. :func:`train_models` then uses it instead of
    ``vmap(functional_call)``; written for the leading model dimension (``baddbmm`` over stacked weights, one
    batched attention product), it avoids what ``vmap`` adds around small layers. Example:
    :meth:`tdaeval.nn.TinyCausalLM.stacked_forward`.
    """
    hook = getattr(model, "stacked_forward", None)
    return hook if callable(hook) else None


@torch.no_grad()
def _dropout_calls(template: nn.Module, x: Tensor) -> list[tuple[str, torch.Size, int]]:
    """``(name, input shape, numel)`` of each SeededDropout call, in call order, for one model's batch ``x``."""
    calls: list[tuple[str, torch.Size, int]] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: calls.append((name, inp[0].shape, inp[0].numel())))
        for name, m in template.named_modules()
        if isinstance(m, SeededDropout) and m.p > 0
    ]
    template.eval()
    try:
        template(x)
    finally:
        template.train()
        for h in handles:
            h.remove()
    names = [name for name, _, _ in calls]
    if len(names) != len(set(names)):
        raise _VmapUnsupported("a SeededDropout layer is called more than once per forward pass")
    return calls


def _epoch_noise_plan(
    template: nn.Module,
    x_all: Tensor,
    order: Tensor,
    batch_size: int,
    cache: dict[int, list[tuple[str, torch.Size, int]]],
) -> list[list[tuple[str, torch.Size, int]]]:
    """Dropout draws of every step of one epoch, in the order a sequential run makes them."""
    plan = []
    for start in range(0, order.numel(), batch_size):
        batch = order[start : start + batch_size]
        if batch.numel() not in cache:
            cache[batch.numel()] = _dropout_calls(template, x_all[batch])
        plan.append(cache[batch.numel()])
    return plan


def _train_stacked(task: Task, subsets: list[Tensor], seeds: list[int], device: str | torch.device,
                   first_model: nn.Module | None = None) -> StackedModels:
    recipe = task.recipe
    models = [first_model if i == 0 and first_model is not None else task.build_model(seed).to(device) for i, seed in enumerate(seeds)]
    stacked = StackedModels.from_models(models)
    template = copy.deepcopy(models[0]).train()
    names = list(stacked.params)
    leaves = [stacked.params[k].clone().requires_grad_(True) for k in names]
    buffers = {k: v.clone() for k, v in stacked.buffers.items()}
    has_dropout = any(isinstance(m, SeededDropout) and m.p > 0 for m in template.modules())
    order_generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    noise_generators = [dropout_generator(seed) for seed in seeds]
    x_all = task.train_data.inputs.to(device)
    y_all = task.train_data.targets.to(device)
    subset_matrix = torch.stack(subsets).to(device)  # [M, k]
    n = subset_matrix.shape[1]

    def forward(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(template, (p, b), (x,))

    # The forward runs through the model's own stacked_forward hook where it has
    # one (see stacked_forward_of), else under vmap; the per-example loss runs on
    # the flattened [M * batch] outputs; one ordinary backward follows. Model m's
    # loss depends only on its own slice of the stacked parameters, so the
    # gradient of the sum of the models' mean losses is every model's own gradient.
    stacked_forward = stacked_forward_of(template) or vmap(forward, randomness="different")
    dropout_p = {n: m.p for n, m in template.named_modules() if isinstance(m, SeededDropout)}
    momentum_buffers: list[Tensor] | None = None
    dropout_calls: dict[int, list[tuple[str, torch.Size, int]]] = {}
    noise_buffer: Tensor | None = None
    first_step = True
    for _ in range(recipe.epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in order_generators]).to(device)
        orders = torch.gather(subset_matrix, 1, perms)  # [M, k]
        if has_dropout:
            # One draw per model and epoch, sliced in the order a sequential run draws.
            plan = _epoch_noise_plan(template, x_all, orders[0], recipe.batch_size, dropout_calls)
            total = sum(noise_words(numel) for step_calls in plan for _, _, numel in step_calls)
            if noise_buffer is None or noise_buffer.shape[1] != total:
                noise_buffer = torch.empty(len(seeds), total, dtype=torch.int64)
            for row, g in zip(noise_buffer, noise_generators):
                row.copy_(draw_words(total, g))
            epoch_noise = noise_buffer.to(device)
            offset = 0
        for s, start in enumerate(range(0, n, recipe.batch_size)):
            batch = orders[:, start : start + recipe.batch_size]
            if has_dropout:
                for name, shape, numel in plan[s]:
                    words = epoch_noise[:, offset : offset + noise_words(numel)]
                    noise = words.view(torch.int16)[:, :numel].reshape(-1, *shape)
                    buffers[f"{name}.mask"] = scaled_keep_mask(noise, dropout_p[name], x_all.dtype)
                    offset += noise_words(numel)
            try:
                outputs = stacked_forward(dict(zip(names, leaves)), buffers, x_all[batch])
                n_models, batch_size = batch.shape
                losses = task.loss(outputs.flatten(0, 1), y_all[batch].flatten(0, 1)).view(n_models, batch_size)
                grads = torch.autograd.grad(losses.mean(dim=1).sum(), leaves)
            except RuntimeError as err:
                if first_step:
                    raise _VmapUnsupported(str(err).splitlines()[0]) from err
                raise
            first_step = False
            with torch.no_grad():
                momentum_buffers = _sgd_step_(leaves, list(grads), momentum_buffers, recipe)
    for name in dropout_p:
        buffers[f"{name}.mask"] = torch.empty(len(seeds), 0, device=device)
    params = {k: leaf.detach() for k, leaf in zip(names, leaves)}
    return StackedModels(template, params, buffers)


def _sgd_step_(
    params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor] | None, recipe: TrainRecipe
) -> list[Tensor] | None:
    """One ``torch.optim.SGD`` step in place (momentum without dampening, L2 weight decay); returns the buffers."""
    if recipe.weight_decay:
        grads = torch._foreach_add(grads, params, alpha=recipe.weight_decay)
    if recipe.momentum:
        if momentum_buffers is None:
            momentum_buffers = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(momentum_buffers, recipe.momentum)
            torch._foreach_add_(momentum_buffers, grads)
        grads = momentum_buffers
    torch._foreach_add_(params, grads, alpha=-recipe.lr)
    return momentum_buffers
