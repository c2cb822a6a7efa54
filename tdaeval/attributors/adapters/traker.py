"""Adapter for TRAK (``traker``, Park et al. 2023): the ``TRAKer`` workflow behind our interface.

Registered name::

    trak.traker    TRAKer with the CPU BasicProjector, one TRAK "model" per checkpoint

What the adapter hands over to ``traker``:

* **Model output.** TRAK differentiates a model output function ``f`` and
  reweights by ``Q = ∂ℓ/∂f``. For tasks measured by the correct-class margin
  (``task.measurement_name == "margin"``, e.g. :class:`~tdaeval.tasks.DigitsTask`)
  traker's built-in ``ImageClassificationModelOutput`` is used: its output
  ``logit_y − logsumexp_{k≠y} logit_k`` is exactly our
  :func:`~tdaeval.tasks.margin`, and its ``Q = 1 − p_y`` is
  ``sigmoid(−margin)``, as in the built-in ``trak``. Other tasks (or
  ``model_output="measurement"``) get an ``AbstractModelOutput`` subclass
  built from ``task.measurement`` with ``Q = 1``.
* **Checkpoints.** Each :class:`~tdaeval.training.Checkpoint` becomes one TRAK
  model id (``load_checkpoint`` / ``start_scoring_checkpoint`` with the
  checkpoint's parameters over the fitted model's buffers); TRAK averages the
  scores and ``Q`` over them, as it does over an ensemble of independently
  trained models. Without checkpoints (or with ``use_checkpoints=False``) the
  final model is the only one.
* **Projection.** Always traker's ``BasicProjector`` (Gaussian entries,
  generated block by block on the device, seeded by ``projector_seed`` and the
  model id); never the CUDA ``fast_jl`` kernel.
* **Regularisation.** traker inverts ``ΦᵀΦ + λI``; with fewer training points
  than projection dimensions ``ΦᵀΦ`` is singular and TRAK's default ``λ = 0``
  fails, so ``lambda_reg=None`` sets ``λ = 1e-3 · trace(ΦᵀΦ) / min(n_train, k)``
  (averaged over the models) from TRAK's own stored features — the default of
  the built-in ``trak``.
* **Signs, shapes and scale.** ``finalize_scores`` returns ``[n_train,
  n_targets]`` (a memmap, float16 unless ``use_half_precision=False``, our
  default): it is transposed to ``[n_test, n_train]`` float32. A positive TRAK
  score predicts that including the training point raises the model output,
  i.e. supports a "higher is better" measurement; for tasks whose measurement
  is "higher is worse" the scores are negated. traker divides ``(ΦᵀΦ+λI)⁻¹``
  by the mean of its absolute entries before scoring, so the scale of the
  scores is arbitrary (rankings and correlations are what compare).
* **Side effects.** ``TRAKer`` calls ``logging.basicConfig()``; the handler it
  adds to the root logger is removed again. Its files (features, scores)
  live in a temporary directory owned by the attributor, removed by
  :meth:`TrakTRAKer.cleanup`, on the next fit, or on garbage collection.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from tdaeval.attributors.adapters._base import AdapterAttributor
from tdaeval.attributors.base import DEVICE_CONSTRAINT, register
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.params import Boolean, Interval, Options

__all__ = ["TrakTRAKer", "default_proj_dim"]

#: Largest default projection dimension (TRAK's own default).
MAX_DEFAULT_PROJ_DIM = 2048
MODEL_OUTPUTS = ("auto", "builtin", "measurement")


def default_proj_dim(n_params: int) -> int:
    """``min(2048, n_params)``: TRAK's default dimension, capped at the parameter count for small models."""
    return int(min(MAX_DEFAULT_PROJ_DIM, n_params))


def measurement_model_output(trak: Any, task: Any) -> Any:
    """An ``AbstractModelOutput`` for ``task``: output ``task.measurement``, ``Q = sigmoid(-f)`` for margins, else 1.

    Parameters
    ----------
    trak : module
        The imported ``trak`` package (the class is built after importing it).
    task : Task
        Supplies ``measurement(outputs [n, ...], targets [n]) -> [n]``.

    Returns
    -------
    trak.modelout_functions.AbstractModelOutput
        An instance.
    """

    class MeasurementModelOutput(trak.modelout_functions.AbstractModelOutput):
        """TRAK model output ``f(z; θ)`` = our task's measurement of one example."""

        def __init__(self) -> None:
            super().__init__()

        @staticmethod
        def get_output(model: nn.Module, weights, buffers, inputs: Tensor, targets: Tensor) -> Tensor:
            outputs = functional_call(model, (weights, buffers), (inputs.unsqueeze(0),))
            return task.measurement(outputs, targets.unsqueeze(0)).sum()

        def get_out_to_loss_grad(self, model: nn.Module, weights, buffers, batch) -> Tensor:
            inputs, targets = batch
            with torch.no_grad():
                values = task.measurement(functional_call(model, (weights, buffers), (inputs,)), targets)
            if task.measurement_name == "margin":
                return torch.sigmoid(-values).unsqueeze(-1)
            return torch.ones_like(values).unsqueeze(-1)

    return MeasurementModelOutput()


