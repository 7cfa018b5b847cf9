"""Gradient fusion end to end in the real host, on the tiny SD1-layout testbed."""
import pytest
import torch
from integration.host_support import check_fused_lora_export, random_concept, write_concept

WORDS = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def chain(host, testbed):
    model, clip, _ = testbed
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    with torch.inference_mode():
        for i, w in enumerate(WORDS):
            concept = random_concept(host, model, clip, (f"<{w}1>", f"<{w}2>"), seed=10 + i, up_std=0.05)
            write_concept(host, concept, f"fuse_{w}.safetensors")
            model, clip = loader.load(model, clip, f"fuse_{w}.safetensors", 1.0, 1.0)
    return model, clip


def _items(host, names, alpha=1.0):
    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    return [glue.FusionItem(formats.load_concept(f"{host.models('edloras')}/fuse_{n}.safetensors"), alpha, alpha)
            for n in names]


def _items_clip(host, clip):
    """The base CLIP with the cat words but no LoRA: what the fusion must move away from."""
    clip = clip.clone()
    concept = _items(host, ["cat"])[0].concept
    host.pack("nodes.concepts.layerwise").register_words(clip, concept, 16, concept.name)
    return clip


def _fuse(host, testbed, names, **cfg):
    if "ridge" in cfg:  # a ridge given here is every stage's
        cfg.setdefault("spatial_ridge", cfg["ridge"])
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=3, **cfg)
    model, clip, _ = testbed
    return host.pack("nodes.fusion.pipeline").fuse(model, clip, _items(host, names), config)


def test_node_fuses_a_loader_chain_and_every_word_samples(host, cn, chain):
    fused_model, fused_clip, report = host.pack("nodes.fusion.nodes").GradientFusion().fuse(
        *chain, "closed_form", 3, 64, 0, 0.0, spatial_ridge=0.0)
    assert "fused 3 concept(s)" in report and "96 layers" in report and "32 layers" in report
    registry = host.pack("nodes.concepts.layerwise").concept_registry(fused_clip)
    assert sorted(registry) == sorted(f"<{w}{i}>" for w in WORDS for i in (1, 2))
    assert not host.pack("nodes.concepts.model_patches").loaded_concepts(fused_model)
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    cond = encode.encode(fused_clip, "a <cat1> <cat2>, a <dog1> <dog2> and a <owl1> <owl2>")[0]
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    samples = cn.common_ksampler(fused_model, 0, 2, 5.0, "euler", "normal", cond, cond, latent)[0]["samples"]
    assert torch.isfinite(samples).all()


def test_fused_kv_reproduce_each_concepts_kv_on_its_rows(host, testbed):
    _, fused_clip, deltas, _ = _fuse(host, testbed, WORDS, ridge=0.0, kv_targets="official")  # the paper's targets
    layerwise = host.pack("nodes.concepts.layerwise")
    sites = host.pack("nodes.model_layout").cross_attention_sites(testbed[0])
    for item in _items(host, WORDS):
        words = " ".join(item.concept.words)
        for template in ("photo of a {}", "{}"):
            contexts, _, positions = layerwise.layer_contexts(fused_clip, template.format(words))
            assert len(positions) == 3
            for site in sites:
                for proj in ("to_k", "to_v"):
                    module = f"{site.diffusers_prefix}.attn2.{proj}"
                    x = contexts[site.index, positions].double()  # (3, D)
                    own = x @ item.concept.unet_lora[module].delta(1.0).double().T
                    fused = x @ deltas["unet"][module].double().T
                    assert torch.allclose(fused, own, atol=1e-4 * own.abs().max()), module


