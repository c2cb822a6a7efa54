"""Modules with reproducible randomness, a tiny causal transformer (:class:`TinyCausalLM`), and low-rank adapters.

:class:`SeededDropout` takes its uniform noise from a random bit generator
(numpy's SFC64, about three times faster than ``torch.randint``) seeded from
the model's training seed (shared by the model's dropout layers,
drawn in call order), or from a ``noise`` buffer that the batched trainer fills
with exactly the numbers that generator would have produced. A model trained alone or stacked with others under
``torch.func.vmap`` therefore sees the same dropout masks, which is what makes
batched training equal to sequential training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdaeval.hashing import derive_seed

__all__ = [
    "CausalSelfAttention",
    "causal_mask",
    "causal_softmax",
    "LoRAConv2d",
    "LoRALinear",
    "SeededDropout",
    "TinyCausalLM",
    "TransformerBlock",
    "TransformerMLP",
    "adapters_only",
    "add_lora",
    "is_lora_parameter",
    "lora_parameters",
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
    return np.random.SFC64(derive_seed("tdaeval-dropout", int(seed), bits=128, encoding="text"))


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


# --- a tiny causal transformer (the language-model task) ------------------------------------------------------


def causal_mask(length: int, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> Tensor:
    """``[L, L]`` additive attention mask: 0 where position ``t`` may attend (``0 … t``), ``-inf`` above the diagonal."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)


def causal_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dimension of attention scores ``[..., L, L]`` with position ``t`` attending to ``0 … t`` only.

    Written out (subtract the row maximum, ``exp``, normalise) rather than ``masked_fill`` + ``Tensor.softmax``:
    for the rows of a few positions this model has, ``softmax`` pays per row and the element-wise form is about
    four times faster, forward and backward. The maximum is a constant shift (detached), so the gradient is the
    softmax's own. ``vmap``/``grad`` safe.
    """
    scores = scores + causal_mask(scores.shape[-1], scores.dtype, scores.device)
    e = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()
    return e / e.sum(dim=-1, keepdim=True)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention written out (no ``scaled_dot_product_attention``), so that
    ``torch.func.vmap``, ``grad`` and ``functional_call`` run it.

    ``softmax(q kᵀ / sqrt(d_head) + causal mask) v`` per head; position ``t`` attends to ``0 … t``. Padding sits
    after the real tokens, so no real position ever attends to it.

    Parameters
    ----------
    d_model : int
        Width ``d``.
    n_heads : int
        Heads; ``d_model`` must be a multiple.
    dropout : float
        :class:`SeededDropout` rate on the output (0 = identity).

    Attributes
    ----------
    qkv : nn.Linear
        ``d → 3d`` (queries, keys, values).
    proj : nn.Linear
        ``d → d`` output projection.
    drop : SeededDropout
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"The 'n_heads' parameter must divide d_model = {d_model}. Got {n_heads!r} instead.")
        self.n_heads = int(n_heads)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = SeededDropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``[n, L, d]`` → ``[n, L, d]``."""
        n, length, d = x.shape
        d_head = d // self.n_heads
        q, k, v = (t.reshape(n, length, self.n_heads, d_head).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d_head))  # [n, h, L, L]
        out = (causal_softmax(scores) @ v).transpose(1, 2).reshape(n, length, d)
        return self.drop(self.proj(out))


