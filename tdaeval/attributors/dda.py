"""DDA: Debias and Denoise Attribution (Wu, Pang, Shen, Cheng, EMNLP 2024; arXiv 2410.01285).

DDA wraps an inner attributor ``I`` that scores one model, evaluates it at the parameters of every fine-tuning
checkpoint ``θ_1 … θ_E`` and at the base parameters ``θ_0`` (the model before fine-tuning), and returns

    ``DDA(z_i, q) = S_{e=1..E}( I_{θ_e}(z_i, q) − I_{θ_0}(z_i, q) )``

*debias* being the subtraction (the paper's "knowledge bias" of the base model) and *denoise* the smoothing ``S``
over the checkpoints ("varying degrees of fitting"). The paper's code is not public (the repository's scoring
files are empty) and only its abstract could be checked here, so the exact equations of its section 4 ("debias",
"denoise"; the section number as the design notes cite it, itself unchecked) are reconstructions: every choice is a
parameter of :class:`DDA`. In particular ``debias_side`` chooses what the base term is: the inner attributor
with both sides at ``θ_0`` (``"both"``, as written above), or, for gradient inners, only the query's gradient
taken at the base, ``(∇f(q; θ_e) − ∇f(q; θ_0)) · ∇L(z_i; θ_e)`` (``"query"``).

Scores are ``[n_test, n_train]``; positive means the training example supports the test measurement, the
orientation of the inner attributor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tdaeval.attributors._members import MemberStack, stack_parameter_sets
from tdaeval.attributors.base import Attributor, get, register
from tdaeval.attributors.ensembles import WrappingAttributor, parameter_bytes
from tdaeval.attributors.gradient import GradCos, GradDot, _measurement_objective
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Boolean, Instance, Interval, Options
from tdaeval.scores import Attribution
from tdaeval.task import Task

__all__ = ["DDA", "DEBIAS_SIDE", "DENOISE", "ZSCORE_OVER", "denoise_scores"]

#: Which side of the inner attributor the debias term takes at the base ``θ_0``: both (query and training), or the query only.
DEBIAS_SIDE = ("both", "query")
#: The smoothing over checkpoints ("denoise"); ``None`` keeps the last checkpoint only.
DENOISE = ("mean", "ema", "median", "zscore_mean")
#: What ``denoise="zscore_mean"`` standardises: each query's row of a checkpoint's scores, or the whole matrix.
ZSCORE_OVER = ("query", "matrix")
#: A row (or matrix) whose standard deviation is at most this times its scale counts as constant when z-scored.
_CONSTANT_TOLERANCE = 1e-6
#: Rows (examples × stacked parameter sets) of one ``vmap`` pass of the shared grad_dot / grad_cos path.
_STACK_CHUNK_ROWS = 8192


def denoise_scores(scores: Tensor, method: str | None = "mean", ema_decay: float = 0.5, zscore_over: str = "query",
                   scale: Tensor | None = None) -> Tensor:
    """Combine per-checkpoint scores ``[E, n_test, n_train]`` (checkpoints in epoch order) into ``[n_test, n_train]``.

    Parameters
    ----------
    scores : Tensor
        ``[E, n_test, n_train]``, ``E >= 1``, oldest checkpoint first.
    method : {"mean", "ema", "median", "zscore_mean"} or None
        ``"mean"``: ``(1/E) Σ_e s_e``. ``"ema"``: ``m_1 = s_1``, ``m_e = β m_{e−1} + (1 − β) s_e``, the result
        ``m_E`` (the latest checkpoint weighs most). ``"median"``: the element-wise median over checkpoints (the
        mean of the two middle values when ``E`` is even, as ``numpy.median``). ``"zscore_mean"``: each
        checkpoint's scores standardised (``(s − mean) / std``, population std, over ``zscore_over``) then
        averaged; a constant row (or matrix) standardises to 0. ``None``: the last checkpoint, ``s_E``.
    ema_decay : float
        ``β`` in ``[0, 1)`` for ``"ema"``.
    zscore_over : {"query", "matrix"}
        ``"query"``: each test example's row of each checkpoint separately; ``"matrix"``: each checkpoint's whole matrix.
    scale : Tensor, optional
        ``[E, n_test]`` magnitudes of the scores the rows came from; a row whose std is at most
        ``1e-6 × scale`` counts as constant (float noise of a difference of equal scores is not amplified to
        unit variance). Default: exact zero std only.

    Returns
    -------
    Tensor
        ``[n_test, n_train]``, the dtype of ``scores``.
    """
    if scores.dim() != 3 or scores.shape[0] < 1:
        raise ConfigError(f"denoise_scores expects scores [E >= 1, n_test, n_train]. Got shape {tuple(scores.shape)}.")
    if method is None:
        return scores[-1]
    if method == "mean":
        return scores.mean(0)
    if method == "ema":
        out = scores[0]
        for s in scores[1:]:
            out = ema_decay * out + (1.0 - ema_decay) * s
        return out
    if method == "median":
        ordered = scores.sort(dim=0).values
        e = scores.shape[0]
        return ordered[e // 2] if e % 2 else 0.5 * (ordered[e // 2 - 1] + ordered[e // 2])
    if method == "zscore_mean":
        dims = (2,) if zscore_over == "query" else (1, 2)
        mean = scores.mean(dim=dims, keepdim=True)
        std = scores.std(dim=dims, keepdim=True, correction=0)
        limit = torch.zeros_like(std)
        if scale is not None:
            row_scale = scale[:, :, None] if zscore_over == "query" else scale.amax(dim=1)[:, None, None]
            limit = _CONSTANT_TOLERANCE * row_scale.to(std.dtype)
        constant = std <= limit
        z = torch.where(constant, torch.zeros_like(scores), (scores - mean) / torch.where(constant, torch.ones_like(std), std))
        return z.mean(0)
    raise ConfigError(f"The 'method' parameter of denoise_scores must be one of {DENOISE!r} or None. Got {method!r} instead.")


def _inner_template(inner: str | Attributor, inner_params: dict[str, Any] | None) -> Attributor:
    """The unfitted inner attributor, built by name or the instance given; a ``ConfigError`` naming ``inner`` otherwise."""
    if isinstance(inner, Attributor):
        if inner_params:
            raise ConfigError("The 'inner_params' parameter of DDA applies to an inner attributor given by name; got an instance "
                              "too. Pass its parameters to its constructor instead.")
        if hasattr(inner, "model_"):
            raise ConfigError(f"The 'inner' parameter of DDA must be unfitted (it is copied per checkpoint). Got a fitted {inner.display_name!r}.")
        template = inner
    else:
        try:
            template = get(inner, **(inner_params or {}))
        except ConfigError as error:
            raise ConfigError(f"The 'inner' parameter of DDA ({inner!r}, inner_params={inner_params or {}!r}): {error}") from None
    if isinstance(template, WrappingAttributor):
        raise ConfigError(f"The 'inner' parameter of DDA must score one model; got {template.display_name!r}, which wraps other "
                          "models (an ensemble, a seed posterior or DDA itself).")
    if template.needs_checkpoints():
        raise ConfigError(f"The 'inner' parameter of DDA must score one model at one set of parameters; got {template.display_name!r}, "
                          "which needs the checkpoints of a training run (DDA evaluates it at each checkpoint instead).")
    return template


def _scores_of(result: Tensor | Attribution) -> Tensor:
    return (result.mean if isinstance(result, Attribution) else result).double()


@register
class DDA(WrappingAttributor):
    """Debias and Denoise Attribution: an inner attributor at each fine-tuning checkpoint minus at the base, smoothed.

    ``fit`` fits one copy of the inner attributor at each fine-tuning checkpoint's parameters and (``debias``) one
    at the base parameters ``θ_0``; ``attribute`` returns ``denoise_scores([I_{θ_e} − I_{θ_0}]_e)``. Cost:
    ``(E + 1)`` fits and attributions of the inner attributor (``E`` with ``debias=False``; ``1`` or ``2`` with
    ``denoise=None``).

    Shared work (``batch_members=True``, the default, chosen automatically where it applies): when the inner
    attributor is ``grad_dot`` or ``grad_cos`` (``params="all"``, ``factorized`` not False) and every parameter of
    the model sits in an ``nn.Linear`` layer with 2-D inputs, the ``E + 1`` parameter sets are stacked and the
    per-example layer factors (inputs, output gradients) of the training data at every checkpoint come from one
    ``vmap`` pass at ``fit`` (the test data's from one at ``attribute``), and the ``[E + 1, n_test, n_train]`` score
    matrices from batched matrix products; no inner attributor is fitted (``members_`` is empty, ``stack_`` set).
    The scores equal the generic path's (float32 products, as the inner attributor's). Otherwise, or with
    ``batch_members=False``, one inner attributor is fitted per parameter set.

    Which checkpoints: those passed to ``fit``. An ``epoch == 0`` checkpoint
    (``train_model(..., include_initial=True)``) is the base ``θ_0`` and never a fine-tuning checkpoint; the others
    are the fine-tuning checkpoints, taken in epoch order. Without an epoch-0 checkpoint, the base is the task's
    base model when the task is a :class:`~tdaeval.tasks.finetune.FineTuneTask`; on any other task ``debias=True``
    refuses in one line.

    What DDA means on a task trained from scratch: with ``include_initial=True`` the base is the random
    initialisation, i.e. debias removes what a *random* model's gradients already say (the research notes' "random-model
    debias"). Without an epoch-0 checkpoint there is no base, and DDA does not substitute the first checkpoint: that
    would silently redefine debias as "the change since epoch 1" and, as per-example gradients shrink during
    training, turn a training point's support for its own copy negative. The registry-wide tests therefore run
    ``dda`` with ``debias=False`` (denoise over the run's checkpoints only, a checkpoint ensemble of the inner
    attributor for ``denoise="mean"``).

    Parameters
    ----------
    inner : str or Attributor
        The inner attributor, scoring one model (``grad_dot``, ``grad_cos``, ``influence``, ``trak``, ``similarity``…): a
        registry name built with ``inner_params`` or an unfitted instance (deep-copied per checkpoint). Attributors
        that need the run's checkpoints (``tracin``, ``source``) or wrap other models (ensembles, ``seed_posterior``)
        are refused with a ``ConfigError`` naming ``inner``.
    inner_params : dict, optional
        Parameters of an inner attributor given by name.
    debias : bool
        Subtract a base term (paper §4, "debias", reconstructed; which term: ``debias_side``). ``False``: the
        denoise-only ablation.
    debias_side : {"both", "query"}
        What debias subtracts at checkpoint ``e`` (paper §4, "debias", reconstructed: the research notes leave open
        whether the paper takes both gradients at the base or only the query's, ``∇f(q; θ_0)``). ``"both"``
        (default): the inner attributor at the base, ``I_{θ_0}(z_i, q)``, both the query and the training side at
        ``θ_0``. ``"query"``: only the query side at the base, against the checkpoint's own training gradient;
        with ``g_q(θ) = ∇(−f)(q; θ)`` (``+f`` when lower is better, the :class:`GradDot` sign) and
        ``g_i(θ) = ∇L(z_i; θ)``, the per-checkpoint score is, for ``inner="grad_dot"``,

            ``(g_q(θ_e) − g_q(θ_0)) · g_i(θ_e)``

        and for ``inner="grad_cos"``

            ``cos(g_q(θ_e), g_i(θ_e)) − cos(g_q(θ_0), g_i(θ_e))``,

        the Grad-Cos of the checkpoint minus the Grad-Cos of the base query gradient against the same training
        gradient. That form (rather than the cosine of the debiased query gradient,
        ``cos(g_q(θ_e) − g_q(θ_0), g_i(θ_e))``) is chosen because it is the grad_dot rule with each product
        normalised as Grad-Cos normalises its own, so both terms are cosines on one scale and it goes to 0
        smoothly as ``θ_e → θ_0``, where the cosine of a vanishing difference would be undefined (0/0) and
        amplify float noise to unit size. Only for ``grad_dot`` and ``grad_cos`` (a ``ConfigError`` naming
        ``debias_side`` and the inner otherwise); ignored when ``debias=False``. Cost as ``"both"``.
    denoise : {"mean", "ema", "median", "zscore_mean"} or None
        The smoothing over the fine-tuning checkpoints (paper §4, "denoise"; reconstructed: whether the paper averages,
        weights or normalises per checkpoint first could not be checked, hence the options, see
        :func:`denoise_scores`). ``None``: the last fine-tuning checkpoint only (the debias-only ablation).
    ema_decay : float
        ``β`` in ``[0, 1)`` of ``denoise="ema"`` (weight of the running average; ``0`` keeps the last checkpoint).
    zscore_over : {"query", "matrix"}
        What ``denoise="zscore_mean"`` standardises per checkpoint: each query's row, or the whole matrix.
    batch_members : bool
        Use the shared-work path above where it applies (default); False always fits one inner attributor per
        parameter set (the generic path, e.g. to check the shared one).

    Attributes
    ----------
    epochs_ : list of int or None
        The fine-tuning checkpoints' epochs, in the order combined (after ``fit``).
    base_source_ : str or None
        Where ``θ_0`` came from: ``"epoch-0 checkpoint"``, ``"FineTuneTask base model"`` or None (``debias=False``).
    """

    name = "dda"
    requires_checkpoints = True
    contract_params = {"debias": False}
    _parameter_constraints = {
        "inner": [Instance(str, "a registry name"), Instance(Attributor, "an Attributor instance")],
        "inner_params": [None, Instance(dict)],
        "debias": [Boolean()],
        "debias_side": [Options(DEBIAS_SIDE)],
        "denoise": [None, Options(DENOISE)],
        "ema_decay": [Interval(float, 0.0, 1.0, closed="left")],
        "zscore_over": [Options(ZSCORE_OVER)],
        "batch_members": [Boolean()],
    }

    def __init__(
        self,
        inner: str | Attributor = "grad_dot",
        inner_params: dict[str, Any] | None = None,
        debias: bool = True,
        denoise: str | None = "mean",
        ema_decay: float = 0.5,
        zscore_over: str = "query",
        batch_members: bool = True,
        debias_side: str = "both",
    ) -> None:
        self.template_ = _inner_template(inner, inner_params)
        self.inner = inner if isinstance(inner, str) else self.template_.display_name
        self.inner_params = dict(inner_params or {})
        self.debias, self.denoise, self.ema_decay, self.zscore_over = debias, denoise, float(ema_decay), zscore_over
        self.batch_members = batch_members
        self.debias_side = debias_side
        if debias and debias_side == "query" and not isinstance(self.template_, GradDot):
            raise ConfigError(f"The 'debias_side' parameter of DDA is 'query' only for inner='grad_dot' or 'grad_cos' (the query's "
                              f"gradient at the base); got inner={self.template_.display_name!r}. Use debias_side='both'.")

    def _query_side(self) -> bool:
        """Whether the base term is the base query gradient against each checkpoint's training gradients (``debias_side="query"``)."""
        return self.debias and self.debias_side == "query"

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """The inner attributor's refusal (e.g. a sequence task for a classifier-only inner), prefixed with DDA's name."""
        reason = self.template_.why_unsupported(task, train)
        return None if reason is None else f"Attributor {self.display_name!r} (its 'inner'): {reason}"

    # --- members: the fine-tuning checkpoints and the base ----------------------------------------------------------
    def _finetune_checkpoints(self) -> list[tuple[int, Any]]:
        """``(index, checkpoint)`` of the fine-tuning checkpoints (epoch != 0), oldest first."""
        checkpoints = self._checkpoints()
        chosen = [(k, c) for k, c in enumerate(checkpoints) if getattr(c, "epoch", None) != 0]
        if not chosen:
            raise AttributorError(f"Attributor {self.display_name!r} needs at least one fine-tuning checkpoint (epoch >= 1); "
                                  "got only epoch-0 (initial) checkpoints.")
        if all(isinstance(getattr(c, "epoch", None), int) for _, c in chosen):
            chosen = sorted(chosen, key=lambda item: item[1].epoch)  # stable: equal epochs keep their order
        return chosen if self.denoise is not None else chosen[-1:]

    def _base_params(self) -> tuple[Any, Any] | None:
        """``(index, checkpoint-like)`` of ``θ_0`` (None without debias); an ``AttributorError`` in one line when there is none."""
        if not self.debias:
            self.base_source_ = None
            return None
        checkpoints = self._checkpoints()
        initial = [k for k, c in enumerate(checkpoints) if getattr(c, "epoch", None) == 0]
        if initial:
            self.base_source_ = "epoch-0 checkpoint"
            return initial[0], checkpoints[initial[0]]
        from tdaeval.tasks.finetune import FineTuneTask  # the tasks import the attributors' neighbours

        if isinstance(self.task_, FineTuneTask):
            self.base_source_ = "FineTuneTask base model"
            return "base", _Params({name: p.detach() for name, p in self.task_.base_model().named_parameters()})
        raise AttributorError(
            f"Attributor {self.display_name!r} with debias=True needs the base parameters: an epoch-0 checkpoint "
            "(train_model(..., include_initial=True)) or a FineTuneTask; got neither (pass debias=False for denoise only)."
        )

    def _members(self) -> tuple[Any, list[Any]]:
        """``(θ_0, [θ_e])``: parameter dicts on the shared path (no model is built), models otherwise."""
        chosen = self._finetune_checkpoints()
        self.epochs_ = [getattr(c, "epoch", None) for _, c in chosen]
        base = self._base_params()
        sets = ([] if base is None else [base]) + chosen
        if self._can_share():
            parameter_sets = [self._checkpoint_params(k, c, exact=True) for k, c in sets]
            self.stack_ = stack_parameter_sets(self.model_, parameter_sets, self.train_.inputs[:1])
            if self.stack_ is not None:
                return (None if base is None else parameter_sets[0]), parameter_sets[len(sets) - len(chosen):]
        self.stack_ = None
        models = [self._checkpoint_model(k, c).eval() for k, c in sets]
        return (None if base is None else models[0]), models[len(sets) - len(chosen):]

    def _fit_members(self, members: tuple[Any, list[Any]]) -> int:
        base, finetuned = members
        models = ([] if base is None else [base]) + finetuned
        self.has_base_ = base is not None
        if self.stack_ is not None:  # shared work: every parameter set's training factors in one vmap pass
            self.base_member_, self.members_ = None, []
            self.train_factors_ = self.stack_.factors(self.task_.loss, self.train_, self._stack_chunk())
            self.train_norms_ = self._norms(self.train_factors_)
        else:
            self.base_member_ = None if base is None else self._fitted_copy(base, None)
            self.members_ = [self._fitted_copy(model, None) for model in finetuned]
        return len(models)

    def _can_share(self) -> bool:
        """Whether the shared Grad-Dot / Grad-Cos path applies (the parameter sets must also stack: :func:`stack_parameter_sets`)."""
        return (self.batch_members and type(self.template_) in (GradDot, GradCos) and self.template_.factorized is not False
                and self.template_.params == "all" and self.template_.device is None)

    def _stack_chunk(self) -> int:
        """Examples per stacked ``vmap`` pass: ``_STACK_CHUNK_ROWS`` (examples × parameter sets), at least the inner's ``chunk_size``.

        The factors of every example are kept anyway (``[K, n, width]`` per layer), so a pass's intermediates are at
        most of that order; larger passes pay the per-pass overhead fewer times.
        """
        return max(self.template_.chunk_size, _STACK_CHUNK_ROWS // len(self.stack_))

    def _norms(self, factors) -> Tensor | None:
        """``[K, n]`` gradient norms for ``grad_cos`` (clamped as :class:`GradCos` does), None for ``grad_dot``."""
        if not isinstance(self.template_, GradCos):
            return None
        return MemberStack.sq_norms(factors).sqrt().clamp_min(1e-12)

    def _stacked_scores(self, test: Data) -> tuple[Tensor, Tensor | None]:
        """``([E, n_test, n_train]`` float64 inner scores at each fine-tuning checkpoint, the base term or None).

        The base term is ``[1, n_test, n_train]``, the inner scores at ``θ_0`` (``debias_side="both"``), or
        ``[E, n_test, n_train]``, the base test gradients against each checkpoint's training gradients (``"query"``).
        """
        test_factors = self.stack_.factors(_measurement_objective(self.task_), test, self._stack_chunk())
        test_norms = self._norms(test_factors)
        if self._query_side():
            finetuned = slice(1, None)
            return (self._stacked_products(test_factors, test_norms, finetuned, finetuned),
                    self._stacked_products(test_factors, test_norms, 0, finetuned))
        every = self._stacked_products(test_factors, test_norms, slice(None), slice(None))
        return (every[1:], every[:1]) if self.has_base_ else (every, None)

    def _stacked_products(self, test_factors, test_norms: Tensor | None, test_sets: slice | int, train_sets: slice) -> Tensor:
        """``[k, n_test, n_train]`` float64 gradient products (cosines for ``grad_cos``) of stacked sets.

        Batch ``j`` pairs the test gradients at the ``j``-th set of ``test_sets`` (a slice; an int: that one set for
        every ``j``) with the training gradients at the ``j``-th set of ``train_sets``.
        """
        def pick(t: Tensor, sets: slice | int, count: int) -> Tensor:
            return t[sets] if isinstance(sets, slice) else t[sets : sets + 1].expand(count, *t.shape[1:])

        count = len(range(len(self.stack_))[train_sets])
        total = None
        for name, (a_test, s_test) in test_factors.items():
            a_train, s_train = self.train_factors_[name]
            term = torch.bmm(pick(s_test, test_sets, count), s_train[train_sets].transpose(1, 2))
            term *= torch.bmm(pick(a_test, test_sets, count), a_train[train_sets].transpose(1, 2))
            total = term if total is None else total + term
        if test_norms is not None:
            total = total / pick(test_norms, test_sets, count)[:, :, None] / self.train_norms_[train_sets][:, None, :]
        return total.double()

    def _query_base_scores(self, test: Data) -> Tensor:
        """``[E, n_test, n_train]`` float64 (generic path): the base model's test gradients against each checkpoint's training
        gradients, ``g_q(θ_0) · g_i(θ_e)`` (each divided by both norms for ``grad_cos``), as float32 scores like the inner's."""
        base_test, base_norms = self.base_member_._prepare_chunks(test)
        out = []
        for member in self.members_:
            scores = base_test.dot(member.train_grads_)
            if member.normalize:
                scores = scores / base_norms[:, None] / member.train_norms_[None, :]
            out.append(scores.to("cpu", torch.float32).double())
        return torch.stack(out)

    def _storage_bytes(self, members: tuple[Any, list[Any]]) -> int:
        base, finetuned = members

        def size(member: Any) -> int:
            return sum(t.numel() * t.element_size() for t in member.values()) if isinstance(member, dict) else parameter_bytes(member)

        return sum(size(m) for m in finetuned) + (0 if base is None else size(base))

    # --- scores ----------------------------------------------------------------------------------------------------
    def checkpoint_scores(self, test: Data) -> tuple[Tensor, Tensor]:
        """Per fine-tuning checkpoint, before denoising: ``([E, n_test, n_train]`` debiased scores, ``[E, n_test]`` scale).

        The scores are ``I_{θ_e} − I_{θ_0}`` (``I_{θ_e}`` with ``debias=False``), float64, oldest checkpoint first;
        the scale is each row's largest absolute inner score (at ``θ_e`` or ``θ_0``), for :func:`denoise_scores`.
        With ``debias_side="query"`` the subtracted term of checkpoint ``e`` is the base query gradient against
        ``θ_e``'s training gradients (see :class:`DDA`), and it enters the scale in place of the score at ``θ_0``.
        """
        self._check_test(test, "checkpoint_scores")
        base = None
        if self.stack_ is not None:
            raw, base = self._stacked_scores(test)
        else:
            raw = torch.stack([_scores_of(member.attribute(test)) for member in self.members_])
            if self.base_member_ is not None:
                base = self._query_base_scores(test) if self._query_side() else _scores_of(self.base_member_.attribute(test))[None]
        scale = raw.abs().amax(dim=2)
        if base is not None:  # [1 or E, n_test, n_train]
            scale = torch.maximum(scale, base.abs().amax(dim=2))
            raw = raw - base
        return raw, scale

    def _attribute(self, test: Data) -> Tensor:
        with self._serving():
            scores, scale = self.checkpoint_scores(test)
            return denoise_scores(scores, self.denoise, self.ema_decay, self.zscore_over, scale).float()


class _Params:
    """A parameter set shaped like a checkpoint (``params``), for the base model of a FineTuneTask."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.params = params
