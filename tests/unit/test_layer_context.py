"""Packing L layer contexts into one conditioning tensor and picking them back out."""
import torch

from mixofshow_core import layer_context as lc


def _contexts(layers=4, batch=2, tokens=5, width=3):
    ctx = torch.randn(layers, batch, tokens, width)
    ctx[:, :, 0] = torch.randn(batch, width)  # shared BOS output, as a causal text encoder gives
    return ctx


def _attend(q, ctx):
    return torch.softmax(q @ ctx.T, dim=-1) @ ctx


def test_each_layer_comes_back_exactly():
    ctx = _contexts()
    packed = lc.pack_layers(ctx)
    assert packed.shape == (2, 20, 3)
    for layer in range(4):
        assert torch.equal(lc.layer_of_packed(packed, layer, 4), ctx[layer])
        assert torch.equal(lc.select_layer(packed, layer, 4), ctx[layer])


def test_repetition_by_the_host_keeps_the_layer():
    ctx = _contexts()
    repeated = lc.pack_layers(ctx).repeat(1, 3, 1)  # host pads to a common length by repetition
    picked = lc.select_layer(repeated, 2, 4)
    assert torch.equal(picked, ctx[2].repeat(1, 3, 1))


def test_plain_rows_pass_through_and_mixed_batches_attend_identically():
    ctx = _contexts(batch=1)
    packed = lc.pack_layers(ctx)[0]  # (20, 3)
    plain = torch.randn(20, 3)
    assert lc.is_packed(packed, 4) and not lc.is_packed(plain, 4)
    mixed = torch.stack([packed, plain])
    out = lc.select_layer(mixed, 1, 4)
    assert out.shape == (2, 20, 3) and torch.equal(out[1], plain)
    q = torch.randn(7, 3)
    assert torch.allclose(_attend(q, out[0]), _attend(q, ctx[1, 0]), atol=1e-6)


def test_tiled_plain_context_gives_the_same_context_to_every_layer():
    plain = torch.randn(2, 5, 3)
    tiled = lc.tile_plain(plain, 4)
    for layer in range(4):
        assert torch.equal(lc.layer_of_packed(tiled, layer, 4), plain)
    assert torch.allclose(lc.mean_over_layers(tiled, 4), plain)


def test_short_or_indivisible_rows_are_not_packed():
    assert not lc.is_packed(torch.zeros(3, 2), 4)
    assert not lc.is_packed(torch.zeros(6, 2), 4)
    assert not lc.is_packed(torch.zeros(8, 2), 1)
