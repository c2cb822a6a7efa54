"""TRAK (Park et al. 2023): random projections of gradients and a linearised datamodel."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.attributors._tracked import PARAMS_CONSTRAINT, resolve_tracked
from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.attributors.gradient import per_sample_grads
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.hashing import derive_seed
from tdaeval.params import Boolean, Interval
from tdaeval.training import train_models

__all__ = ["TRAK", "GaussianProjection", "random_projection"]


class GaussianProjection:
    """A seeded Gaussian matrix ``[P, dim]`` scaled by ``1/sqrt(dim)``, applied block by block.

    The matrix is generated in blocks of ``block`` parameter rows; the blocks
    are kept (float32) when the whole matrix fits in ``cache_bytes``, else
    regenerated at every call. The same seed gives the same matrix.
    """

    def __init__(self, n_params: int, dim: int, seed: int, block: int = 4096, cache_bytes: int = 2**28) -> None:
        self.n_params, self.dim, self.seed, self.block = n_params, dim, seed, block
        self._blocks: list[Tensor] | None = list(self._generate()) if n_params * dim * 4 <= cache_bytes else None

    def _generate(self):
        generator = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.n_params, self.block):
            yield torch.randn(min(self.block, self.n_params - start), self.dim, generator=generator)

    def __call__(self, vectors: Tensor) -> Tensor:
        """``[n, P]`` → ``[n, dim]`` in the dtype of ``vectors``."""
        if vectors.shape[1] != self.n_params:
            raise ConfigError(f"GaussianProjection expects vectors [n, {self.n_params}]. Got {tuple(vectors.shape)}.")
        out = torch.zeros(vectors.shape[0], self.dim, dtype=vectors.dtype, device=vectors.device)
        blocks = self._blocks if self._blocks is not None else self._generate()
        for index, matrix in enumerate(blocks):
            start = index * self.block
            out += vectors[:, start : start + matrix.shape[0]] @ matrix.to(vectors.device, vectors.dtype)
        return out / self.dim**0.5


def random_projection(vectors: Tensor, dim: int | None, seed: int, block: int = 4096) -> Tensor:
    """Project rows ``[n, P]`` to ``[n, dim]`` with a seeded Gaussian matrix scaled by ``1/sqrt(dim)``.

    The matrix is generated in blocks of ``block`` parameter rows, so it is
    never held whole; the same seed gives the same matrix for every call.
    ``dim=None`` returns the vectors unchanged.
    """
    if dim is None:
        return vectors
    return GaussianProjection(vectors.shape[1], dim, seed, block, cache_bytes=0)(vectors)


@register
class TRAK(Attributor):
    """TRAK: ``score = φ(z)ᵀ (ΦᵀΦ + λI)⁻¹ Φᵀ ⊙ Q``, averaged over models.

    ``φ = Pᵀ ∇θ f`` are projected gradients of the measurement (for
    classification the margin, TRAK's model output ``log p/(1-p)``), ``Φ``
    stacks them for the training points, and ``Q_i = 1 - p_i`` (the
    probability of the correct class, ``sigmoid(margin)``) for classification
    tasks measured by the margin, else 1. With ``n_models > 1`` the attributor
    trains ``n_models - 1`` more models on the full training data with the
    task's recipe (batched) and averages the first factor and ``Q`` over
    models, as TRAK does. With ``use_checkpoints=True`` the checkpoints passed
    to ``fit`` stand in for the fitted model (one TRAK model per checkpoint,
    the cheaper ensemble of the TRAK paper's appendix and of ``traker``'s
    usual workflow).

    Parameters
    ----------
    projection_dim : int, optional
        k; ``None`` uses the unprojected gradients.
    damping : float, optional
        λ; default ``1e-3 · trace(ΦᵀΦ) / min(k, n_train)`` (a thousandth of the
        mean non-zero eigenvalue of the Gram matrix).
    n_models : int
        Models averaged (the fitted one plus ``n_models - 1`` retrained).
    use_checkpoints : bool
        Average over the training run's checkpoints (``fit(...,
        checkpoints=...)``) instead of the fitted model alone; the
        ``n_models - 1`` retrained models are added to them.
    seed : int
        Seed of the projection and of the extra models.
    chunk_size : int
        Examples per per-sample-gradient call.
    device : str, optional
        Where to compute.
    params : {"all", "linear"} or list of str
        Tracked parameters (:mod:`tdaeval.attributors._tracked`): every
        parameter (default), the weights and biases of the ``nn.Linear`` /
        ``nn.Conv2d`` layers, or parameter names and module-name prefixes;
        the gradients projected are those of the tracked ones.
    """

    name = "trak"
    #: Bytes of per-sample gradients held at once while featurising.
    memory_budget = 2**27
    _parameter_constraints = {
        "projection_dim": [None, Interval(int, 1, None)],
        "damping": [None, Interval(float, 0, None)],
        "n_models": [Interval(int, 1, None)],
        "use_checkpoints": [Boolean()],
        "seed": [Interval(int, 0, None)],
        "chunk_size": [Interval(int, 1, None)],
        "device": DEVICE_CONSTRAINT,
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self,
        projection_dim: int | None = 512,
        damping: float | None = None,
        n_models: int = 1,
        use_checkpoints: bool = False,
        seed: int = 0,
        chunk_size: int = 256,
        device: str | None = None,
        params: str | list[str] = "all",
    ) -> None:
        self.projection_dim, self.damping, self.n_models = projection_dim, damping, n_models
        self.use_checkpoints = use_checkpoints
        self.seed, self.chunk_size, self.device = seed, chunk_size, device
        self.params = params

    def needs_checkpoints(self) -> bool:
        """With ``use_checkpoints=True``: the models are the checkpoints of the training run."""
        return self.use_checkpoints

    def _checkpoint_models(self) -> list[torch.nn.Module]:
        """One copy of the fitted model per checkpoint, holding that checkpoint's parameters."""
        return [self._checkpoint_model(k, checkpoint) for k, checkpoint in enumerate(self._checkpoints())]

    def _models(self) -> list[torch.nn.Module]:
        models = self._checkpoint_models() if self.use_checkpoints else [self.model_]
        if self.n_models > 1:
            seeds = [derive_seed("trak", self.seed, m) for m in range(1, self.n_models)]
            everything = torch.arange(len(self.train_))
            stacked = train_models(self.task_, [everything] * len(seeds), seeds, device=self.device or "cpu")
            models += [stacked.model(i) for i in range(len(seeds))]
        return models

    def _features(self, model: torch.nn.Module, data: Data, index: int) -> Tensor:
        """Projected measurement gradients ``[n, k]`` (float64), per-sample gradients taken in row chunks."""
        wanted = None if self.tracked_ is None else set(self.tracked_)
        n_params = sum(p.numel() for name, p in model.named_parameters() if wanted is None or name in wanted)
        project = (lambda g: g) if self.projection_dim is None else GaussianProjection(
            n_params, self.projection_dim, seed=self.seed * 1000 + index
        )
        rows = max(self.chunk_size, self.memory_budget // (12 * n_params))  # float32 gradients + their float64 copy
        features = []
        for start in range(0, len(data), rows):
            chunk = data.subset(torch.arange(start, min(start + rows, len(data))))
            grads = per_sample_grads(
                model, self.task_.measurement, chunk, chunk_size=self.chunk_size, device=self.device, tracked=self.tracked_
            )
            features.append(project(grads.double()))
        return torch.cat(features)

    def _q(self, model: torch.nn.Module, data: Data) -> Tensor:
        if self.task_.measurement_name == "margin":
            return torch.sigmoid(-self.task_.measure(model, data).double())
        return torch.ones(len(data), dtype=torch.float64)

    def _fit(self) -> None:
        self.tracked_ = resolve_tracked(self.model_, self.params, f"Attributor {self.display_name!r}")
        self.models_ = self._models()
        self.kernels_, q_values = [], []
        for index, model in enumerate(self.models_):
            model.eval()
            phi = self._features(model, self.train_, index)  # [n_train, k]
            n, k = phi.shape
            # (ΦᵀΦ + λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ + λI)⁻¹: solve in the smaller of the two dimensions.
            gram = phi.T @ phi if k <= n else phi @ phi.T
            damping = self.damping if self.damping is not None else 1e-3 * float(torch.trace(gram)) / min(n, k)
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            if k <= n:
                kernel = torch.linalg.solve(gram + damping * eye, phi.T)
            else:
                kernel = phi.T @ torch.linalg.inv(gram + damping * eye)
            self.kernels_.append(kernel)  # [k, n_train]
            q_values.append(self._q(model, self.train_))
        self.q_ = torch.stack(q_values).mean(0)

    def _attribute(self, test: Data) -> Tensor:
        total = None
        for index, (model, kernel) in enumerate(zip(self.models_, self.kernels_)):
            term = self._features(model, test, index) @ kernel.to(self.device or "cpu")
            total = term if total is None else total + term
        sign = 1.0 if self.task_.higher_is_better else -1.0
        return (sign * total / len(self.models_) * self.q_.to(total.device)).float()