class TransformerMLP(nn.Module):
    """``drop(proj(gelu(fc(x))))``: ``fc`` ``d → 4d``, ``proj`` ``4d → d``, on ``[n, L, d]``."""

    def __init__(self, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.drop = SeededDropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(·))``.

    Attributes
    ----------
    ln1, ln2 : nn.LayerNorm
    attn : CausalSelfAttention
    mlp : TransformerMLP
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = TransformerMLP(d_model, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyCausalLM(nn.Module):
    """A small decoder-only transformer: token and learned position embeddings, pre-LN blocks, untied head.

    Every operation is ``vmap``/``grad``/``functional_call``-safe (manual attention, the causal mask built per
    call rather than stored, no data-dependent control flow), and each :class:`SeededDropout` is called once per
    forward pass, so batched training (:func:`tdaeval.training.train_models`) equals one-at-a-time training.
    About 28k parameters at ``d_model=32, n_layers=1`` and a vocabulary of 237.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size ``V``.
    max_len : int
        Longest input ``T`` (rows of learned positions).
    d_model : int
        Width ``d``.
    n_layers : int
        Blocks.
    n_heads : int
        Attention heads per block (divides ``d_model``).
    dropout : float
        :class:`SeededDropout` rate after attention and after the MLP in every block (0 = none).

    Attributes
    ----------
    embed : nn.Embedding
        ``V × d``.
    pos : nn.Embedding
        ``max_len × d``.
    blocks : nn.ModuleList of TransformerBlock
    ln_f : nn.LayerNorm
    head : nn.Linear
        ``d → V``, no bias.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 32, n_layers: int = 1, n_heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"The {name!r} parameter of TinyCausalLM must be an integer >= 1. Got {value!r} instead.")
        self.max_len = int(max_len)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits.

        Parameters
        ----------
        tokens : Tensor
            ``[n, L]`` int64 token ids, ``L <= max_len``.

        Returns
        -------
        Tensor
            ``[n, L, V]`` logits; position ``t`` predicts token ``t + 1``.
        """
        length = tokens.shape[-1]
        if length > self.max_len:
            raise ValueError(f"TinyCausalLM expects inputs of at most max_len = {self.max_len} positions. Got {length}.")
        x = self.embed(tokens) + self.pos(torch.arange(length, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def stacked_forward(self, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], tokens: Tensor) -> Tensor:
        """Next-token logits of ``M`` models of this architecture at once, each on its own batch.

        The optional hook of :func:`tdaeval.training.train_models`: a module that defines ``stacked_forward`` is
        trained through it instead of ``vmap(functional_call(...))``. The computation is this module's
        :meth:`forward` with every layer written for a leading model dimension (``baddbmm`` over stacked weights,
        one embedding gather over the stacked tables, the attention of all models and rows in one batched product),
        so it gives the same logits up to floating-point summation order and is differentiable in ``params``.
        Only the structure of ``self`` (heads, blocks, dropout rates, LayerNorm ``eps``) is read, never its weights.

        Parameters
        ----------
        params : mapping of str to Tensor
            Every parameter of the module under its qualified name, stacked: ``[M, *shape]``.
        buffers : mapping of str to Tensor
            Stacked buffers. In training mode a :class:`SeededDropout` with ``p > 0`` multiplies by its
            ``"<name>.mask"`` entry, ``[M, n, L, d]`` (the scaled keep masks the stacked trainer draws); one that is
            missing or empty is an error there (eval mode or ``p = 0``: identity, masks ignored).
        tokens : Tensor
            ``[M, n, L]`` int64 token ids, ``L <= max_len``.

        Returns
        -------
        Tensor
            ``[M, n, L, V]`` logits; ``[m]`` equals ``functional_call(self, model m's params, tokens[m])``.
        """
        n_models, n, length = tokens.shape
        if length > self.max_len:
            raise ValueError(f"TinyCausalLM expects inputs of at most max_len = {self.max_len} positions. Got {length}.")
        table = params["embed.weight"]  # [M, V, d]
        vocab, d = table.shape[1:]
        offsets = torch.arange(n_models, device=tokens.device).view(n_models, 1, 1) * vocab
        x = F.embedding(tokens + offsets, table.reshape(n_models * vocab, d)) + params["pos.weight"][:, None, :length]
        x = x.reshape(n_models, n * length, d)  # [M, n·L, d]: every position of every row, per model

        def norm(name: str, h: Tensor, module: nn.LayerNorm) -> Tensor:
            h = F.layer_norm(h, (d,), eps=module.eps)
            return torch.addcmul(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].unsqueeze(1))

        def linear(name: str, h: Tensor) -> Tensor:
            return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))

        def drop(name: str, h: Tensor, module: SeededDropout) -> Tensor:
            if not (self.training and module.p > 0):
                return h
            keep = buffers.get(f"{name}.mask")
            if keep is None or not keep.numel():
                raise ValueError(f"TinyCausalLM.stacked_forward in training mode needs the dropout mask buffer {name}.mask.")
            return h * keep.reshape(h.shape)

        for i, block in enumerate(self.blocks):
            pre = f"blocks.{i}."
            heads = block.attn.n_heads
            d_head = d // heads
            qkv = linear(pre + "attn.qkv", norm(pre + "ln1", x, block.ln1))  # [M, n·L, 3d]
            qkv = qkv.view(n_models, n, length, 3, heads, d_head).permute(3, 0, 1, 4, 2, 5).reshape(3, -1, length, d_head)
            q, k, v = qkv.unbind(0)  # [M·n·h, L, d_head]
            scores = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(d_head))
            attended = torch.bmm(causal_softmax(scores), v).view(n_models, n, heads, length, d_head)
            attended = attended.transpose(2, 3).reshape(n_models, n * length, d)
            x = x + drop(pre + "attn.drop", linear(pre + "attn.proj", attended), block.attn.drop)
            hidden = F.gelu(linear(pre + "mlp.fc", norm(pre + "ln2", x, block.ln2)))
            x = x + drop(pre + "mlp.drop", linear(pre + "mlp.proj", hidden), block.mlp.drop)
        x = norm("ln_f", x, self.ln_f)
        return torch.bmm(x, params["head.weight"].transpose(1, 2)).view(n_models, n, length, vocab)