def test_one_concept_fuses_to_itself(host, testbed):
    model, clip, _ = testbed
    _, fused_clip, _, exact = _fuse(host, testbed, ["cat"], ridge=0.0)
    # every layer reproduces the concept's own layer on the features it sees (objective at zero)
    assert set(exact.residual) == {"text encoder", "cross-attention K/V", "UNet attention"}
    assert max(exact.residual.values()) < 1e-8
    # the minimum-change solution for one concept is its own change projected on the features: never larger
    assert set(exact.growth) == set(exact.residual) and "largest change" in exact.text()
    assert all(0.0 < grown <= 1.0 + 1e-6 and layer for grown, layer in exact.growth.values()), exact.growth
    # default ridges: a small pull toward W0 on the text encoder and K/V (1e-3: below 1e-2 relative on this 64-wide
    # model, 5e-5 on SD1.5's K/V), a larger one on the sampled features of the other UNet layers (safety first)
    report = _fuse(host, testbed, ["cat"])[3]
    assert report.residual["text encoder"] < 1e-2 and report.residual["cross-attention K/V"] < 1e-2
    assert report.residual["UNet attention"] < 0.25
    # so through the whole (nonlinear) text encoder, the fusion prompt's tokens come out as the concept's own
    _, own_clip = host.pack("nodes.concepts.nodes").EDLoRALoader().load(model, clip, "fuse_cat.safetensors", 1.0, 1.0)
    layerwise = host.pack("nodes.concepts.layerwise")
    text = "photo of a <cat1> <cat2>"
    length = layerwise.prompt_length(own_clip, text)
    fused_ctx, own_ctx = layerwise.layer_contexts(fused_clip, text)[0], layerwise.layer_contexts(own_clip, text)[0]
    # (ComfyUI keeps this CLIP's weights in fp16 on CPU: patched weights are rounded to ~3e-5)
    assert torch.allclose(fused_ctx[:, :length], own_ctx[:, :length], atol=2e-3)
    assert not torch.allclose(own_ctx, layerwise.layer_contexts(_items_clip(host, clip), text)[0], atol=1e-3)
    three = _fuse(host, testbed, WORDS)[3]
    assert three.residual["cross-attention K/V"] < 1e-2  # 3 concepts x 6 rows still fit the width
    assert three.residual["UNet attention"] > 1e-6  # conflicts: fusion is a compromise there


def test_fusion_is_order_independent_and_deterministic(host, testbed):
    """Exactly with float64 statistics; to float32 rounding of the sums with the default float32 ones."""
    a = _fuse(host, testbed, WORDS, accumulate_fp64=True)[2]
    b = _fuse(host, testbed, WORDS[::-1], accumulate_fp64=True)[2]
    c, c_again, d = _fuse(host, testbed, WORDS)[2], _fuse(host, testbed, WORDS)[2], _fuse(host, testbed, WORDS[::-1])[2]
    for part in ("text", "unet"):
        for module in a[part]:
            assert torch.allclose(a[part][module], b[part][module], atol=1e-5), module
            assert torch.equal(c[part][module], c_again[part][module]), module
            scale = float(a[part][module].abs().max())
            assert torch.allclose(c[part][module], d[part][module], atol=1e-2 * scale), module
            assert torch.allclose(c[part][module], a[part][module], atol=1e-2 * scale), module


def test_average_and_lbfgs_modes(host, testbed):
    averaged = _fuse(host, testbed, WORDS, mode="average")[2]
    items = _items(host, WORDS)
    module = next(iter(items[0].concept.unet_lora))
    expected = sum(i.concept.unet_lora[module].delta(1.0) for i in items) / 3
    assert torch.allclose(averaged["unet"][module], expected, atol=1e-6)
    exact = _fuse(host, testbed, WORDS[:2], ridge=0.0)[3].residual
    lbfgs = _fuse(host, testbed, WORDS[:2], mode="lbfgs", text_iters=60, kv_iters=60, spatial_iters=30)[3].residual
    for stage, value in exact.items():  # the exact optimum is never beaten, and L-BFGS gets close on K/V
        assert value <= lbfgs[stage] + 1e-9, stage
    assert lbfgs["cross-attention K/V"] < 0.05


