"""Ensembles of attributors (Deng, Li, Zhang, Ma 2024, "Efficient Ensembles"; METHODS.md §5).

An ensemble wraps any attributor (a registry name with parameters, or an
unfitted instance) and averages its scores over *members*: models that stand
for the trained model. The members differ by ensemble:

* :class:`NaiveEnsemble` (``naive``): ``I`` models trained from scratch with
  different seeds (the fitted model plus ``I − 1`` trained at once with the
  task's recipe).
* :class:`CheckpointEnsemble` (``checkpoints``): the last ``C`` checkpoints of
  the training run passed to ``fit``.
* :class:`DropoutEnsemble` (``dropout``): ``I`` trained models × ``K``
  dropout passes at attribution time, each pass a copy of the model whose
  dropout layers apply a fixed, seeded mask (per member, or per example).

Every ensemble records ``cost_``: the extra training it did (seconds and
models), the attribution ("serving") time of its members, and the bytes it
would have to store to serve again (member parameters and masks' seeds), so
the efficiency claims of the paper can be checked on equal terms.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.attributors.base import Attributor, get, register
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError, check_int_at_least
from tdaeval.nn import SeededDropout

__all__ = [
    "Ensemble",
    "NaiveEnsemble",
    "CheckpointEnsemble",
    "DropoutEnsemble",
    "MemberDropout",
    "naive",
    "checkpoints",
    "dropout",
    "model_with_params",
    "parameter_bytes",
    "with_member_dropout",
]

MASK_MODES = ("member", "example")


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (what storing one member costs)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def model_with_params(model: nn.Module, params: dict[str, Tensor], owner: str) -> nn.Module:
    """A deep copy of ``model`` holding ``params`` (a checkpoint's parameters), never the caller's model."""
    names = dict(model.named_parameters())
    if not isinstance(params, dict) or set(params) != set(names):
        raise ConfigError(
            f"Attributor {owner!r}: a checkpoint must hold a 'params' dict with exactly the model's parameters "
            f"{sorted(names)[:5]}..."
        )
    member = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in member.named_parameters():
            param.copy_(params[name].to(param.device, param.dtype))
    return member


class Ensemble(Attributor):
    """Mean of a base attributor's scores over members; subclasses say what the members are.

    Parameters
    ----------
    attributor : str or Attributor
        The base attributor: a registry name (built with ``attributor_params``)
        or an unfitted instance (deep-copied for every member).
    attributor_params : dict, optional
        Parameters of the base attributor when it is given by name.
    seed : int
        Seed of whatever the ensemble draws (extra models, masks).
    device : str, optional
        Where extra members are trained.
    """

    name = "ensemble"

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        if isinstance(attributor, Attributor):
            if attributor_params:
                raise ConfigError(
                    f"The 'attributor_params' parameter of {type(self).__name__} applies to an attributor given by name; "
                    "got an instance too. Pass its parameters to its constructor instead."
                )
            if hasattr(attributor, "model_"):
                raise ConfigError(
                    f"The 'attributor' parameter of {type(self).__name__} must be unfitted (it is copied per member). "
                    f"Got a fitted {attributor.display_name!r}."
                )
            self.template_ = attributor
        elif isinstance(attributor, str):
            self.template_ = get(attributor, **(attributor_params or {}))
        else:
            raise ConfigError(
                f"The 'attributor' parameter of {type(self).__name__} must be a registry name or an Attributor instance. "
                f"Got {type(attributor).__name__}."
            )
        if isinstance(self.template_, Ensemble):
            raise ConfigError(f"The 'attributor' parameter of {type(self).__name__} cannot itself be an ensemble.")
        self.attributor = attributor if isinstance(attributor, str) else self.template_.display_name
        self.attributor_params = dict(attributor_params or {})
        self.seed = check_int_at_least("seed", type(self).__name__, seed, 0)
        self.device = device

    @property
    def display_name(self) -> str:
        return getattr(self, "_display_name", None) or f"{self.name}({self.template_.display_name})"

    # --- what subclasses provide ------------------------------------------------------------------------
    def _members(self) -> list[tuple[nn.Module, list | None]]:
        """``(model, checkpoints)`` per member; the time spent here counts as training."""
        raise NotImplementedError

    def _storage_bytes(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        """Bytes needed to serve the ensemble again (default: every member's parameters)."""
        return sum(parameter_bytes(model) for model, _ in members)

    # --- the mechanics ----------------------------------------------------------------------------------
    def _fit(self) -> None:
        start = time.perf_counter()
        members = self._members()
        training = time.perf_counter() - start
        start = time.perf_counter()
        self.members_: list[Attributor] = []
        for model, member_checkpoints in members:
            member = copy.deepcopy(self.template_)
            member.fit(self.task_, model, self.train_, checkpoints=member_checkpoints)
            self.members_.append(member)
        self.cost_ = {
            "members": len(members),
            "training_seconds": training,
            "serving_seconds": time.perf_counter() - start,
            "storage_bytes": self._storage_bytes(members),
        }

    def _attribute(self, test: Data) -> Tensor:
        start = time.perf_counter()
        total = None
        for member in self.members_:
            scores = member.attribute(test).double()
            total = scores if total is None else total + scores
        self.cost_["serving_seconds"] += time.perf_counter() - start
        return (total / len(self.members_)).float()


def _check_checkpoints(checkpoints: list | None, owner: str) -> None:
    if not checkpoints:
        raise ConfigError(
            f"Attributor {owner!r} needs checkpoints of the training run: pass checkpoints=[...] to fit() "
            "(tdaeval.training.train_model(..., n_checkpoints=k) records them)."
        )


@register
class NaiveEnsemble(Ensemble):
    """``I`` independently trained models: the fitted one plus ``I − 1`` trained from scratch with other seeds.

    The extra models are trained at once (``train_models``, batched) with the
    task's recipe on all training data; their seeds derive from ``seed``. The
    base attributor gets the run's checkpoints for the fitted model only (the
    extra models keep none), so use it with attributors that work on the final
    model.

    Parameters
    ----------
    attributor, attributor_params, seed, device
        As :class:`Ensemble`.
    n_models : int
        ``I`` (>= 1); ``I = 1`` is the base attributor itself.
    """

    name = "naive_ensemble"
    contract_params = {"n_models": 2}

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_models: int = 4,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device)
        self.n_models = check_int_at_least("n_models", "NaiveEnsemble", n_models, 1)

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        members: list[tuple[nn.Module, list | None]] = [(self.model_, self.checkpoints_)]
        if self.n_models > 1:
            from tdaeval.groundtruth.jobs import derive_seed
            from tdaeval.training import train_models

            seeds = [derive_seed("naive-ensemble", self.seed, m) for m in range(1, self.n_models)]
            everything = torch.arange(len(self.train_))
            stacked = train_models(self.task_, [everything] * len(seeds), seeds, device=self.device or "cpu")
            members += [(stacked.model(i).eval(), None) for i in range(len(seeds))]
        return members


@register
class CheckpointEnsemble(Ensemble):
    """The last ``C`` checkpoints of the training run passed to ``fit``, one member each.

    Parameters
    ----------
    attributor, attributor_params, seed, device
        As :class:`Ensemble`.
    n_checkpoints : int, optional
        ``C``; default all of them.
    """

    name = "checkpoint_ensemble"

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_checkpoints: int | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device)
        if n_checkpoints is not None:
            check_int_at_least("n_checkpoints", "CheckpointEnsemble", n_checkpoints, 1)
        self.n_checkpoints = n_checkpoints

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        _check_checkpoints(self.checkpoints_, self.display_name)
        chosen = self.checkpoints_ if self.n_checkpoints is None else self.checkpoints_[-self.n_checkpoints :]
        return [(model_with_params(self.model_, c.params, self.display_name).eval(), None) for c in chosen]


