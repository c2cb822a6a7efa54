"""Ensembles of attributors (Deng, Li, Zhang, Ma 2024, "Efficient Ensembles"; docs: Methods §5).

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
* :class:`LoRAEnsemble` (``lora``): ``I`` trained models × ``K`` low-rank
  adapters fine-tuned from each with different seeds (all ``K`` at once with
  ``torch.func``); gradients over the adapters only, or over all parameters.

Every ensemble records ``cost_``: the extra training it did (seconds and
models), the attribution ("serving") time of its members, and the bytes it
would have to store to serve again (member parameters and masks' seeds), so
the efficiency claims of the paper can be checked on equal terms.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.attributors._members import MemberStack, stack_members
from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, get, register
from tdaeval.attributors.gradient import GradCos, GradDot, _measurement_objective
from tdaeval.attributors.trak import TRAK
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.hashing import derive_seed
from tdaeval.nn import SeededDropout, adapters_only, add_lora, lora_parameters
from tdaeval.params import Boolean, Instance, Interval, ListOf, Options
from tdaeval.training import train_models

__all__ = [
    "Ensemble",
    "NaiveEnsemble",
    "CheckpointEnsemble",
    "DropoutEnsemble",
    "LoRAEnsemble",
    "MemberDropout",
    "base_attributor",
    "finetune_adapters",
    "naive",
    "checkpoints",
    "dropout",
    "lora",
    "parameter_bytes",
    "with_member_dropout",
]

MASK_MODES = ("member", "example")


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (what storing one member costs)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def base_attributor(attributor: str | Attributor, attributor_params: dict[str, Any] | None, owner: str) -> Attributor:
    """The unfitted attributor a wrapper (ensemble, seed posterior) copies: built by name, or the instance given.

    Raises
    ------
    ConfigError
        A fitted instance, parameters next to an instance, or neither a name nor an instance.
    """
    if isinstance(attributor, Attributor):
        if attributor_params:
            raise ConfigError(
                f"The 'attributor_params' parameter of {owner} applies to an attributor given by name; "
                "got an instance too. Pass its parameters to its constructor instead."
            )
        if hasattr(attributor, "model_"):
            raise ConfigError(
                f"The 'attributor' parameter of {owner} must be unfitted (it is copied per member). "
                f"Got a fitted {attributor.display_name!r}."
            )
        return attributor
    if isinstance(attributor, str):
        return get(attributor, **(attributor_params or {}))
    raise ConfigError(
        f"The 'attributor' parameter of {owner} must be a registry name or an Attributor instance. "
        f"Got {type(attributor).__name__}."
    )


class WrappingAttributor(Attributor):
    """Shared by the ensembles and the seed posterior: copies of a base attributor fitted to member models.

    Subclasses keep the base with :meth:`_keep_base` and provide
    :meth:`_members` (the member models; the time spent there counts as
    training), :meth:`_fit_members` and :meth:`_storage_bytes`; :meth:`_fit`
    times them and fills :attr:`cost_`, and :meth:`_serving` adds the time of
    attribution to it.
    """

    _parameter_constraints = {
        "attributor": [Instance(str, "a registry name"), Instance(Attributor, "an Attributor instance")],
        "attributor_params": [None, Instance(dict)],
        "seed": [Interval(int, 0, None)],
        "device": DEVICE_CONSTRAINT,
    }

    def _keep_base(self, attributor: str | Attributor, attributor_params: dict[str, Any] | None) -> None:
        """Set ``template_`` (the unfitted base attributor) and ``attributor`` / ``attributor_params`` as reported."""
        self.template_ = base_attributor(attributor, attributor_params, type(self).__name__)
        self.attributor = attributor if isinstance(attributor, str) else self.template_.display_name
        self.attributor_params = dict(attributor_params or {})

    @property
    def display_name(self) -> str:
        return self._display_name or f"{self.name}({self.template_.display_name})"

    # --- what subclasses provide ------------------------------------------------------------------------
    def _members(self) -> Any:
        """The member models (and the checkpoints their copies get); the time spent here counts as training."""
        raise NotImplementedError

    def _fit_members(self, members: Any) -> int:
        """Fit copies of the base attributor to ``members``; returns how many score at attribution."""
        raise NotImplementedError

    def _storage_bytes(self, members: Any) -> int:
        """Bytes needed to serve again."""
        raise NotImplementedError

    # --- the mechanics ----------------------------------------------------------------------------------
    def _fit(self) -> None:
        start = time.perf_counter()
        members = self._members()
        training = time.perf_counter() - start
        start = time.perf_counter()
        n_members = self._fit_members(members)
        self.cost_ = {
            "members": n_members,
            "training_seconds": training,
            "serving_seconds": time.perf_counter() - start,
            "storage_bytes": self._storage_bytes(members),
        }

    def _fitted_copy(self, model: nn.Module, checkpoints: list | None) -> Attributor:
        """A copy of the base attributor fitted to ``model`` (with ``checkpoints``)."""
        return copy.deepcopy(self.template_).fit(self.task_, model, self.train_, checkpoints=checkpoints)

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """Add the time spent inside to ``cost_["serving_seconds"]``."""
        start = time.perf_counter()
        yield
        self.cost_["serving_seconds"] += time.perf_counter() - start


class Ensemble(WrappingAttributor):
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
    batch_members : bool
        Compute ``grad_dot`` / ``grad_cos`` for all members at once (stacked
        parameters, ``vmap``, layer-wise factors; members of one architecture
        whose parameters all sit in ``nn.Linear`` layers), else one member
        after the other. Other attributors always run member by member.
    """

    name = "ensemble"
    _parameter_constraints = {**WrappingAttributor._parameter_constraints, "batch_members": [Boolean()]}

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        seed: int = 0,
        device: str | None = None,
        batch_members: bool = True,
    ) -> None:
        self.batch_members = batch_members
        self._keep_base(attributor, attributor_params)
        if isinstance(self.template_, Ensemble):
            raise ConfigError(f"The 'attributor' parameter of {type(self).__name__} cannot itself be an ensemble.")
        self.seed = seed
        self.device = device

    # --- what subclasses provide ------------------------------------------------------------------------
    def _members(self) -> list[tuple[nn.Module, list | None]]:
        """``(model, checkpoints)`` per member; the time spent here counts as training."""
        raise NotImplementedError

    def _storage_bytes(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        """Bytes needed to serve the ensemble again (default: every member's parameters)."""
        return sum(parameter_bytes(model) for model, _ in members)

    # --- the mechanics ----------------------------------------------------------------------------------
    def _fit_members(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        self.member_models_ = [model for model, _ in members]
        self.stack_ = self._stack(self.member_models_)
        self.members_: list[Attributor] = []
        if self.stack_ is not None:
            self.train_factors_ = self.stack_.factors(self.task_.loss, self.train_, self.template_.chunk_size)
            self.train_norms_ = self._norms(self.train_factors_)
        else:
            self.members_ = [self._fitted_copy(model, member_checkpoints) for model, member_checkpoints in members]
        return len(members)

    def _stack(self, models: list[nn.Module]) -> MemberStack | None:
        """The members stacked for the batched Grad-Dot / Grad-Cos path, or None (member by member)."""
        if (not self.batch_members or type(self.template_) not in (GradDot, GradCos) or self.template_.factorized is False
                or self.template_.params != "all"):  # the stacked path differentiates every parameter
            return None
        try:
            return stack_members(models, self.train_.inputs[:1])
        except RuntimeError:  # members on different devices
            return None

    def _norms(self, factors) -> Tensor | None:
        if not isinstance(self.template_, GradCos):
            return None
        return MemberStack.sq_norms(factors).sqrt().clamp_min(1e-12)

    def _attribute(self, test: Data) -> Tensor:
        with self._serving():
            if self.stack_ is not None:
                test_factors = self.stack_.factors(_measurement_objective(self.task_), test, self.template_.chunk_size)
                scores = MemberStack.mean_products(test_factors, self.train_factors_, self._norms(test_factors), self.train_norms_)
            else:
                total = None
                for member in self.members_:
                    member_scores = member.attribute(test).double()
                    total = member_scores if total is None else total + member_scores
                scores = (total / len(self.members_)).float()
        return scores


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
    attributor, attributor_params, seed, device, batch_members
        As :class:`Ensemble`.
    n_models : int
        ``I`` (>= 1); ``I = 1`` is the base attributor itself.
    """

    name = "naive_ensemble"
    contract_params = {"n_models": 2}
    _parameter_constraints = {**Ensemble._parameter_constraints, "n_models": [Interval(int, 1, None)]}

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_models: int = 4,
        seed: int = 0,
        device: str | None = None,
        batch_members: bool = True,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device, batch_members)
        self.n_models = n_models

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        members: list[tuple[nn.Module, list | None]] = [(self.model_, self.checkpoints_)]
        if self.n_models > 1:
            seeds = [derive_seed("naive-ensemble", self.seed, m) for m in range(1, self.n_models)]
            everything = torch.arange(len(self.train_))
            stacked = train_models(self.task_, [everything] * len(seeds), seeds, device=self.device or "cpu")
            members += [(stacked.model(i).eval(), None) for i in range(len(seeds))]
        return members


@register
class CheckpointEnsemble(Ensemble):
    """The last ``C`` checkpoints of the training run passed to ``fit``, one member each.

    An epoch-0 checkpoint (``train_model(..., include_initial=True)``: the initial parameters, or a fine-tuning
    task's base model) is not a point the run trained to and is never a member; only epoch-0 checkpoints is an
    ``AttributorError``.

    Parameters
    ----------
    attributor, attributor_params, seed, device, batch_members
        As :class:`Ensemble`.
    n_checkpoints : int, optional
        ``C``; default all of them.
    """

    name = "checkpoint_ensemble"
    _parameter_constraints = {**Ensemble._parameter_constraints, "n_checkpoints": [None, Interval(int, 1, None)]}
    requires_checkpoints = True

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_checkpoints: int | None = None,
        seed: int = 0,
        device: str | None = None,
        batch_members: bool = True,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device, batch_members)
        self.n_checkpoints = n_checkpoints

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        trained = self._trained_checkpoints()
        if self.n_checkpoints is not None:
            trained = trained[-self.n_checkpoints:]
        return [(self._checkpoint_model(k, c).eval(), None) for k, c in trained]


# --- dropout ------------------------------------------------------------------------------------------------


def _seed_of(*parts: Any) -> int:
    """A member's 60-bit seed from ``parts`` (:func:`~tdaeval.hashing.derive_seed`, ``repr`` encoding: values fixed before it existed)."""
    return derive_seed("tdaeval-member-dropout", *parts, bits=60, encoding="repr")


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
    """``I`` trained models × ``K`` dropout passes at attribution time (docs: Methods §5).

    Every member is a copy of a trained model in eval mode whose dropout layers
    apply a fixed seeded mask (:class:`MemberDropout`) at rate ``p``: one mask
    per member shared by all examples (``mask_mode="member"``), or one per
    example and member (``"example"``, as dattri's ``vmap(randomness=
    "different")`` draws them, but reproducible). The base attributor sees the
    member as an ordinary deterministic model, so its training and test
    gradients use the same masks.

    Parameters
    ----------
    attributor, attributor_params, seed, device, batch_members
        As :class:`Ensemble`.
    n_models : int
        ``I``: the fitted model plus ``I − 1`` trained from scratch (as :class:`NaiveEnsemble`).
    n_passes : int
        ``K`` dropout passes per model.
    p : float, optional
        Drop rate at attribution time, in [0, 1); default each layer's own rate.
    mask_mode : {"member", "example"}
    trak_q_only : bool
        For a ``trak`` base attributor: the masked passes compute only TRAK's
        ``Q = 1 − p`` term (forward passes), averaged over the ``K`` passes,
        while the projected gradients and the kernel come from the unmasked
        model (the paper's cheaper TRAK variant); ``I`` members, not ``I·K``.
    """

    name = "dropout_ensemble"
    contract_params = {"n_passes": 2, "p": 0.1}
    #: The model must contain dropout layers (read by the common tests).
    needs_dropout_layers = True
    _parameter_constraints = {
        **Ensemble._parameter_constraints,
        "n_models": [Interval(int, 1, None)],
        "n_passes": [Interval(int, 1, None)],
        "p": [None, Interval(float, 0, 1, closed="left")],
        "mask_mode": [Options(MASK_MODES)],
        "trak_q_only": [Boolean()],
    }

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_models: int = 1,
        n_passes: int = 4,
        p: float | None = None,
        mask_mode: str = "member",
        trak_q_only: bool = False,
        seed: int = 0,
        device: str | None = None,
        batch_members: bool = True,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device, batch_members)
        if trak_q_only and not isinstance(self.template_, TRAK):
            raise ConfigError(
                f"The 'trak_q_only' parameter of DropoutEnsemble applies to a 'trak' base attributor; "
                f"got {self.template_.display_name!r}."
            )
        self.trak_q_only = trak_q_only
        self.n_models, self.n_passes = n_models, n_passes
        self.p = None if p is None else float(p)
        self.mask_mode = mask_mode

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        if not _dropout_layers(self.model_):
            raise ConfigError(
                f"Attributor {self.display_name!r} needs a 'model' with dropout layers (nn.Dropout or "
                "tdaeval.nn.SeededDropout); this one has none. Use naive_ensemble or checkpoint_ensemble instead."
            )
        if self.p is None and all(layer.p == 0 for _, layer in _dropout_layers(self.model_)):
            # e.g. TinyCausalLM at dropout=0 keeps its SeededDropout layers: every member would be the model itself
            raise ConfigError(
                f"Attributor {self.display_name!r}: every dropout layer of the model has rate 0, so with p=None (each "
                "layer's own rate) no member would drop anything; pass p (e.g. p=0.1) or train the model with dropout."
            )
        bases = NaiveEnsemble._members(self)  # the fitted model plus n_models - 1 trained ones
        example = self.train_.inputs[:1]
        seeds = self._member_seeds()
        members = []
        for m, (model, _) in enumerate(bases):
            for k in range(self.n_passes):
                seed = seeds[m * self.n_passes + k]
                members.append((with_member_dropout(model, example, self.p, self.mask_mode, seed), None))
        self._bases = [model for model, _ in bases]
        return members

    def _member_seeds(self) -> list[int]:
        """The mask seed of each member, base model by base model (``I·K``)."""
        return [_seed_of(self.seed, m, k) for m in range(self.n_models) for k in range(self.n_passes)]

    def _storage_bytes(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        # The masks are regenerated from seeds: only the trained models are stored.
        return sum(parameter_bytes(model) for model in self._bases)

    def _fit_members(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        if not self.trak_q_only:
            return super()._fit_members(members)
        # members: I·K masked models, pass-major within each base model
        self.member_models_, self.stack_, self.members_ = [model for model, _ in members], None, []
        for m, base in enumerate(self._bases):
            trak = self._fitted_copy(base, None)
            masked = [model for model, _ in members[m * self.n_passes : (m + 1) * self.n_passes]]
            # Q from the masked forward passes; gradients and kernel stay those of the unmasked model.
            trak.q_ = torch.stack([trak._q(model, self.train_) for model in masked]).mean(0)
            self.members_.append(trak)
        return len(self.members_)


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


# --- LoRA ---------------------------------------------------------------------------------------------------

GRAD_PARAMS = ("lora", "all")


def finetune_adapters(
    task: Any,
    models: Sequence[nn.Module],
    data: Data,
    seeds: Sequence[int],
    steps: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.0,
) -> list[nn.Module]:
    """Fine-tune the adapters (``lora_A``, ``lora_B``) of ``models``, all at once, in place.

    The models must share everything but their adapters (copies of one base
    model with adapters from :func:`~tdaeval.nn.add_lora`). Model ``k`` takes
    SGD steps with heavy-ball ``momentum`` on the mean ``task.loss`` of
    minibatches of ``batch_size`` drawn in a seeded order (``seeds[k]``; a new
    permutation every pass over ``data``), in eval mode (dropout off). The
    ``K`` models are stacked and stepped together with ``torch.func.vmap``, so
    fine-tuning them together equals fine-tuning each alone.

    Returns
    -------
    list of nn.Module
        ``models``, fine-tuned, in eval mode.
    """
    from torch.func import functional_call, grad, vmap

    if steps == 0:
        return [m.eval() for m in models]
    template = models[0].eval()
    names = list(lora_parameters(template))
    fixed = {name: t for name, t in template.named_parameters() if name not in names}
    fixed.update(dict(template.named_buffers()))
    adapters = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]) for name in names}
    velocity = {name: torch.zeros_like(value) for name, value in adapters.items()}
    device = next(iter(adapters.values())).device
    n = len(data)

    def order(seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(int(seed))
        per_pass = max(1, n // batch_size) if n >= batch_size else 1
        passes = -(-steps // per_pass)
        rows = []
        for _ in range(passes):
            perm = torch.randperm(n, generator=generator)
            for b in range(per_pass):
                rows.append(perm[b * batch_size : (b + 1) * batch_size] if n >= batch_size else perm)
        return torch.stack(rows[:steps])  # [steps, batch]

    batches = torch.stack([order(seed) for seed in seeds])  # [K, steps, batch]

    def loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        outputs = functional_call(template, {**fixed, **params}, (x,))
        return task.loss(outputs, y).mean()

    step = vmap(grad(loss))
    inputs, targets = data.inputs.to(device), data.targets.to(device)
    for t in range(steps):
        index = batches[:, t].to(device)
        grads = step(adapters, inputs[index], targets[index])
        for name in names:
            velocity[name] = momentum * velocity[name] + grads[name]
            adapters[name] = adapters[name] - lr * velocity[name]
    with torch.no_grad():
        for k, model in enumerate(models):
            params = dict(model.named_parameters())
            for name in names:
                params[name].copy_(adapters[name][k])
    return [m.eval() for m in models]


@register
class LoRAEnsemble(Ensemble):
    """``I`` trained models × ``K`` low-rank adapters fine-tuned from each (docs: Methods §5).

    Every member is a copy of a trained model with a rank-``r`` adapter on each
    target ``nn.Linear`` / ``nn.Conv2d`` (:func:`~tdaeval.nn.add_lora`: ``B``
    starts at zero, so a fresh member computes what its base computes),
    fine-tuned for ``steps`` SGD steps on the training loss from its own seed;
    the ``K`` adapters of a base model are fine-tuned at once
    (:func:`finetune_adapters`). With ``grad_params="lora"`` (default) the base
    weights become buffers, so the base attributor's gradients cover the
    adapters only; with ``"all"`` they cover every parameter.

    Parameters
    ----------
    attributor, attributor_params, seed, device, batch_members
        As :class:`Ensemble`.
    n_models : int
        ``I`` base models (the fitted one plus ``I − 1`` trained, as :class:`NaiveEnsemble`).
    n_adapters : int
        ``K`` adapters per base model.
    rank : int
        Adapter rank ``r``.
    targets : list of str, optional
        Modules to adapt (default: every ``nn.Linear`` / ``nn.Conv2d``).
    steps : int
        Fine-tuning steps per adapter (0: fresh adapters).
    lr, batch_size : float, int, optional
        Fine-tuning step size and minibatch size (default: the task's recipe).
    grad_params : {"lora", "all"}
        Which parameters the base attributor differentiates.

    A model already adapted with ``peft`` (its parameters named
    ``….lora_A.<adapter>.weight``; extra ``lora``) is accepted with
    ``n_models=1``: its own adapters are used (``rank`` and ``targets`` do not
    apply), re-initialised per member (``A`` Gaussian, ``B`` zero) and
    fine-tuned the same way.
    """

    name = "lora_ensemble"
    contract_params = {"n_adapters": 2, "rank": 2, "steps": 5}
    _parameter_constraints = {
        **Ensemble._parameter_constraints,
        "n_models": [Interval(int, 1, None)],
        "n_adapters": [Interval(int, 1, None)],
        "rank": [Interval(int, 1, None)],
        "targets": [None, ListOf(str, description="a list of module names")],
        "steps": [Interval(int, 0, None)],
        "lr": [None, Interval(float, 0, None, closed="neither")],
        "batch_size": [None, Interval(int, 1, None)],
        "grad_params": [Options(GRAD_PARAMS)],
    }

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_models: int = 1,
        n_adapters: int = 4,
        rank: int = 4,
        targets: list[str] | None = None,
        steps: int = 100,
        lr: float | None = None,
        batch_size: int | None = None,
        grad_params: str = "lora",
        seed: int = 0,
        device: str | None = None,
        batch_members: bool = True,
    ) -> None:
        super().__init__(attributor, attributor_params, seed, device, batch_members)
        self.n_models, self.n_adapters, self.rank, self.steps = n_models, n_adapters, rank, steps
        self.targets = None if targets is None else list(targets)
        self.lr, self.batch_size, self.grad_params = lr, batch_size, grad_params

    def _peft_members(self) -> list[nn.Module]:
        """``K`` copies of a peft-adapted model with freshly initialised adapters (seeded)."""
        if self.n_models != 1:
            raise ConfigError(f"Attributor {self.display_name!r}: a peft-adapted model supports n_models=1 only. Got {self.n_models}.")
        members = []
        for k in range(self.n_adapters):
            member = copy.deepcopy(self.model_).eval()
            generator = torch.Generator().manual_seed(_seed_of("lora-peft", self.seed, k) % (2**63))
            with torch.no_grad():
                for name, param in lora_parameters(member).items():
                    if "lora_B" in name.split("."):
                        param.zero_()
                    else:
                        param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))
            members.append(adapters_only(member) if self.grad_params == "lora" else member)
        return members

    def _members(self) -> list[tuple[nn.Module, list | None]]:
        recipe = self.task_.recipe
        if lora_parameters(self.model_):  # already adapted (peft)
            lr = self.lr if self.lr is not None else recipe.lr
            seeds = [_seed_of("lora", self.seed, 0, k) % (2**63) for k in range(self.n_adapters)]
            adapted = self._peft_members()
            tuned = finetune_adapters(self.task_, adapted, self.train_, seeds, self.steps, lr, self.batch_size or recipe.batch_size, recipe.momentum)
            self._bases = [self.model_]
            return [(model, None) for model in tuned]
        bases = NaiveEnsemble._members(self)
        lr = self.lr if self.lr is not None else recipe.lr
        batch_size = self.batch_size or recipe.batch_size
        members: list[tuple[nn.Module, list | None]] = []
        self._bases = []
        for m, (base, _) in enumerate(bases):
            seeds = [_seed_of("lora", self.seed, m, k) % (2**63) for k in range(self.n_adapters)]
            try:
                adapted = [
                    add_lora(base, self.rank, seed, self.targets, train_base=self.grad_params == "all") for seed in seeds
                ]
            except ValueError as err:
                raise ConfigError(f"Attributor {self.display_name!r}: {err}") from err
            tuned = finetune_adapters(self.task_, adapted, self.train_, seeds, self.steps, lr, batch_size, recipe.momentum)
            members += [(model, None) for model in tuned]
            self._bases.append(base)
        return members

    def _storage_bytes(self, members: Sequence[tuple[nn.Module, list | None]]) -> int:
        adapters = sum(p.numel() * p.element_size() for model, _ in members for p in lora_parameters(model).values())
        return sum(parameter_bytes(model) for model in self._bases) + adapters


def lora(
    attributor: str | Attributor = "grad_dot",
    n_models: int = 1,
    n_adapters: int = 4,
    rank: int = 4,
    targets: list[str] | None = None,
    steps: int = 100,
    grad_params: str = "lora",
    **params: Any,
) -> LoRAEnsemble:
    """``lora(I, K, rank, targets, steps, grad_params)``: :class:`LoRAEnsemble` of ``attributor``."""
    return LoRAEnsemble(
        attributor, n_models=n_models, n_adapters=n_adapters, rank=rank, targets=targets, steps=steps,
        grad_params=grad_params, **params,
    )
