"""Modules with reproducible randomness.

:class:`SeededDropout` takes its uniform noise from a ``torch.Generator``
seeded from the model's training seed (shared by the model's dropout layers,
drawn in call order), or from a ``noise`` buffer that the batched trainer fills
with exactly the numbers that generator would have produced. A model trained alone or stacked with others under
``torch.func.vmap`` therefore sees the same dropout masks, which is what makes
batched training equal to sequential training.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SeededDropout", "draw_noise", "noise_words", "dropout_generator", "seed_dropout", "unseed_dropout"]


def noise_words(numel: int) -> int:
    """Number of 64-bit words one dropout call on ``numel`` elements consumes."""
    return math.ceil(numel / 4)


def draw_noise(numel: int, generator: torch.Generator) -> Tensor:
    """``numel`` uniform int16 values drawn as ``noise_words(numel)`` 64-bit words.

    Drawing whole 64-bit words and reading each as four int16 values costs a
    quarter of ``torch.rand`` per element; one large draw equals consecutive
    small draws of the same generator, which lets the batched trainer draw a
    whole epoch at once.
    """
    words = torch.randint(-(2**63), 2**63 - 1, (noise_words(numel),), generator=generator)
    return words.view(torch.int16)[:numel]


def keep_threshold(p: float) -> int:
    """int16 threshold: an element is kept when its noise is >= this (drop rate ``round(p·2¹⁶)/2¹⁶``)."""
    return -32768 + round(p * 65536)


def dropout_generator(seed: int) -> torch.Generator:
    """The CPU generator of the dropout masks of a model trained with ``seed``."""
    digest = hashlib.sha256(f"tdaeval-dropout:{int(seed)}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


class SeededDropout(nn.Module):
    """Dropout whose masks are reproducible from the training seed.

    Noise comes, in order of precedence, from the ``noise`` buffer (int16,
    set by batched training), from the generator set by :func:`seed_dropout`,
    or from the global RNG (then it is ordinary ``F.dropout``). Identity in
    eval mode. With seeded noise the drop rate is ``p`` rounded to a multiple
    of 2⁻¹⁶.

    Parameters
    ----------
    p : float
        Drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"The 'p' parameter of SeededDropout must be in [0, 1). Got {p!r} instead.")
        self.p = float(p)
        self.generator: torch.Generator | None = None
        self.register_buffer("noise", torch.empty(0, dtype=torch.int16), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.noise.numel():
            noise = self.noise
        elif self.generator is not None:
            noise = draw_noise(x.numel(), self.generator).view(x.shape).to(x.device)
        else:
            return F.dropout(x, self.p, training=True)
        threshold = keep_threshold(self.p)
        keep = (noise >= threshold).to(x.dtype)
        return x * keep * (65536.0 / (32767.0 - threshold + 1))

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def __deepcopy__(self, memo: dict) -> "SeededDropout":
        clone = SeededDropout(self.p)
        clone.train(self.training)
        clone.noise = self.noise.clone()
        return clone


def seed_dropout(model: nn.Module, seed: int) -> None:
    """Give every :class:`SeededDropout` of ``model`` its generator for ``seed``."""
    generator = dropout_generator(seed)
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = generator


def unseed_dropout(model: nn.Module) -> None:
    """Remove the generators set by :func:`seed_dropout` (back to the global RNG)."""
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = None
