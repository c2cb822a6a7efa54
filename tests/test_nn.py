import pytest
import torch

from tdaeval.nn import SeededDropout, draw_noise, dropout_generator, scaled_keep_mask, seed_dropout, unseed_dropout


def test_identity_in_eval_mode():
    layer = SeededDropout(0.5).eval()
    x = torch.randn(4, 8)
    assert torch.equal(layer(x), x)


def test_drop_rate_and_rescaling():
    layer = SeededDropout(0.3)
    seed_dropout(layer, 0)
    out = layer(torch.ones(200_000))
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)
    assert out[kept].mean().item() == pytest.approx(1 / 0.7, rel=1e-3)


def test_seeded_masks_repeat_and_mask_buffer_reproduces_them():
    layer = SeededDropout(0.2)
    seed_dropout(layer, 5)
    first = layer(torch.ones(3, 16))
    seed_dropout(layer, 5)
    assert torch.equal(layer(torch.ones(3, 16)), first)
    unseed_dropout(layer)
    layer.mask = scaled_keep_mask(draw_noise(48, dropout_generator(5)).view(3, 16), 0.2)
    assert torch.equal(layer(torch.ones(3, 16)), first)


def test_one_large_draw_equals_consecutive_draws():
    a = draw_noise(10 + 7 + 4096, dropout_generator(1))
    g = dropout_generator(1)
    parts = [draw_noise(n, g) for n in (12, 8, 4096)]  # whole 64-bit words: 12, 8, 4096 values
    assert torch.equal(a[:10], parts[0][:10])
    assert torch.equal(a[12:19], parts[1][:7])


def test_invalid_rate():
    with pytest.raises(ValueError, match="'p'"):
        SeededDropout(1.0)
