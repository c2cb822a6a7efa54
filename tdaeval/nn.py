"""Modules with reproducible randomness.

:class:`SeededDropout` takes its uniform noise from a random bit generator
(numpy's SFC64, about three times faster than ``torch.randint``) seeded from
the model's training seed (shared by the model's dropout layers,
drawn in call order), or from a ``noise`` buffer that the batched trainer fills
with exactly the numbers that generator would have produced. A model trained alone or stacked with others under
``torch.func.vmap`` therefore sees the same dropout masks, which is what makes
batched training equal to sequential training.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SeededDropout",
    "draw_noise",
    "draw_words",
    "noise_words",
    "scaled_keep_mask",
    "dropout_generator",
    "seed_dropout",
    "unseed_dropout",
]


def noise_words(numel: int) -> int:
    """Number of 64-bit words one dropout call on ``numel`` elements consumes."""
    return math.ceil(numel / 4)


def draw_words(n_words: int, generator: np.random.BitGenerator) -> Tensor:
    """``n_words`` raw 64-bit words of ``generator`` as an int64 tensor ``[n_words]``.

    One large draw equals consecutive small draws of the same generator, which
    lets the batched trainer draw a whole epoch at once.
    """
    return torch.from_numpy(generator.random_raw(n_words).view(np.int64))


def draw_noise(numel: int, generator: np.random.BitGenerator) -> Tensor:
    """``numel`` uniform int16 values: ``noise_words(numel)`` 64-bit words read as four int16 each."""
    return draw_words(noise_words(numel), generator).view(torch.int16)[:numel]


def keep_threshold(p: float) -> int:
    """int16 threshold: an element is kept when its noise is >= this (drop rate ``round(p·2¹⁶)/2¹⁶``)."""
    return -32768 + round(p * 65536)


def scaled_keep_mask(noise: Tensor, p: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """Dropout multiplier from int16 noise: ``1/(1-p')`` where kept, 0 where dropped (``p'`` = rounded ``p``)."""
    threshold = keep_threshold(p)
    return (noise >= threshold).to(dtype) * (65536.0 / (32768.0 - threshold))


def dropout_generator(seed: int) -> np.random.BitGenerator:
    """The bit generator (SFC64) of the dropout masks of a model trained with ``seed``."""
    digest = hashlib.sha256(f"tdaeval-dropout:{int(seed)}".encode()).hexdigest()
    return np.random.SFC64(int(digest[:32], 16))


class SeededDropout(nn.Module):
    """Dropout whose masks are reproducible from the training seed.

    The mask comes, in order of precedence, from the ``mask`` buffer (the
    scaled keep mask, set by batched training), from noise drawn from the
    generator set by :func:`seed_dropout`, or from the global RNG (then it is
    ordinary ``F.dropout``). Identity in eval mode. With seeded noise the drop
    rate is ``p`` rounded to a multiple of 2⁻¹⁶.

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
        self.generator: np.random.BitGenerator | None = None
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.mask.numel():
            return x * self.mask
        if self.generator is not None:
            noise = draw_noise(x.numel(), self.generator).view(x.shape).to(x.device)
            return x * scaled_keep_mask(noise, self.p, x.dtype)
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def __deepcopy__(self, memo: dict) -> "SeededDropout":
        clone = SeededDropout(self.p)
        clone.train(self.training)
        clone.mask = self.mask.clone()
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