# --- dropout ------------------------------------------------------------------------------------------------


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha256(repr(("tdaeval-member-dropout", *parts)).encode()).hexdigest()[:15], 16)


class MemberDropout(nn.Module):
    """Dropout with a fixed, seeded mask, applied in train and eval mode alike.

    ``mode="member"``: one mask over the features, shared by every example
    (set by :func:`with_member_dropout` from a forward pass on one example).
    ``mode="example"``: each example gets its own mask, a deterministic
    pseudo-random function of the member's seed and of which of the example's
    inputs to this layer are positive (after a ReLU: its active units), so an
    example sees the same mask in every pass and whether gradients are taken
    per example under ``vmap`` or by a batched forward pass. Examples with the
    same activation pattern share a mask.

    Parameters
    ----------
    p : float
        Drop probability in [0, 1).
    mode : {"member", "example"}
    seed : int
        Seed of the mask (member mode) or of the hash (example mode).
    """

    def __init__(self, p: float, mode: str, seed: int) -> None:
        super().__init__()
        self.p, self.mode, self.seed = float(p), mode, int(seed)
        self.register_buffer("mask", torch.empty(0), persistent=False)
        self.register_buffer("direction", torch.empty(0), persistent=False)
        self.register_buffer("phase", torch.empty(0), persistent=False)

    def prime(self, example: Tensor) -> None:
        """Draw the buffers for inputs shaped like ``example`` ``[1, ...]``."""
        features = example.shape[1:]
        generator = torch.Generator().manual_seed(self.seed)
        keep = (torch.rand(features, generator=generator) >= self.p).float() / (1.0 - self.p)
        self.mask = keep.to(example.device, example.dtype)
        width = int(torch.Size(features).numel())
        self.direction = torch.randn(width, generator=generator, dtype=torch.float64).to(example.device)
        self.phase = (torch.rand(width, generator=generator, dtype=torch.float64) * 1000.0).to(example.device)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.mask.numel():  # identity until primed (with_member_dropout primes every layer)
            return x
        if self.mode == "member":
            return x * self.mask
        # The key hashes which inputs are positive (after a ReLU: which units are active), which is
        # exact whether the example is alone or in a batch; float values would differ in the last bits.
        active = (x.detach() > 0).reshape(x.shape[0], -1).double()
        key = active @ self.direction  # [B]
        uniform = torch.frac(torch.sin(key[:, None] * 9973.0 + self.phase[None, :]).abs() * 43758.5453)
        keep = (uniform >= self.p).to(x.dtype).reshape(x.shape) / (1.0 - self.p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, seed={self.seed}"


def _dropout_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Dropout, SeededDropout))]


