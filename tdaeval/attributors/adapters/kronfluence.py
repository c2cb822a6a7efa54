"""Adapters for kronfluence (Grosse et al. 2023): influence functions with Kronecker-factored curvature.

Registered names (kronfluence's ``FactorArguments.strategy`` in brackets)::

    kronfluence.ekfac      eigenvalue-corrected K-FAC         (ekfac)
    kronfluence.kfac       K-FAC                              (kfac)
    kronfluence.diagonal   diagonal Fisher                    (diagonal)
    kronfluence.identity   no curvature: gradient dot product (identity)

What the adapters hand over to kronfluence:

* **Task.** A ``kronfluence.task.Task`` subclass generated from our task:
  ``compute_train_loss`` is ``task.loss`` summed over the batch — with
  ``sample=True`` (the true Fisher) the targets are drawn from the model's
  predictive distribution by ``task.sample_targets`` with a generator seeded
  by ``seed``, so fresh instances agree; a task without ``sample_targets``
  gets the empirical Fisher (observed targets). ``compute_measurement`` is the
  measurement turned into a loss, :func:`~tdaeval.attributors.adapters.measurement_badness`
  (``-f`` when higher is better), summed.
* **Signs, shapes and scale.** kronfluence scores ``∇m(z)ᵀ (F + λI)⁻¹ ∇L(z_i)``
  for its measurement ``m``: positive when removing ``z_i`` would raise ``m``,
  i.e. when including it lowers ``m``. With ``m`` the badness, positive already
  means "supports": no sign change. Its pairwise scores are ``[n_query,
  n_train]``, our layout. ``F`` is the Fisher of the *mean* training loss
  (covariances divided by the number of examples), the matrix our
  ``influence`` uses, and λ (``damping``) is added to it; the scores are
  divided by ``n_train`` so that they are in our influence units
  (``(1/n) ∇(-f)ᵀ(F + λI)⁻¹∇L``, the first-order effect of including
  ``z_i``): ``kronfluence.ekfac`` is the built-in
  ``influence(solver="ekfac")`` computed by kronfluence, and
  ``kronfluence.identity`` is ``grad_dot / n_train``.
* **Model.** A deep copy of the fitted model is prepared with
  ``kronfluence.analyzer.prepare_model`` (which freezes it and wraps its
  ``nn.Linear`` / ``nn.Conv2d`` modules). kronfluence ignores every other
  parameterised module, so a model with one is refused with an error naming
  it. A model that *is* one ``nn.Linear`` (kronfluence replaces tracked
  modules inside their parent) is wrapped in an ``nn.Sequential`` first.
  Checkpoints are not used: the final model is analysed.
* **Files and side effects.** Factors and scores are written under a
  temporary ``output_dir`` owned by the attributor (removed by
  :meth:`cleanup`, on the next fit, or on garbage collection). The analyzer
  runs with ``DataLoaderKwargs(num_workers=0)``, its progress bars disabled
  and its log level left alone (kronfluence sets the *root* logger's level
  when given one).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.attributors.adapters._base import AdapterAttributor, measurement_badness
from tdaeval.attributors.base import register
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.params import Boolean, Interval
from tdaeval.task import Task

__all__ = [
    "KronfluenceEKFAC",
    "KronfluenceKFAC",
    "KronfluenceDiagonal",
    "KronfluenceIdentity",
    "kronfluence_task",
    "check_tracked_modules",
]

#: The module types kronfluence wraps (it looks them up by exact type).
TRACKED_MODULES = (nn.Linear, nn.Conv2d)


def check_tracked_modules(model: nn.Module, attributor: str) -> list[str]:
    """Names of the modules kronfluence will track; an error if another module holds parameters.

    Raises
    ------
    ConfigError
        Naming the first module with parameters that is not an ``nn.Linear`` or ``nn.Conv2d``.
    """
    tracked = []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if type(module) not in TRACKED_MODULES:
            raise ConfigError(
                f"Attributor {attributor!r}: kronfluence tracks only nn.Linear and nn.Conv2d modules, but module "
                f"{name or '<root>'!r} ({type(module).__name__}) has parameters, which it would leave out. "
                "Use a built-in attributor such as 'influence' for this model."
            )
        tracked.append(name)
    if not tracked:
        raise ConfigError(f"Attributor {attributor!r}: the model has no nn.Linear or nn.Conv2d module for kronfluence to track.")
    return tracked


def kronfluence_task(kronfluence_task_module: Any, task: Task, generator: torch.Generator) -> Any:
    """A ``kronfluence.task.Task`` instance built from our ``task``.

    Parameters
    ----------
    kronfluence_task_module : module
        The imported ``kronfluence.task`` (the class is built after importing it).
    task : Task
        Supplies ``loss``, ``measurement``, ``higher_is_better`` and, optionally, ``sample_targets``.
    generator : torch.Generator
        Draws the sampled targets of ``compute_train_loss(..., sample=True)``.

    Returns
    -------
    kronfluence.task.Task
        ``compute_train_loss``: ``Σ task.loss`` over the batch (targets drawn from
        the model when ``sample``); ``compute_measurement``: ``Σ badness``
        (``-measurement`` when higher is better).
    """
    badness = measurement_badness(task)
    sampler = task.sample_targets if task.supports_sampling else None

    class TdaevalTask(kronfluence_task_module.Task):
        """Our task's loss and measurement in kronfluence's form."""

        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> Tensor:
            inputs, targets = batch
            outputs = model(inputs)
            if sample and sampler is not None:
                targets = sampler(outputs.detach(), generator).to(outputs.device)
            return task.loss(outputs, targets).sum()

        def compute_measurement(self, batch: Any, model: nn.Module) -> Tensor:
            inputs, targets = batch
            return badness(model(inputs), targets).sum()

    return TdaevalTask()


@contextlib.contextmanager
def _quiet():
    """Run kronfluence quietly and without its full garbage collections' cost.

    kronfluence 1.0.1 raises a FutureWarning about ``torch.cuda.amp.GradScaler``
    on every pass (silenced here) and calls ``gc.collect()`` about ten times
    per fit and score, each a walk over every object of the process (0.3 s
    each in a test session, most of the run time on small models). The
    objects that exist before the call are moved to the collector's permanent
    generation for its duration (``gc.freeze``), so those collections only
    walk kronfluence's own new objects; ``gc.unfreeze`` puts them back after.
    A process that froze objects itself is left alone.
    """
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning)
            yield
    finally:
        if freeze:
            gc.unfreeze()


class _Kronfluence(AdapterAttributor):
    """Shared plumbing: the generated task, the prepared model copy, the analyzer and its temporary directory."""

    library = "kronfluence"
    extra = "kronfluence"
    strategy: ClassVar[str] = ""
    contract_params = {"batch_size": 128}
    _parameter_constraints = {
        "damping": [None, Interval(float, 0, None)],
        "use_empirical_fisher": [Boolean()],
        "batch_size": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, None)],
    }

    def __init__(
        self, damping: float | None = None, use_empirical_fisher: bool = False, batch_size: int = 256, seed: int = 0
    ) -> None:
        self.damping = None if damping is None else float(damping)
        self.use_empirical_fisher = use_empirical_fisher
        self.batch_size = batch_size
        self.seed = seed

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """The :func:`check_tracked_modules` line for the task's own architecture (``task.build_model(0)``), else None.

        The model passed to ``fit`` is checked again there (a model of another architecture raises ``ConfigError``).
        """
        try:
            model = task.build_model(0)
        except Exception:  # noqa: BLE001 - a task that cannot build a model here: fit() checks the model it is given
            return None
        try:
            check_tracked_modules(nn.Sequential(model) if type(model) in TRACKED_MODULES else model, self.display_name)
        except ConfigError as err:
            return str(err)
        return None

    def _fit(self) -> None:
        self._library("kronfluence")
        analyzer_module = self._library("kronfluence.analyzer")
        arguments = self._library("kronfluence.arguments")
        dataset_utils = self._library("kronfluence.utils.dataset")
        task_module = self._library("kronfluence.task")

        model = copy.deepcopy(self.model_).eval()
        if type(model) in TRACKED_MODULES:
            # kronfluence replaces tracked modules inside their parent; a bare nn.Linear has none.
            model = nn.Sequential(model)
        self.tracked_modules_ = check_tracked_modules(model, self.display_name)
        self.device_ = next(iter(model.parameters())).device
        generator = torch.Generator().manual_seed(self.seed)
        task = kronfluence_task(task_module, self.task_, generator)
        model = analyzer_module.prepare_model(model, task)
        self.analyzer_ = analyzer_module.Analyzer(
            analysis_name="tdaeval",
            model=model,
            task=task,
            cpu=self.device_.type == "cpu",
            disable_tqdm=True,
            output_dir=self._workdir(),
        )
        self.analyzer_.set_dataloader_kwargs(dataset_utils.DataLoaderKwargs(num_workers=0))
        # Without sample_targets the task cannot draw from the model: observed targets (empirical Fisher).
        self.empirical_fisher_ = self.use_empirical_fisher or not self.task_.supports_sampling
        self.factor_args_ = arguments.FactorArguments(strategy=self.strategy, use_empirical_fisher=self.empirical_fisher_)
        self.score_args_ = arguments.ScoreArguments(damping_factor=self.damping)
        with _quiet():
            self.analyzer_.fit_all_factors(
                factors_name="factors",
                dataset=self._on_device(self.train_),
                per_device_batch_size=self.batch_size,
                factor_args=self.factor_args_,
            )
        self._n_scores = 0

    def _on_device(self, data: Data) -> Data:
        return Data(data.inputs.to(self.device_), data.targets.to(self.device_))

    def _attribute(self, test: Data) -> Tensor:
        scores_name = f"scores_{self._n_scores}"
        self._n_scores += 1
        with _quiet():
            self.analyzer_.compute_pairwise_scores(
                scores_name=scores_name,
                factors_name="factors",
                query_dataset=self._on_device(test),
                train_dataset=self._on_device(self.train_),
                per_device_query_batch_size=self.batch_size,
                per_device_train_batch_size=self.batch_size,
                score_args=self.score_args_,
            )
        matrix = self.analyzer_.load_pairwise_scores(scores_name=scores_name)["all_modules"]  # [n_query, n_train]
        return matrix.detach().to("cpu", torch.float32) / len(self.train_)


_PARAMETERS_DOC = """
    Parameters
    ----------
    damping : float, optional
        λ added to the curvature's eigenvalues (kronfluence's ``damping_factor``),
        on the scale of the *mean* training loss's Fisher, as the built-in
        ``influence``. Default (None): ``0.1 ×`` the mean eigenvalue of each
        module (kronfluence's heuristic and ``influence(solver="ekfac")``'s
        default; kronfluence's own default is 1e-8).
    use_empirical_fisher : bool
        Observed targets instead of targets sampled from the model
        (``task.sample_targets``; tasks without it always use observed targets).
    batch_size : int
        Examples per batch when fitting factors and scoring (train and query).
    seed : int
        Seeds the sampled targets of the true Fisher.
"""


@register
class KronfluenceEKFAC(_Kronfluence):
    __doc__ = (
        """kronfluence's EK-FAC influence: ``(1/n) ∇(-f)(z)ᵀ (F_EKFAC + λI)⁻¹ ∇L(z_i)``.

    The estimator of the built-in ``influence(solver="ekfac")``: eigenbases of
    the activation and output-gradient covariances of every ``nn.Linear`` /
    ``nn.Conv2d``, eigenvalues corrected on the per-example gradients.
"""
        + _PARAMETERS_DOC
    )

    name = "kronfluence.ekfac"
    strategy = "ekfac"


@register
class KronfluenceKFAC(_Kronfluence):
    __doc__ = (
        """kronfluence's K-FAC influence: as ``kronfluence.ekfac`` with the uncorrected eigenvalues ``λ_A ⊗ λ_S``."""
        + "\n"
        + _PARAMETERS_DOC
    )

    name = "kronfluence.kfac"
    strategy = "kfac"


@register
class KronfluenceDiagonal(_Kronfluence):
    __doc__ = (
        """kronfluence's diagonal influence: the Fisher replaced by its diagonal ``E[g ⊙ g]``."""
        + "\n"
        + _PARAMETERS_DOC
    )

    name = "kronfluence.diagonal"
    strategy = "diagonal"


@register
class KronfluenceIdentity(_Kronfluence):
    """kronfluence without curvature: ``(1/n) ∇(-f)(z) · ∇L(z_i)``, the built-in ``grad_dot`` divided by ``n_train``.

    Parameters
    ----------
    batch_size : int
        Examples per batch (train and query).
    """

    name = "kronfluence.identity"
    strategy = "identity"

    def __init__(self, batch_size: int = 256) -> None:
        super().__init__(damping=None, use_empirical_fisher=True, batch_size=batch_size, seed=0)
