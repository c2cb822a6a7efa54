"""Ground truth of tail-patch: the one-step effect of every training example on every test query (issue #16, item 5).

``Δ[q, i] = f(q; θ − η·u(∇L(z_i))) − f(q; θ)``: the change of the test
function ``f`` on query ``q`` when the reference model ``θ`` takes one
optimizer step of size ``η`` on the single training example ``z_i`` (its
per-example training loss ``L``), the optimizer starting from fresh state.
This is what Quanda's ``TailPatchMetric`` (and TrackStar's tail-patch)
measures for an attributor's top-``k`` proponents one deep copy at a time;
here the whole ``[n_test, n_train]`` matrix is computed in one batched pass
(per-example gradients with ``vmap(grad)``, then ``vmap`` of
``functional_call`` at the perturbed parameters over chunks of training
examples, every query evaluated at once), cached in the store, and an
attributor's tail-patch becomes a lookup (:class:`tdaeval.metrics.tail_patch.TailPatch`).

The update ``u`` of the first step from fresh state:

* ``"sgd"``: ``u = g`` (``g + wd·θ`` with ``weight_decay``, as ``torch.optim.SGD``);
* ``"adam"``: Adam's first step, ``m̂ = g``, ``v̂ = g²``, so ``u = g / (|g| + eps)``
  (``g`` includes ``wd·θ``, as ``torch.optim.Adam``); independent of the betas;
* ``"adamw"``: the same step on ``θ·(1 − η·wd)`` (decoupled decay, ``torch.optim.AdamW``).

The function ``f`` (``delta``): ``"measurement"`` the task's measurement;
``"logprob"`` ``−task.loss`` (the log-probability of the target: for a query
of the language-model task with one answer position, ``log p(answer)``);
``"prob"`` ``exp(−task.loss)`` (Quanda's ``p_new − p₀``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.further import model_digest
from tdaeval.groundtruth.jobs import GROUNDTRUTH_VERSION
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, current_mode
from tdaeval.groundtruth.store import ArtifactStore, job_key
from tdaeval.groundtruth.truths import GroundTruth
from tdaeval.task import Task
from tdaeval.training import training_seed

__all__ = [
    "OPTIMIZERS",
    "DELTAS",
    "DTYPES",
    "OneStepEffectSpec",
    "OneStepEffectTruth",
    "one_step_objective",
    "one_step_effects",
    "one_step_key",
    "build_one_step_effects",
]

#: The optimizers whose first step from fresh state is simulated.
OPTIMIZERS = ("sgd", "adam", "adamw")
#: The test functions ``f`` whose one-step change is recorded.
DELTAS = ("measurement", "logprob", "prob")
#: Precision of the computation (and of the stored matrix).
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value > 0


@dataclass(frozen=True)
class OneStepEffectSpec:
    """What one step is taken and what is measured (everything that changes ``Δ``; part of the store key).

    Attributes
    ----------
    eta : float
        Step size ``η`` (> 0). Keep it small (``≤ lr/50`` of the training
        recipe): at the training learning rate one step is far outside the
        first-order regime and every attributor's tail-patch is about zero or negative.
    optimizer : {"sgd", "adam", "adamw"}
        First step from fresh state (module docstring).
    delta : {"measurement", "logprob", "prob"}
        The test function ``f`` (module docstring).
    weight_decay : float
        ``wd`` (>= 0): coupled for ``sgd``/``adam``, decoupled for ``adamw``.
    eps : float
        Adam's ``eps`` (> 0; unused by ``sgd``).
    dtype : {"float32", "float64"}
        Precision of the computation (``float64`` for the ``η → 0`` check).
    """

    eta: float
    optimizer: str = "sgd"
    delta: str = "measurement"
    weight_decay: float = 0.0
    eps: float = 1e-8
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not _positive_number(self.eta):
            raise ConfigError(f"The 'eta' parameter of tail-patch must be a number > 0. Got {self.eta!r} instead.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"The 'optimizer' parameter of tail-patch must be one of {OPTIMIZERS}. Got {self.optimizer!r} instead.")
        if self.delta not in DELTAS:
            raise ConfigError(f"The 'delta' parameter of tail-patch must be one of {DELTAS}. Got {self.delta!r} instead.")
        if not (isinstance(self.weight_decay, (int, float)) and not isinstance(self.weight_decay, bool) and self.weight_decay >= 0):
            raise ConfigError(f"The 'weight_decay' parameter of tail-patch must be a number >= 0. Got {self.weight_decay!r} instead.")
        if not _positive_number(self.eps):
            raise ConfigError(f"The 'eps' parameter of tail-patch must be a number > 0. Got {self.eps!r} instead.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"The 'dtype' parameter of tail-patch must be one of {tuple(DTYPES)}. Got {self.dtype!r} instead.")
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "weight_decay", float(self.weight_decay))
        object.__setattr__(self, "eps", float(self.eps))


@dataclass(frozen=True, eq=False)
class OneStepEffectTruth(GroundTruth):
    """The one-step effect matrix ``Δ`` of tail-patch.

    Attributes
    ----------
    effects : Tensor
        ``[n_test, n_train]`` floating: ``Δ[q, i] = f(q; θ − η·u(∇L(z_i))) − f(q; θ)``
        (rows are test queries, columns training examples).
    higher_is_better : bool
        Direction of ``f`` (the task's for ``delta="measurement"``, True for ``logprob``/``prob``).
    spec : OneStepEffectSpec
        How ``Δ`` was computed.
    provenance : dict
        Task fingerprint, model digest and seed, timings, store.
    """

    effects: Tensor
    higher_is_better: bool
    spec: OneStepEffectSpec
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        effects = torch.as_tensor(self.effects)
        if effects.ndim != 2 or not effects.dtype.is_floating_point:
            raise ConfigError("The 'effects' field of OneStepEffectTruth must be a floating Tensor [n_test, n_train]. "
                              f"Got {effects.dtype} of shape {tuple(effects.shape)}.")
        if not bool(torch.isfinite(effects).all()):
            raise ConfigError(f"The 'effects' field of OneStepEffectTruth has {int((~torch.isfinite(effects)).sum())} non-finite values.")
        if not isinstance(self.spec, OneStepEffectSpec):
            raise ConfigError(f"The 'spec' field of OneStepEffectTruth must be a OneStepEffectSpec. Got {type(self.spec).__name__}.")
        object.__setattr__(self, "effects", effects)
        object.__setattr__(self, "higher_is_better", bool(self.higher_is_better))

    @property
    def gain(self) -> Tensor:
        """``[n_test, n_train]`` float64: ``Δ`` oriented so that positive = the step on ``z_i`` improved ``q``."""
        effects = self.effects.double()
        return effects if self.higher_is_better else -effects


def one_step_objective(task: Task, delta: str) -> tuple[Callable[[Tensor, Tensor], Tensor], bool]:
    """The test function ``f(outputs, targets) -> [n]`` of ``delta`` and its direction (higher is better)."""
    if delta == "measurement":
        return task.measurement, bool(task.higher_is_better)
    if delta == "logprob":
        return (lambda outputs, targets: -task.loss(outputs, targets)), True
    if delta == "prob":
        return (lambda outputs, targets: torch.exp(-task.loss(outputs, targets))), True
    raise ConfigError(f"The 'delta' parameter of tail-patch must be one of {DELTAS}. Got {delta!r} instead.")


def _as_dtype(tensor: Tensor, dtype: torch.dtype, device: str | torch.device) -> Tensor:
    tensor = tensor.detach().to(device)
    return tensor.to(dtype) if tensor.dtype.is_floating_point else tensor


def _first_step(theta: Tensor, g: Tensor, spec: OneStepEffectSpec) -> Tensor:
    """``θ'`` of one step from fresh state; ``theta`` ``[...]``, ``g`` ``[c, ...]`` (one gradient per example) → ``[c, ...]``."""
    eta, wd = spec.eta, spec.weight_decay
    if spec.optimizer == "sgd":
        return theta - eta * (g + wd * theta) if wd else theta - eta * g
    if spec.optimizer == "adam":
        g = g + wd * theta if wd else g
        return theta - eta * g / (g.abs() + spec.eps)
    return theta * (1.0 - eta * wd) - eta * g / (g.abs() + spec.eps)  # adamw: decoupled decay, then the Adam step


def one_step_effects(
    task: Task,
    model: nn.Module,
    spec: OneStepEffectSpec,
    *,
    train: Data | None = None,
    test: Data | None = None,
    device: str | torch.device = "cpu",
    chunk_size: int = 64,
    query_chunk_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The one-step effect matrix ``Δ`` ``[n_test, n_train]``, in one batched pass (no store).

    For each chunk of ``chunk_size`` training examples: their per-example
    loss gradients at ``θ`` (``vmap(grad)``), the first optimizer step of
    each (:class:`OneStepEffectSpec`), and ``f`` of every query at each
    perturbed parameter vector (``vmap`` of ``functional_call`` over the
    chunk, queries in chunks of ``query_chunk_size``). Memory is bounded by
    ``chunk_size`` parameter copies and ``chunk_size · query_chunk_size``
    outputs. The model is evaluated in eval mode (dropout off) and left in
    the mode it was in; only parameters with ``requires_grad`` take the step.

    Parameters
    ----------
    task : Task
        Supplies the loss (``L``) and the measurement.
    model : nn.Module
        The reference model ``θ``.
    spec : OneStepEffectSpec
        The step and the test function.
    train, test : Data, optional
        Training examples (columns) and queries (rows); default the task's splits.
    device : str or torch.device
        Where to compute.
    chunk_size : int
        Training examples per ``vmap`` (>= 1).
    query_chunk_size : int
        Queries per evaluation (>= 1).
    progress : callable, optional
        ``progress(0, total)`` first, then ``progress(done, total)`` after each chunk of training examples.

    Returns
    -------
    Tensor
        ``[n_test, n_train]`` on the CPU, in ``spec.dtype``.
    """
    for name, value in (("chunk_size", chunk_size), ("query_chunk_size", query_chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The '{name}' parameter of tail-patch must be an integer >= 1. Got {value!r} instead.")
    train = task.train_data if train is None else train
    test = task.test_data if test is None else test
    dtype = DTYPES[spec.dtype]
    objective, _ = one_step_objective(task, spec.delta)
    params = {name: _as_dtype(p, dtype, device) for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ConfigError("Tail-patch needs a model with at least one parameter that requires grad.")
    fixed = {name: _as_dtype(p, dtype, device) for name, p in model.named_parameters() if not p.requires_grad}
    fixed.update({name: _as_dtype(b, dtype, device) for name, b in model.named_buffers()})
    train_x, train_y = _as_dtype(train.inputs, dtype, device), _as_dtype(train.targets, dtype, device)
    test_x, test_y = _as_dtype(test.inputs, dtype, device), _as_dtype(test.targets, dtype, device)

    def example_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return task.loss(functional_call(model, {**p, **fixed}, (x.unsqueeze(0),)), y.unsqueeze(0)).sum()

    def evaluate(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return objective(functional_call(model, {**p, **fixed}, (x,)), y)

    gradients = vmap(grad(example_loss), in_dims=(None, 0, 0))
    evaluate_all = vmap(evaluate, in_dims=(0, None, None))

    def measure(stacked: dict[str, Tensor]) -> Tensor:  # [c, ...] parameters -> [c, n_test]
        return torch.cat([evaluate_all(stacked, test_x[s : s + query_chunk_size], test_y[s : s + query_chunk_size])
                          for s in range(0, len(test), query_chunk_size)], dim=1)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = measure({name: p.unsqueeze(0) for name, p in params.items()})[0]  # the same vmapped path as the perturbed values
        rows = []
        if progress is not None:  # nothing done yet: a display reads the first report as "already stored"
            progress(0, len(train))
        for start in range(0, len(train), chunk_size):
            x, y = train_x[start : start + chunk_size], train_y[start : start + chunk_size]
            g = gradients(params, x, y)
            with torch.no_grad():
                stepped = {name: _first_step(theta, g[name].detach(), spec) for name, theta in params.items()}
                rows.append((measure(stepped) - base).detach().cpu())
            if progress is not None:
                progress(min(start + chunk_size, len(train)), len(train))
    finally:
        model.train(was_training)
    return torch.cat(rows, dim=0).T.contiguous()


def one_step_key(task: Task, model: nn.Module, spec: OneStepEffectSpec) -> tuple[str, dict[str, Any]]:
    """The store key of ``Δ`` and the spec it hashes: task fingerprint, model digest and seed, and every field of ``spec``."""
    tracked = [name for name, p in model.named_parameters() if p.requires_grad]
    everything = len(tracked) == len(list(model.parameters()))
    key_spec = {
        "kind": "tail_patch", "version": GROUNDTRUTH_VERSION, "task": task.fingerprint(), "model": model_digest(model),
        "model_seed": training_seed(model), "tracked": "all" if everything else tracked, **asdict(spec),
        "n_train": task.n_train, "n_test": task.n_test,
    }
    return job_key(key_spec), key_spec


def build_one_step_effects(
    task: Task,
    model: nn.Module,
    spec: OneStepEffectSpec,
    store: ArtifactStore | None = None,
    *,
    device: str | torch.device = "cpu",
    chunk_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> OneStepEffectTruth:
    """Load ``Δ`` from ``store`` (key :func:`one_step_key`), else compute it (:func:`one_step_effects`) and store it.

    A changed ``eta``, optimizer, ``delta``, weight decay, ``eps``, dtype,
    task or model is a different key, computed afresh. In a sharded build
    the matrix is one job (computed by the shard owning its key); a plan-only
    build computes nothing and raises :class:`~tdaeval.groundtruth.IncompleteGroundTruth`
    when it is missing. Without a store nothing is cached.

    Raises
    ------
    ConfigError
        When some ``Δ`` is not finite (e.g. ``delta="prob"`` or a huge ``eta`` overflowing): lower ``eta``.
    """
    key, key_spec = one_step_key(task, model, spec)
    _, higher_is_better = one_step_objective(task, spec.delta)
    shape = (task.n_test, task.n_train)
    effects, seconds = None, 0.0
    if store is not None:
        stored = store.load(key, key_spec)
        if stored is not None and stored.get("effects") is not None and tuple(stored["effects"].shape) == shape:
            effects = stored["effects"]
    reused = effects is not None
    if progress is not None and reused:
        progress(1, 1)
    mode = current_mode()
    if effects is None and mode is not None and not mode.owns(key):
        mode.counts.append({"kind": "tail_patch", "jobs": 1, "stored": 0, "trained": 0, "missing": 1})
        raise IncompleteGroundTruth("tail_patch", 1, 1)
    if effects is None:
        started = time.perf_counter()
        effects = one_step_effects(task, model, spec, device=device, chunk_size=chunk_size, progress=progress)
        seconds = time.perf_counter() - started
        if not bool(torch.isfinite(effects).all()):
            raise ConfigError(f"Tail-patch: {int((~torch.isfinite(effects)).sum())} one-step effects are not finite at "
                              f"eta={spec.eta} ({spec.optimizer}, delta={spec.delta!r}); lower 'eta'.")
        if store is not None:
            store.save(key, key_spec, {"effects": effects})
    if mode is not None:
        mode.counts.append({"kind": "tail_patch", "jobs": 1, "stored": int(reused), "trained": int(not reused), "missing": 0})
    provenance = {
        "kind": "tail_patch",
        **asdict(spec),
        "key": key,
        "task_fingerprint": key_spec["task"],
        "model_digest": key_spec["model"],
        "model_seed": key_spec["model_seed"],
        "tracked_params": key_spec["tracked"],
        "measurement": task.measurement_name if spec.delta == "measurement" else spec.delta,
        "higher_is_better": higher_is_better,
        "reused": reused,
        "seconds": seconds,
        "store": None if store is None else str(store.root),
    }
    return OneStepEffectTruth(effects=effects, higher_is_better=higher_is_better, spec=spec, provenance=provenance)
