"""Full-size SD1.5 shape: fuse two official-layout concepts, save as a normal checkpoint plus a concept
bundle, reload with stock CheckpointLoaderSimple and an ED-LoRA Loader, and get the same model back."""
import os

import pytest
import torch

import test_assets

pytestmark = pytest.mark.fullsize


def test_fuse_save_reload_keeps_every_word(host, cn, sd15, capsys):
    model, clip, vae, _ = sd15
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    for i, name in enumerate(("anna", "bert")):
        test_assets.official_edlora_checkpoint(os.path.join(host.models("edloras"), f"{name}.pth"),
                                               words=(f"<{name}1>", f"<{name}2>"), seed=40 + i)
        model, clip = loader.load(model, clip, f"{name}.pth", 1.0, 1.0)
    fused_model, fused_clip, report = host.pack("nodes.fusion.nodes").GradientFusion().fuse(
        model, clip, "closed_form", 2, 64, 0, 1e-4)
    with capsys.disabled():
        print("\n" + report)
    assert "48 layers" in report and "32 layers" in report and "96 layers" in report

    bundle = host.pack("nodes.fusion.nodes").EDLoRASaveBundle().save(fused_clip, "anna_bert")["result"][0]
    cn.NODE_CLASS_MAPPINGS["CheckpointSave"]().save(fused_model, fused_clip, vae, "checkpoints/fused_anna_bert")
    saved = os.path.join(host.output(), "checkpoints", "fused_anna_bert_00001_.safetensors")
    link = os.path.join(host.models("checkpoints"), "fused_anna_bert.safetensors")
    os.symlink(saved, link)
    try:
        re_model, re_clip = cn.CheckpointLoaderSimple().load_checkpoint("fused_anna_bert.safetensors")[:2]
        re_model, re_clip = loader.load(re_model, re_clip, os.path.basename(bundle), 1.0, 1.0)
        encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
        text = "a <anna1> <anna2> and a <bert1> <bert2> in a park"
        fused_cond, re_cond = encode.encode(fused_clip, text)[0], encode.encode(re_clip, text)[0]
        assert torch.allclose(fused_cond[0][0], re_cond[0][0], atol=1e-4)
        latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
        a = cn.common_ksampler(fused_model, 0, 1, 5.0, "euler", "normal", fused_cond, fused_cond, latent)[0]
        b = cn.common_ksampler(re_model, 0, 1, 5.0, "euler", "normal", re_cond, re_cond, latent)[0]
        assert torch.allclose(a["samples"], b["samples"], atol=1e-3)
        base = cn.common_ksampler(sd15[0], 0, 1, 5.0, "euler", "normal", fused_cond, fused_cond, latent)[0]
        assert not torch.allclose(a["samples"], base["samples"], atol=1e-3)  # the fusion changed the model
    finally:
        os.remove(link)
        os.remove(saved)
