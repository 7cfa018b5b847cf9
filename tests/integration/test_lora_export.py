"""A concept's LoRA part exported as a standard LoRA loads in stock LoraLoader with every key used."""
import logging
import os

import pytest
import torch
from integration.host_support import random_concept, write_concept

import test_assets


def _export(host, concept_name, filename):
    node = host.pack("nodes.concepts.nodes").EDLoRAExport()
    return node.export(concept_name, "kohya LoRA (for LoraLoader)", filename)["result"][0]


def _sample(cn, model, cond):
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    return cn.common_ksampler(model, 3, 2, 4.0, "euler", "normal", cond, cond, latent)[0]["samples"]


def test_exported_lora_equals_the_concept_lora_in_stock_loraloader(host, cn, testbed, caplog):
    model, clip, _ = testbed
    write_concept(host, random_concept(host, model, clip, ("<owl1>", "<owl2>"), seed=8, up_std=0.3), "owl.safetensors")
    path = _export(host, "owl.safetensors", "owl_lora")
    assert os.path.dirname(path) == host.models("loras")
    with caplog.at_level(logging.WARNING):
        m_lora, c_lora = cn.LoraLoader().load_lora(model, clip, "owl_lora.safetensors", 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    m_ours, c_ours = host.pack("nodes.concepts.nodes").EDLoRALoader().load(model, clip, "owl.safetensors", 1.0, 1.0)
    text = "an owl on a branch"
    cond_lora = cn.CLIPTextEncode().encode(c_lora, text)[0]
    cond_ours = cn.CLIPTextEncode().encode(c_ours, text)[0]
    assert torch.allclose(cond_lora[0][0], cond_ours[0][0], atol=1e-5)
    assert not torch.allclose(cond_lora[0][0], cn.CLIPTextEncode().encode(clip, text)[0][0][0], atol=1e-3)
    assert torch.allclose(_sample(cn, m_lora, cond_lora), _sample(cn, m_ours, cond_lora), atol=1e-5)


@pytest.mark.fullsize
def test_official_checkpoint_exports_with_every_sd15_key_loaded(host, cn, sd15, caplog):
    model, clip, _, _ = sd15
    test_assets.official_edlora_checkpoint(os.path.join(host.models("edloras"), "potter_export.pth"))
    _export(host, "potter_export.pth", "potter_lora")
    with caplog.at_level(logging.WARNING):
        m, c = cn.LoraLoader().load_lora(model, clip, "potter_lora.safetensors", 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    assert len(m.patches) == 128 and len(c.patcher.patches) == 48
