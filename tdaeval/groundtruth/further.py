"""Further-training gold standard for final-model-only attribution (Wei et al. 2024, "FiMO"; docs: Methods §3).

Given only a final model ``θ_f``: further train it on the full data and on the
data without point ``i``, with the *same* batch order minus ``i`` (paired),
and compare the test measurements:
``a_i(z) = mean_ξ [ f(z; θ_f + Δθ(D∖i, ξ)) − f(z; θ_f + Δθ(D, ξ)) ]``, recorded
after every epoch of further training (a curve), then centred over the
left-out points. All ``S · (n_left_out + 1)`` runs start from ``θ_f`` and are
trained together with ``torch.func.vmap`` (in groups of ``max_runs``); each
run is a keyed job in the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tdaeval.errors import ConfigError
from tdaeval.groundtruth.jobs import GROUNDTRUTH_VERSION, derive_seed
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, current_mode
from tdaeval.groundtruth.store import ArtifactStore, job_key
from tdaeval.groundtruth.truths import GroundTruth
from tdaeval.params import check_int_at_least
from tdaeval.task import Task

__all__ = ["FurtherTrainingSpec", "FurtherTrainingGroundTruth", "further_train", "build_further_training_groundtruth", "model_digest"]


@dataclass(frozen=True)
class FurtherTrainingSpec:
    """How to further train.

    Attributes
    ----------
    n_left_out : int
        Training points left out, one at a time (a seeded sample; all when >= n_train).
    n_seeds : int
        S, batch orders ξ (the paper: 10–20 capture most of the benefit of 100).
    epochs : int
        Epochs of further training; the curve has a point after each.
    lr : float, optional
        SGD step size (no momentum); default the task recipe's.
    batch_size : int, optional
        Default the task recipe's.
    subtract_mean : bool
        Centre ``a_i(z)`` over the left-out points (the paper's default).
    seed : int
        Seed of the left-out sample and of the batch orders.
    mode : {"remove", "downweight"}
        ``remove``: the run for ``i`` drops ``i`` from the permutation.
        ``downweight``: it keeps the full run's batches and multiplies ``i``'s
        loss by ``1 − ε`` in every batch (batch means still divide by the
        batch size); ``a`` is then divided by ``ε``, the change per unit of
        weight, so that both modes are on the removal scale.
    downweight : float, optional
        ``ε`` in (0, 1] for ``mode="downweight"`` (default ``1/n_train``).
    """

    n_left_out: int = 100
    n_seeds: int = 10
    epochs: int = 5
    lr: float | None = None
    batch_size: int | None = None
    subtract_mean: bool = True
    seed: int = 0
    mode: str = "remove"
    downweight: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("remove", "downweight"):
            raise ConfigError(f"The 'mode' parameter of further training must be 'remove' or 'downweight'. Got {self.mode!r} instead.")
        if self.downweight is not None and not (
            isinstance(self.downweight, (int, float)) and not isinstance(self.downweight, bool) and 0 < self.downweight <= 1
        ):
            raise ConfigError(f"The 'downweight' parameter of further training must be None or in (0, 1]. Got {self.downweight!r} instead.")
        check_int_at_least("n_left_out", "further training", self.n_left_out, 2)
        check_int_at_least("n_seeds", "further training", self.n_seeds, 1)
        check_int_at_least("epochs", "further training", self.epochs, 1)
        if self.batch_size is not None:
            check_int_at_least("batch_size", "further training", self.batch_size, 1)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0):
            raise ConfigError(f"The 'lr' parameter of further training must be None or > 0. Got {self.lr!r} instead.")


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's parameter and buffer names and values (part of every further-training key)."""
    digest = hashlib.sha256()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _batches(order: Tensor, left_out: int | None, batch_size: int, epsilon: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One epoch as ``[steps, batch_size]`` indices, loss weights and real-example masks (padded).

    ``epsilon`` None: ``left_out`` is removed from ``order`` (the later batches
    shift by one). Otherwise it stays in place with loss weight ``1 − epsilon``.
    """
    kept = order if left_out is None or epsilon is not None else order[order != left_out]
    steps = -(-order.numel() // batch_size)  # the full run's number of steps, for every run
    index = torch.zeros(steps * batch_size, dtype=torch.long)
    real = torch.zeros(steps * batch_size)
    index[: kept.numel()], real[: kept.numel()] = kept, 1.0
    weight = real.clone()
    if left_out is not None and epsilon is not None:
        weight[: kept.numel()][kept == left_out] = 1.0 - epsilon
    return index.view(steps, batch_size), weight.view(steps, batch_size), real.view(steps, batch_size)


def further_train(
    task: Task,
    model: nn.Module,
    runs: list[tuple[int, int | None]],
    epochs: int,
    lr: float,
    batch_size: int,
    device: str | torch.device = "cpu",
    epsilon: float | None = None,
) -> Tensor:
    """Further train copies of ``model``, one per run ``(order_seed, left_out)``, all at once; measure after each epoch.

    Run ``(ξ, i)`` takes plain SGD steps (no momentum) on the mean task loss of
    minibatches in the order of a permutation seeded by ``ξ`` (a new one each
    epoch), with training point ``i`` removed from it (``None``: nothing
    removed); the removed run keeps the full run's number of steps, its last
    minibatch one example shorter (an empty one is a no-op). With ``epsilon``
    the point stays in its batch with loss weight ``1 − epsilon`` instead
    (down-weighting). Dropout is off.

    Returns
    -------
    Tensor
        ``[len(runs), epochs + 1, n_test]`` float32: the test measurement of
        every run before further training and after each epoch.
    """
    model = model.to(device).eval()
    names = [name for name, _ in model.named_parameters()]
    start = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}
    params = {name: value.unsqueeze(0).repeat(len(runs), *([1] * value.dim())).clone() for name, value in start.items()}
    inputs, targets = task.train_data.inputs.to(device), task.train_data.targets.to(device)
    test_x, test_y = task.test_data.inputs.to(device), task.test_data.targets.to(device)
    n = task.n_train

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor, w: Tensor, real: Tensor) -> Tensor:
        per_example = task.loss(functional_call(model, {**p, **buffers}, (x,)), y)
        return (per_example * w).sum() / real.sum().clamp_min(1.0)

    def measure(p: dict[str, Tensor]) -> Tensor:
        return task.measurement(functional_call(model, {**p, **buffers}, (test_x,)), test_y)

    step = vmap(grad(loss))
    measure_all = vmap(measure)
    curve = [measure_all(params).detach()]
    for epoch in range(epochs):
        index, weight, real = [], [], []
        for order_seed, left_out in runs:
            generator = torch.Generator().manual_seed(int(derive_seed("further-order", order_seed, epoch)))
            i, w, r = _batches(torch.randperm(n, generator=generator), left_out, batch_size, epsilon)
            index.append(i)
            weight.append(w)
            real.append(r)
        index, weight, real = (torch.stack(t).to(device) for t in (index, weight, real))  # [runs, steps, batch]
        for t in range(index.shape[1]):
            grads = step(params, inputs[index[:, t]], targets[index[:, t]], weight[:, t], real[:, t])
            params = {name: params[name] - lr * grads[name] for name in names}
        curve.append(measure_all(params).detach())
    return torch.stack(curve, dim=1).float().cpu()


@dataclass
class FurtherTrainingGroundTruth(GroundTruth):
    """Further-training outputs and the gold standard ``a``.

    Attributes
    ----------
    left_out : Tensor
        ``[k]`` training indices left out.
    full_outputs : Tensor
        ``[S, epochs + 1, n_test]``.
    left_out_outputs : Tensor
        ``[k, S, epochs + 1, n_test]``.
    """

    left_out: Tensor
    full_outputs: Tensor
    left_out_outputs: Tensor
    spec: FurtherTrainingSpec
    higher_is_better: bool
    provenance: dict[str, Any] = field(default_factory=dict)
    epsilon: float = 1.0

    @property
    def effects(self) -> Tensor:
        """``[epochs + 1, n_test, k]`` float64: ``a_i(z)`` after each epoch (centred over ``i`` when the spec says so)."""
        a = (self.left_out_outputs.double() - self.full_outputs.double().unsqueeze(0)).mean(dim=1)  # [k, E+1, n_test]
        if self.spec.mode == "downweight":
            a = a / self.epsilon
        a = a.permute(1, 2, 0)
        return a - a.mean(dim=-1, keepdim=True) if self.spec.subtract_mean else a

    @property
    def harm(self) -> Tensor:
        """``[epochs + 1, n_test, k]``: positive = leaving ``i`` out hurt ``z`` (``i`` supported it)."""
        return -self.effects if self.higher_is_better else self.effects


def build_further_training_groundtruth(
    task: Task,
    model: nn.Module,
    spec: FurtherTrainingSpec,
    store: ArtifactStore,
    *,
    device: str = "cpu",
    max_runs: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> FurtherTrainingGroundTruth:
    """Further train (or load from ``store``) every run and collect the curves."""
    if task.n_train < 3:
        raise ConfigError(f"Further training needs at least 3 training points. Got {task.n_train}.")
    generator = torch.Generator().manual_seed(spec.seed)
    if spec.n_left_out >= task.n_train:
        left_out = torch.arange(task.n_train)
    else:
        left_out = torch.sort(torch.randperm(task.n_train, generator=generator)[: spec.n_left_out]).values
    recipe = task.recipe
    lr = spec.lr if spec.lr is not None else recipe.lr
    batch_size = spec.batch_size or recipe.batch_size
    digest = model_digest(model)
    epsilon = None if spec.mode == "remove" else (spec.downweight if spec.downweight is not None else 1.0 / task.n_train)
    order_seeds = [derive_seed("further", spec.seed, s) for s in range(spec.n_seeds)]
    runs = [(xi, None) for xi in order_seeds] + [(xi, int(i)) for i in left_out for xi in order_seeds]

    def run_spec(run: tuple[int, int | None]) -> dict[str, Any]:
        return {
            "kind": "further_train_measure", "version": GROUNDTRUTH_VERSION, "task": task.fingerprint(), "model": digest,
            "order_seed": run[0], "left_out": run[1], "epochs": spec.epochs, "lr": lr, "batch_size": batch_size,
            "optimizer": "sgd", "momentum": 0.0, "mode": spec.mode, "epsilon": epsilon,
        }

    results: dict[tuple[int, int | None], Tensor] = {}
    missing = []
    shape = (spec.epochs + 1, task.n_test)
    for run in runs:
        stored = store.load(job_key(run_spec(run)), run_spec(run))
        if stored is not None and stored.get("outputs") is not None and tuple(stored["outputs"].shape) == shape:
            results[run] = stored["outputs"]
        else:
            missing.append(run)
    reused = len(results)
    if progress:
        progress(len(results), len(runs))
    mode = current_mode()
    missing = [run for run in missing if mode is None or mode.owns(job_key(run_spec(run)))]
    trained = 0
    for start in range(0, len(missing), max_runs):
        group = missing[start : start + max_runs]
        trained += len(group)
        outputs = further_train(task, model, group, spec.epochs, lr, batch_size, device=device, epsilon=epsilon)
        for run, row in zip(group, outputs):
            store.save(job_key(run_spec(run)), run_spec(run), {"outputs": row.clone()})
            results[run] = row
        if progress:
            progress(len(results), len(runs))
    if mode is not None:
        absent = len(runs) - len(results)
        mode.counts.append({"kind": "further_training", "jobs": len(runs), "stored": reused, "trained": trained, "missing": absent})
        if absent:
            raise IncompleteGroundTruth("further_training", absent, len(runs))
    full = torch.stack([results[(xi, None)] for xi in order_seeds])
    without = torch.stack([torch.stack([results[(xi, int(i))] for xi in order_seeds]) for i in left_out])
    provenance = {
        "kind": "further_training",
        **asdict(spec),
        "lr": lr,
        "batch_size": batch_size,
        "left_out": left_out.tolist(),
        "order_seeds": order_seeds,
        "model_digest": digest,
        "task_fingerprint": task.fingerprint(),
        "measurement": task.measurement_name,
        "higher_is_better": task.higher_is_better,
        "paired_permutations": True,
        "epsilon": epsilon,
        "further_training_runs": len(runs),
        "runs_reused": reused,
        "runs_trained": trained,
        "store": str(store.root),
    }
    return FurtherTrainingGroundTruth(left_out, full, without, spec, task.higher_is_better, provenance, epsilon or 1.0)