def test_interrupt_leaves_base_untouched_and_no_hooks(host, testbed):
    import comfy.model_management as mm

    model, clip, _ = testbed
    patches_before = {k: len(v) for k, v in model.patches.items()}
    calls = []

    def interrupt(stage, done, total):
        calls.append(stage)
        if stage == "UNet attention":
            mm.interrupt_current_processing(True)
            mm.throw_exception_if_processing_interrupted()

    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=2)
    with pytest.raises(mm.InterruptProcessingException):
        host.pack("nodes.fusion.pipeline").fuse(model, clip, _items(host, WORDS), config, interrupt)
    assert {k: len(v) for k, v in model.patches.items()} == patches_before
    unet = model.model.diffusion_model
    assert not any(m._forward_pre_hooks for m in unet.modules())
    assert not any(m._forward_pre_hooks for m in clip.cond_stage_model.modules())


def test_same_word_in_two_concepts_is_refused(host, testbed):
    model, clip, _ = testbed
    write_concept(host, random_concept(host, model, clip, ("<cat1>", "<zzz9>"), seed=30), "fuse_clash.safetensors")
    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    items = _items(host, ["cat"]) + [glue.FusionItem(formats.load_concept(
        f"{host.models('edloras')}/fuse_clash.safetensors"))]
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=1)
    with pytest.raises(host.pack("mixofshow_core.errors").ConceptWordError, match="both use the word <cat1>"):
        glue.fuse(model, clip, items, config)


def test_fused_change_exports_as_one_lora_for_stock_loraloader(host, cn, testbed, chain, caplog):
    import logging

    model, clip, _ = testbed
    with caplog.at_level(logging.WARNING):
        fused_model, fused_clip, _ = host.pack("nodes.fusion.nodes").GradientFusion().fuse(
            *chain, "closed_form", 2, 64, 0, 1e-4, lora_filename="fused_three")
        lora_model, lora_clip = cn.LoraLoader().load_lora(model, clip, "fused_three.safetensors", 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    # plain words: compares the fused weights, not the concept embeddings
    check_fused_lora_export(cn, model, (fused_model, fused_clip), (lora_model, lora_clip), "a cat and a dog", 2)


def test_chained_concepts_are_undone_through_the_hosts_lora_path_and_other_patches_stay(host, cn, testbed, chain):
    """GradientFusion starts from the model before its ED-LoRA Loaders: their LoRA is added again at minus its
    strength (no host patch list is edited), so sampling and encoding match the model without them, while a
    LoRA the user applied with stock LoraLoader before the loaders still acts."""
    import comfy.sd
    import nodes

    model, clip, _ = testbed
    patches = host.pack("nodes.concepts.model_patches")
    other = random_concept(host, model, clip, ("<zz1>",), seed=99, up_std=0.05)
    kohya = host.pack("mixofshow_core.formats.kohya")
    with torch.inference_mode():
        user_model, user_clip = comfy.sd.load_lora_for_models(model, clip, kohya.state_dict(other), 0.8, 0.8)
        chained_model, chained_clip = user_model, user_clip
        for w in WORDS:
            chained_model, chained_clip = patches.apply_concept(chained_model, chained_clip, _items(host, [w])[0]
                                                                .concept, 0.7, 0.9, w, "")
        loaded = [_items(host, [w])[0].concept for w in WORDS]
        undone_model, undone_clip = patches.without_loaded_concepts(chained_model, chained_clip, loaded)
        latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]

        def sample(m, c):
            cond = nodes.CLIPTextEncode().encode(c, "photo of a red circle")[0]
            return nodes.common_ksampler(m, 3, 2, 2.0, "euler", "normal", cond, cond, latent)[0]["samples"]

        expected, undone, chained = sample(user_model, user_clip), sample(undone_model, undone_clip), \
            sample(chained_model, chained_clip)
        base = sample(model, clip)
    # (this random testbed's latents are large and LoRA changes small in them: compare the changes themselves)
    residue, effect = (undone - expected).norm(), (chained - expected).norm()  # measured: 1.5e-6 and 1.1e-2
    assert residue < 1e-2 * effect  # the concepts acted before they were undone, and are gone after
    assert (expected - base).norm() > 100 * residue  # the stock LoRA still acts (4.6e-3)
    assert not patches.loaded_concepts(undone_model)
    assert host.pack("nodes.concepts.layerwise").concept_registry(undone_clip) == {}