def with_member_dropout(model: nn.Module, example: Tensor, p: float | None, mode: str, seed: int) -> nn.Module:
    """A copy of ``model`` whose dropout layers apply fixed seeded masks (:class:`MemberDropout`), in eval mode.

    Parameters
    ----------
    model : nn.Module
        A model with ``nn.Dropout`` or :class:`~tdaeval.nn.SeededDropout` layers.
    example : Tensor
        One input ``[1, ...]`` (sets the mask shapes).
    p : float, optional
        Drop rate; None keeps each layer's own.
    mode : {"member", "example"}
    seed : int
        Member seed; layer ``l`` draws from ``(seed, l)``.
    """
    member = copy.deepcopy(model).eval()
    layers = _dropout_layers(member)
    replacements = {}
    for index, (name, layer) in enumerate(layers):
        rate = layer.p if p is None else p
        replacements[name] = MemberDropout(rate, mode, _seed_of(seed, index))
    for name, module in replacements.items():
        parent_name, _, child = name.rpartition(".")
        parent = member.get_submodule(parent_name) if parent_name else member
        setattr(parent, child, module)
    # One forward pass on one example records each layer's input shape.
    shapes: dict[str, Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda mod, args, name=name: shapes.setdefault(name, args[0][:1]))
        for name, module in replacements.items()
    ]
    try:
        with torch.no_grad():
            member(example.to(next(iter(member.parameters())).device))
    finally:
        for hook in hooks:
            hook.remove()
    for name, module in replacements.items():
        if name not in shapes:
            raise ConfigError(f"Dropout layer {name!r} is not called in the forward pass; cannot build dropout members.")
        module.prime(shapes[name])
    return member