@register
class TrakTRAKer(AdapterAttributor):
    """TRAK through ``trak.TRAKer``: ``score = φ(z)ᵀ (ΦᵀΦ + λI)⁻¹ Φᵀ ⊙ Q``, averaged over checkpoints.

    ``φ = Pᵀ∇θ f / sqrt(P)`` are traker's projected gradients of the model
    output (the margin for classification), ``Φ`` stacks them for the training
    points and ``Q`` is the out-to-loss gradient (``1 − p_y``). The same
    estimator as the built-in ``trak`` up to the random projection, the
    handling of several models (checkpoints here, retrained models there) and
    traker's normalisation of the scores' scale.

    Parameters
    ----------
    proj_dim : int, optional
        Projection dimension ``k``. Default (None): ``min(2048, n_params)``.
    projector_seed : int
        Seed of traker's ``BasicProjector`` (each model id gets its own matrix).
    lambda_reg : float, optional
        λ added to ``ΦᵀΦ`` (traker's ``lambda_reg``). Default (None):
        ``1e-3 · trace(ΦᵀΦ) / min(n_train, k)`` averaged over the models.
    use_checkpoints : bool
        One TRAK model per checkpoint passed to ``fit`` (else only the final model).
    model_output : {"auto", "builtin", "measurement"}
        ``builtin``: traker's ``ImageClassificationModelOutput`` (the margin; only
        for margin-measured tasks); ``measurement``: an output built from
        ``task.measurement``; ``auto``: ``builtin`` for margin tasks, else ``measurement``.
    use_half_precision : bool
        traker's float16 storage and arithmetic (its default); False (ours)
        keeps float32, which is faster and more accurate on a CPU.
    batch_size : int
        Examples per ``featurize`` / ``score`` call.
    device : str
        Where traker computes (the projector is the ``BasicProjector`` there too).
    """

    name = "trak.traker"
    library = "trak"
    extra = "trak"
    contract_params = {"proj_dim": 64, "batch_size": 128}
    _parameter_constraints = {
        "proj_dim": [None, Interval(int, 1, None)],
        "projector_seed": [Interval(int, 0, None)],
        "lambda_reg": [None, Interval(float, 0, None)],
        "use_checkpoints": [Boolean()],
        "model_output": [Options(MODEL_OUTPUTS)],
        "use_half_precision": [Boolean()],
        "batch_size": [Interval(int, 1, None)],
        "device": [c for c in DEVICE_CONSTRAINT if c is not None],
    }

    def __init__(
        self,
        proj_dim: int | None = None,
        projector_seed: int = 0,
        lambda_reg: float | None = None,
        use_checkpoints: bool = True,
        model_output: str = "auto",
        use_half_precision: bool = False,
        batch_size: int = 256,
        device: str = "cpu",
    ) -> None:
        self.proj_dim = proj_dim
        self.projector_seed = projector_seed
        self.lambda_reg = None if lambda_reg is None else float(lambda_reg)
        self.use_checkpoints = use_checkpoints
        self.model_output = model_output
        self.use_half_precision = use_half_precision
        self.batch_size = batch_size
        self.device = str(device)

    # ---- plumbing ---------------------------------------------------------------------------------
    def _state_dicts(self, model: nn.Module) -> list[dict[str, Tensor]]:
        """One full state dict per TRAK model id: the checkpoints' parameters over the model's buffers."""
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if not (self.use_checkpoints and self.checkpoints_):
            return [base]
        states = []
        for k, checkpoint in enumerate(self.checkpoints_):
            params = self._checkpoint_params(k, checkpoint)
            states.append({**base, **{n: p.detach().to(base[n].device, base[n].dtype) for n, p in params.items()}})
        return states

    def _model_output(self, trak: Any) -> Any:
        is_margin = self.task_.measurement_name == "margin"
        if self.model_output == "builtin" and not is_margin:
            raise ConfigError(
                f"The 'model_output' parameter of {self.display_name!r} is 'builtin', but traker's image-classification "
                f"output is the margin and the task measures {self.task_.measurement_name!r}. Use 'auto' or 'measurement'."
            )
        if self.model_output == "builtin" or (self.model_output == "auto" and is_margin):
            return trak.modelout_functions.ImageClassificationModelOutput()
        return measurement_model_output(trak, self.task_)

    def _batches(self, data: Data):
        for start in range(0, len(data), self.batch_size):
            stop = min(start + self.batch_size, len(data))
            yield [data.inputs[start:stop].to(self.device), data.targets[start:stop].to(self.device)], stop - start

    # ---- fit / attribute --------------------------------------------------------------------------
    def _fit(self) -> None:
        trak = self._library("trak")
        projectors = self._library("trak.projectors")
        model = copy.deepcopy(self.model_).to(self.device).eval()
        n_params = sum(p.numel() for p in model.parameters())
        proj_dim = self.proj_dim if self.proj_dim is not None else default_proj_dim(n_params)
        dtype = torch.float16 if self.use_half_precision else torch.float32
        projector = projectors.BasicProjector(
            grad_dim=n_params,
            proj_dim=proj_dim,
            seed=self.projector_seed,
            proj_type=projectors.ProjectionType.normal,
            device=self.device,
            dtype=dtype,
        )
        root = logging.getLogger()
        handlers = list(root.handlers)
        try:
            traker = trak.TRAKer(
                model=model,
                task=self._model_output(trak),
                train_set_size=len(self.train_),
                save_dir=self._workdir(),
                load_from_save_dir=True,  # False breaks scoring in traker 0.3.2 (experiments.json is never created)
                device=self.device,
                projector=projector,
                proj_dim=proj_dim,
                logging_level=logging.WARNING,
                use_half_precision=self.use_half_precision,
                projector_seed=self.projector_seed,
                lambda_reg=self.lambda_reg or 0.0,
            )
        finally:  # TRAKer calls logging.basicConfig(): undo the handler it added to the root logger.
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
        self.states_ = self._state_dicts(model)
        for model_id, state in enumerate(self.states_):
            traker.load_checkpoint(state, model_id=model_id)
            for batch, size in self._batches(self.train_):
                traker.featurize(batch=batch, num_samples=size)
        if self.lambda_reg is None:
            traker.score_computer.lambda_reg = self._default_lambda(traker)
        self.lambda_reg_ = float(traker.score_computer.lambda_reg)
        self.proj_dim_ = proj_dim
        traker.finalize_features()
        self.traker_ = traker
        self._n_experiments = 0

    def _default_lambda(self, traker: Any) -> float:
        """``1e-3 · trace(ΦᵀΦ) / min(n, k)`` from traker's stored features, averaged over model ids."""
        values = []
        for model_id in range(len(self.states_)):
            traker.saver.load_current_store(model_id)
            phi = np.asarray(traker.saver.current_store["grads"], dtype=np.float64)
            values.append(1e-3 * float((phi * phi).sum()) / min(phi.shape))
        return float(np.mean(values))

    @staticmethod
    def _restore_projection(projector: Any) -> None:
        """Regenerate a ``BasicProjector``'s matrix freed by ``finalize_features``.

        traker 0.3.2 frees it there and regenerates it in ``project`` only when
        the model id changes or the projection has several blocks; with one
        block (``proj_dim <= 100``) and the same model id, scoring would fail.
        The matrix comes from the projector's own stored generator state.
        """
        if not getattr(projector, "proj_matrix_available", True):
            projector.generate_sketch_matrix(projector.generator_states[0])

    def _attribute(self, test: Data) -> Tensor:
        traker = self.traker_
        exp_name = f"tdaeval_{self._n_experiments}"
        self._n_experiments += 1
        for model_id, state in enumerate(self.states_):
            traker.start_scoring_checkpoint(exp_name=exp_name, checkpoint=state, model_id=model_id, num_targets=len(test))
            self._restore_projection(traker.projector)
            for batch, size in self._batches(test):
                traker.score(batch=batch, num_samples=size)
        scores = traker.finalize_scores(exp_name=exp_name)  # [n_train, n_test] memmap
        scores = torch.from_numpy(np.array(scores, dtype=np.float32)).T.contiguous()
        return scores if self.task_.higher_is_better else -scores
