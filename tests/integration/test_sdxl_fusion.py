"""Gradient fusion on the SDXL architecture (tiny SDXL testbed: 70 cross-attention layers in 11 rows, CLIP-L and
CLIP-G): every stage streams and solves as on SD1.x, both text encoders included."""
import logging
import os

import pytest
import torch
from integration.host_support import check_fused_lora_export, random_concept, write_concept

WORDS = ("fox", "elk")


@pytest.fixture(scope="module")
def sdxl_concepts(host, testbed_sdxl):
    model, clip, _ = testbed_sdxl
    for i, w in enumerate(WORDS):
        write_concept(host, random_concept(host, model, clip, (f"<{w}1>", f"<{w}2>"), seed=40 + i, up_std=0.05),
                      f"xl_{w}.safetensors")
    return WORDS


def _items(host, names):
    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    return [glue.FusionItem(formats.load_concept(f"{host.models('edloras')}/xl_{n}.safetensors")) for n in names]


def _fuse(host, testbed_sdxl, names, **cfg):
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=2, **cfg)
    model, clip, _ = testbed_sdxl
    return host.pack("nodes.fusion.pipeline").fuse(model, clip, _items(host, names), config)


def test_sdxl_fused_kv_reproduce_each_concepts_kv_on_its_blocks_row(host, testbed_sdxl, sdxl_concepts):
    _, fused_clip, deltas, report = _fuse(host, testbed_sdxl, sdxl_concepts, ridge=0.0, spatial_ridge=0.0,
                                          kv_targets="official")  # the paper's targets: each concept's K/V change
    assert report.layers == {"text encoder": 24, "cross-attention K/V": 140, "UNet attention": 420}
    assert sum(m.startswith("text_encoder_2.") for m in deltas["text"]) == 12  # CLIP-G's attention, fused too
    layerwise = host.pack("nodes.concepts.layerwise")
    sites = host.pack("nodes.model_layout").cross_attention_sites(testbed_sdxl[0])
    for item in _items(host, sdxl_concepts):
        contexts, _, positions = layerwise.layer_contexts(fused_clip, "photo of a " + " ".join(item.concept.words))
        assert contexts.shape[0] == 11 and len(positions) == 3
        for site in sites:
            for proj in ("to_k", "to_v"):
                module = f"{site.diffusers_prefix}.attn2.{proj}"
                x = contexts[site.row, positions].double()  # (3, 192): its block's row
                own = x @ item.concept.unet_lora[module].delta(1.0).double().T
                fused = x @ deltas["unet"][module].double().T
                assert torch.allclose(fused, own, atol=1e-4 * own.abs().max()), module


def test_one_sdxl_concept_fuses_to_itself_through_both_encoders(host, testbed_sdxl, sdxl_concepts):
    model, clip, _ = testbed_sdxl
    _, fused_clip, _, report = _fuse(host, testbed_sdxl, sdxl_concepts[:1], ridge=0.0, spatial_ridge=0.0)
    assert max(report.residual.values()) < 1e-8
    _, own_clip = host.pack("nodes.concepts.nodes").EDLoRALoader().load(model, clip, "xl_fox.safetensors", 1.0, 1.0)
    layerwise = host.pack("nodes.concepts.layerwise")
    text = "photo of a <fox1> <fox2>"
    length = layerwise.prompt_length(own_clip, text)
    fused, own = layerwise.layer_contexts(fused_clip, text), layerwise.layer_contexts(own_clip, text)
    assert torch.allclose(fused[0][:, :length], own[0][:, :length], atol=2e-3)  # both encoders' 192 columns
    assert torch.allclose(fused[1], own[1], atol=2e-3)  # and CLIP-G's pooled text


def test_gradient_fusion_node_on_sdxl_saves_a_bundle_and_a_kohya_sdxl_lora(host, cn, testbed_sdxl, sdxl_concepts,
                                                                           caplog):
    model, clip, _ = testbed_sdxl
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    chained_model, chained_clip = model, clip
    for w in sdxl_concepts:
        chained_model, chained_clip = loader.load(chained_model, chained_clip, f"xl_{w}.safetensors", 1.0, 1.0)
    fusion_nodes = host.pack("nodes.fusion.nodes")
    with caplog.at_level(logging.WARNING):
        fused_model, fused_clip, report = fusion_nodes.GradientFusion().fuse(
            chained_model, chained_clip, "closed_form", 2, 64, 0, 1e-3, lora_filename="xl_fused")
        lora_model, lora_clip = cn.LoraLoader().load_lora(model, clip, "xl_fused.safetensors", 1.0, 1.0)
    assert "fused 2 concept(s)" in report and "lora key not loaded" not in caplog.text
    from safetensors import safe_open

    with safe_open(os.path.join(host.models("loras"), "xl_fused.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.diff" in keys
    assert "lora_unet_output_blocks_0_1_transformer_blocks_9_attn2_to_k.diff" in keys
    check_fused_lora_export(cn, model, (fused_model, fused_clip), (lora_model, lora_clip), "a fox and an elk", 1)
    # the words travel as an SDXL bundle (format 2, both encoders) onto the model with the fused LoRA
    path = fusion_nodes.EDLoRASaveBundle().save(fused_clip, "xl_bundle")["result"][0]
    bundle = host.pack("mixofshow_core.formats").load_concept(path)
    assert bundle.base_family == "sdxl" and bundle.text_encoders == [("clip_l", 64), ("clip_g", 128)]
    assert bundle.word_groups == [["<fox1>", "<fox2>"], ["<elk1>", "<elk2>"]]
    reloaded_model, reloaded_clip = loader.load(lora_model, lora_clip, "xl_bundle.safetensors", 1.0, 1.0)
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    prompt = "a <fox1> <fox2> and a <elk1> <elk2>"
    assert torch.allclose(encode.encode(reloaded_clip, prompt)[0][0][0], encode.encode(fused_clip, prompt)[0][0][0],
                          atol=1e-3)