@register
class DropoutEnsemble(Ensemble):
    """``I`` trained models × ``K`` dropout passes at attribution time (METHODS.md §5).

    Every member is a copy of a trained model in eval mode whose dropout layers
    apply a fixed seeded mask (:class:`MemberDropout`) at rate ``p``: one mask
    per member shared by all examples (``mask_mode="member"``), or one per
    example and member (``"example"``, as dattri's ``vmap(randomness=
    "different")`` draws them, but reproducible). The base attributor sees the
    member as an ordinary deterministic model, so its training and test
    gradients use the same masks.

    Parameters
    ----------
    attributor, attributor_params, seed, device
        As :class:`Ensemble`.
    n_models : int
        ``I``: the fitted model plus ``I − 1`` trained from scratch (as :class:`NaiveEnsemble`).
    n_passes : int
        ``K`` dropout passes per model.
    p : float, optional
        Drop rate at attribution time, in [0, 1); default each layer's own rate.
    mask_mode : {"member", "example"}
    """

    name = "dropout_ensemble"
    contract_params = {"n_passes": 2, "p": 0.1}
    #: The model must contain dropout layers (read by the common tests).
    needs_dropout_layers = True

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_models: int = 1,
        n_passes: int = 4,
        p: float | None = None,
        mask_mode: str = "member",
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device)
        self.n_models = check_int_at_least("n_models", "DropoutEnsemble", n_models, 1)
        self.n_passes = check_int_at_least("n_passes", "DropoutEnsemble", n_passes, 1)
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0):
            raise ConfigError(f"The 'p' parameter of DropoutEnsemble must be None or in [0, 1). Got {p!r} instead.")
        if mask_mode not in MASK_MODES:
            raise ConfigError(f"The 'mask_mode' parameter of DropoutEnsemble must be one of {MASK_MODES}. Got {mask_mode!r} instead.")
        self.p = None if p is None else float(p)
        self.mask_mode = mask_mode

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        if not _dropout_layers(self.model_):
            raise ConfigError(
                f"Attributor {self.display_name!r} needs a 'model' with dropout layers (nn.Dropout or "
                "tdaeval.nn.SeededDropout); this one has none. Use naive_ensemble or checkpoint_ensemble instead."
            )
        bases = NaiveEnsemble._members(self)  # the fitted model plus n_models - 1 trained ones
        example = self.train_.inputs[:1]
        members = []
        for m, (model, _) in enumerate(bases):
            for k in range(self.n_passes):
                members.append((with_member_dropout(model, example, self.p, self.mask_mode, _seed_of(self.seed, m, k)), None))
        self._bases = [model for model, _ in bases]
        return members

    def _storage_bytes(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        # The masks are regenerated from seeds: only the trained models are stored.
        return sum(parameter_bytes(model) for model in self._bases)


def naive(attributor: str | Attributor = "grad_dot", n_models: int = 4, **params: Any) -> NaiveEnsemble:
    """``naive(I)``: :class:`NaiveEnsemble` of ``attributor`` over ``n_models`` independently trained models."""
    return NaiveEnsemble(attributor, n_models=n_models, **params)


def checkpoints(attributor: str | Attributor = "grad_dot", n_checkpoints: int | None = None, **params: Any) -> CheckpointEnsemble:
    """``checkpoints(C)``: :class:`CheckpointEnsemble` of ``attributor`` over the last ``C`` checkpoints."""
    return CheckpointEnsemble(attributor, n_checkpoints=n_checkpoints, **params)


def dropout(
    attributor: str | Attributor = "grad_dot",
    n_models: int = 1,
    n_passes: int = 4,
    p: float | None = None,
    mask_mode: str = "member",
    **params: Any,
) -> DropoutEnsemble:
    """``dropout(I, K, p, mask_mode)``: :class:`DropoutEnsemble` of ``attributor``."""
    return DropoutEnsemble(attributor, n_models=n_models, n_passes=n_passes, p=p, mask_mode=mask_mode, **params)
