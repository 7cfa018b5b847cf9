"""Layer-wise conditioning through ComfyUI's cond batching, on the tiny SD1-layout testbed (16 layers)."""
import logging

import pytest
import torch
from integration.host_support import (
    check_recorded,
    layer_table,
    random_concept,
    record_contexts,
    reference_contexts,
    write_concept,
)


@pytest.fixture(scope="module")
def two_concepts(host, testbed):
    model, clip, _ = testbed
    write_concept(host, random_concept(host, model, clip, ("<cat1>", "<cat2>"), seed=1), "cat.safetensors")
    write_concept(host, random_concept(host, model, clip, ("<dog1>", "<dog2>"), seed=2), "dog.safetensors")
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    with torch.inference_mode():
        m, c = loader.load(model, clip, "cat.safetensors", 1.0, 1.0)
        return loader.load(m, c, "dog.safetensors", 0.8, 0.9)


def _encode(host, clip, text):
    return host.pack("nodes.concepts.nodes").EDLoRATextEncode().encode(clip, text)[0]


def _sample(cn, model, positive, negative, batch=1, steps=1, seed=0):
    latent = cn.EmptyLatentImage().generate(64, 64, batch)[0]
    return cn.common_ksampler(model, seed, steps, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_chained_concepts_reach_every_layer_with_cond_and_uncond_batched(host, cn, two_concepts):
    model, clip = two_concepts
    template = "{} {} chasing {} {}, (sunset:1.1)"
    words = ("<cat1>", "<cat2>", "<dog1>", "<dog2>")
    positive = _encode(host, clip, template.format(*words))
    negative = _encode(host, clip, "blurry")
    refs = reference_contexts(host, cn, clip, template, words, 16)
    plain_neg = cn.CLIPTextEncode().encode(clip, "blurry")[0][0][0][0]
    recording, recorder = record_contexts(model)
    _sample(cn, recording, positive, negative, batch=2)
    layers = check_recorded(recorder, layer_table(host, model),
                            {0: lambda layer: [refs[layer]], 1: lambda layer: [plain_neg]})
    assert layers == set(range(16))
    assert any(len(c) == 2 for _, c, _ in recorder.calls), "cond and uncond should share one batch"
    assert all(ctx.shape[0] == 4 for _, _, ctx in recorder.calls)  # batch 2 x (cond, uncond)


def test_stock_negative_areas_masks_and_combined_conds(host, cn, two_concepts):
    model, clip = two_concepts
    cat = _encode(host, clip, "a {} {}".format("<cat1>", "<cat2>"))
    dog = _encode(host, clip, "a {} {}".format("<dog1>", "<dog2>"))
    left = cn.ConditioningSetArea().append(cat, 32, 64, 0, 0, 1.0)[0]
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    right = cn.ConditioningSetMask().append(dog, mask, "default", 1.0)[0]
    positive = cn.ConditioningCombine().combine(left, right)[0]
    negative = cn.CLIPTextEncode().encode(clip, "")[0]  # plain, stock node
    cat_refs = reference_contexts(host, cn, clip, "a {} {}", ("<cat1>", "<cat2>"), 16)
    dog_refs = reference_contexts(host, cn, clip, "a {} {}", ("<dog1>", "<dog2>"), 16)
    plain_neg = negative[0][0][0]
    recording, recorder = record_contexts(model)
    out = _sample(cn, recording, positive, negative)
    layers = check_recorded(recorder, layer_table(host, model),
                            {0: lambda layer: [cat_refs[layer], dog_refs[layer]], 1: lambda layer: [plain_neg]})
    assert layers == set(range(16)) and torch.isfinite(out).all()


def test_controlnet_sees_the_layer_mean_and_changes_the_result(host, cn, two_concepts):
    model, clip = two_concepts
    control = host.pack("testbed.model").build_controlnet(seed=5)
    seen = []
    control.control_model.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["context"].clone()),
                                                    with_kwargs=True)
    positive = _encode(host, clip, "a <cat1> <cat2>")
    negative = _encode(host, clip, "")
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    pos_c, neg_c = cn.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, hint, 1.0, 0.0, 1.0)
    with_control = _sample(cn, model, pos_c, neg_c)
    without = _sample(cn, model, positive, negative)
    assert seen and seen[0].shape[1] == 77  # layer mean, not the packed 16 x 77 tokens
    layerwise = host.pack("nodes.concepts.layerwise")
    mean = host.pack("mixofshow_core.layer_context").mean_over_layers(positive[0][0], 16)[0]
    assert any(torch.allclose(row, mean, atol=1e-5) for ctx in seen for row in ctx)
    assert not torch.allclose(with_control, without)
    assert layerwise.has_layer_patch(model)


def test_strength_zero_keeps_the_embedding_but_drops_lora(host, cn, testbed):
    model, clip, _ = testbed
    write_concept(host, random_concept(host, model, clip, ("<fox1>",), seed=3, up_std=0.5), "fox.safetensors")
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    m0, c0 = loader.load(model, clip, "fox.safetensors", 0.0, 0.0)
    m1, c1 = loader.load(model, clip, "fox.safetensors", 1.0, 1.0)
    plain = cn.CLIPTextEncode().encode(clip, "a red fox")[0]
    assert torch.allclose(_sample(cn, m0, plain, plain), _sample(cn, model, plain, plain))
    assert not torch.allclose(_sample(cn, m1, plain, plain), _sample(cn, model, plain, plain))
    fox0, fox_plain = _encode(host, c0, "a <fox1>"), _encode(host, c0, "a fox")
    assert not torch.allclose(fox0[0][0], fox_plain[0][0])


def test_prompt_problems_are_warned(host, two_concepts, caplog):
    _, clip = two_concepts
    with caplog.at_level(logging.WARNING):
        _encode(host, clip, "a <cat1> next to a <dgo1>")
    text = caplog.text
    assert "<dgo1>" in text and "no loaded concept defines" in text
    assert "used without ['<cat2>']" in text