# --- low-rank adapters (LoRA, Hu et al. 2021) ----------------------------------------------------------------


class _LoRA(nn.Module):
    """Shared parts of the adapters: the base weights as parameters or buffers, and the two factors."""

    def _keep_base(self, base: nn.Module, train_base: bool) -> None:
        for name in ("weight", "bias"):
            value = getattr(base, name)
            if value is None:
                setattr(self, name, None)
            elif train_base:
                setattr(self, name, nn.Parameter(value.detach().clone()))
            else:
                self.register_buffer(name, value.detach().clone())


class LoRALinear(_LoRA):
    """``y = W x + b + B A x``: a frozen (or trainable) ``nn.Linear`` plus a rank-``r`` adapter.

    ``A`` ``[r, in]`` starts Gaussian with standard deviation ``1/sqrt(in)``
    (seeded), ``B`` ``[out, r]`` at zero, so a fresh adapter leaves the layer's
    output unchanged. With ``train_base=False`` the base weights are buffers:
    gradients (and every attributor) see only ``A`` and ``B``.

    Parameters
    ----------
    base : nn.Linear
    rank : int
        ``r`` >= 1.
    generator : torch.Generator
        Draws ``A``.
    train_base : bool
        Keep ``W`` and ``b`` as parameters.
    """

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator, train_base: bool = False) -> None:
        super().__init__()
        self._keep_base(base, train_base)
        self.rank = int(rank)
        out_features, in_features = base.weight.shape
        a = torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)
        self.lora_A = nn.Parameter(a.to(base.weight.device, base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=base.weight.device, dtype=base.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return f"in={self.lora_A.shape[1]}, out={self.lora_B.shape[0]}, rank={self.rank}"


class LoRAConv2d(_LoRA):
    """``y = conv(x; W, b) + conv1x1(conv(x; A); B)``: an ``nn.Conv2d`` plus a rank-``r`` adapter.

    ``A`` ``[r, in/groups, kh, kw]`` is a convolution with the base layer's
    stride, padding and dilation; ``B`` ``[out, r, 1, 1]`` starts at zero.
    Parameters as :class:`LoRALinear` (``groups`` must be 1).
    """

    def __init__(self, base: nn.Conv2d, rank: int, generator: torch.Generator, train_base: bool = False) -> None:
        super().__init__()
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError("LoRAConv2d supports nn.Conv2d with groups=1 and padding_mode='zeros'.")
        self._keep_base(base, train_base)
        self.rank = int(rank)
        self.stride, self.padding, self.dilation = base.stride, base.padding, base.dilation
        out_channels, in_channels, kh, kw = base.weight.shape
        fan_in = in_channels * kh * kw
        a = torch.randn(rank, in_channels, kh, kw, generator=generator) / math.sqrt(fan_in)
        self.lora_A = nn.Parameter(a.to(base.weight.device, base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_channels, rank, 1, 1, device=base.weight.device, dtype=base.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        low = F.conv2d(x, self.lora_A, None, self.stride, self.padding, self.dilation)
        return out + F.conv2d(low, self.lora_B)

    def extra_repr(self) -> str:
        return f"in={self.lora_A.shape[1]}, out={self.lora_B.shape[0]}, rank={self.rank}"


def add_lora(
    model: nn.Module, rank: int, seed: int, targets: list[str] | None = None, train_base: bool = False
) -> nn.Module:
    """A copy of ``model`` with a :class:`LoRALinear` / :class:`LoRAConv2d` in place of each target layer.

    Parameters
    ----------
    model : nn.Module
    rank : int
        Adapter rank ``r`` >= 1.
    seed : int
        Seeds the ``A`` factors (layer by layer, in module order).
    targets : list of str, optional
        Names of the ``nn.Linear`` / ``nn.Conv2d`` modules to adapt (default: all of them).
    train_base : bool
        Keep the adapted layers' base weights as parameters (else buffers). Other
        parameters of the model (layers not adapted) stay parameters unless
        ``train_base`` is False, when they become buffers too: gradients then
        cover the adapters only.

    Raises
    ------
    ValueError
        A target that is not an ``nn.Linear`` / ``nn.Conv2d`` module of the model, or no layer to adapt.
    """
    import copy

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"The 'rank' parameter must be an integer >= 1. Got {rank!r} instead.")
    adapted = copy.deepcopy(model)
    layers = {name: m for name, m in adapted.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if targets is None:
        chosen = list(layers)
    else:
        unknown = [t for t in targets if t not in layers]
        if unknown:
            raise ValueError(
                f"The 'targets' parameter names modules that are not nn.Linear / nn.Conv2d layers of the model: {unknown}. "
                f"Layers: {sorted(layers)}."
            )
        chosen = list(dict.fromkeys(targets))
    if not chosen:
        raise ValueError("The model has no nn.Linear or nn.Conv2d layer to adapt ('targets').")
    generator = torch.Generator().manual_seed(int(seed))
    for name in chosen:
        base = layers[name]
        wrapper = LoRALinear if isinstance(base, nn.Linear) else LoRAConv2d
        module = wrapper(base, rank, generator, train_base)
        parent_name, _, child = name.rpartition(".")
        parent = adapted.get_submodule(parent_name) if parent_name else adapted
        setattr(parent, child, module)
    if not train_base:  # parameters outside the adapters become buffers
        adapters_only(adapted)
    return adapted


def is_lora_parameter(name: str) -> bool:
    """Whether a qualified parameter name belongs to a LoRA factor: ours (``….lora_A``) or peft's (``….lora_A.default.weight``)."""
    parts = name.split(".")
    return "lora_A" in parts or "lora_B" in parts


def adapters_only(model: nn.Module) -> nn.Module:
    """Turn every parameter of ``model`` that is not a LoRA factor into a buffer, in place (gradients then cover the adapters only)."""
    for module_name, module in model.named_modules():
        for pname, param in list(module.named_parameters(recurse=False)):
            if not is_lora_parameter(f"{module_name}.{pname}" if module_name else pname):
                delattr(module, pname)
                module.register_buffer(pname, param.detach().clone())
    return model


def lora_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The adapter factors (``lora_A``, ``lora_B``; ours or peft's) of ``model`` by qualified name."""
    return {name: p for name, p in model.named_parameters() if is_lora_parameter(name)}
