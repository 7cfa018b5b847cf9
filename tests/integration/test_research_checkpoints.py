"""Research-branch checkpoints (spec §1.9: ``<module>_lora.down.weight`` keys; LoRA also on the transformers'
proj_in/proj_out, 1x1 convolutions on SD1.5, and on the feed-forward layers): loaded by EDLoRALoader, the
weights the host ends up using equal the official merge ``W0 + alpha * up @ down`` (squeezed factors for
1x1 convolutions, reshaped to the weight) for every module in the file, and sampling runs.

The reference is computed here from the file's raw tensors, with ComfyUI's own diffusers -> LDM name map
(``comfy.utils.unet_to_diffusers``), not the pack's.
"""
import logging
import os

import pytest
import torch

import test_assets

UNET_STRENGTH, TEXT_STRENGTH = 0.7, 0.6


def _tiny_model(host, linear_proj: bool):
    """The testbed UNet, or the same with linear proj_in/proj_out (use_linear_in_transformer, as SD2/SDXL)."""
    import comfy.model_management
    import comfy.model_patcher

    testbed = host.pack("testbed.model")
    if not linear_proj:
        return testbed.build_model(0)
    config = testbed.TinySD1(dict(testbed.UNET_CONFIG, use_linear_in_transformer=True))
    config.set_inference_dtype(torch.float32, None)
    unet = testbed.seeded_init(config.get_model({}), 0)
    return comfy.model_patcher.ModelPatcher(unet, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def _official_weights(model, clip, path, unet_alpha, text_alpha):
    """{host weight key: (W0, official merged weight)} for every LoRA module in the checkpoint."""
    import comfy.utils

    params = torch.load(path, weights_only=True)["params"]
    to_ldm = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    out = {}
    for part, alpha in (("unet", unet_alpha), ("text_encoder", text_alpha)):
        for key in params[part]:
            if not key.endswith("_lora.down.weight"):
                continue
            module = key[: -len("_lora.down.weight")]
            down, up = params[part][key], params[part][f"{module}_lora.up.weight"]
            if part == "unet":
                host_key, root = f"diffusion_model.{to_ldm[module + '.weight']}", model.model
            else:
                host_key, root = f"clip_l.transformer.{module}.weight", clip.cond_stage_model
            w0 = comfy.utils.get_attr(root, host_key).detach().float().clone()
            if w0.dim() == 4:  # research branch merge: 1x1 conv factors squeezed, product unsqueezed to [o, i, 1, 1]
                delta = (up.squeeze() @ down.squeeze()).unsqueeze(-1).unsqueeze(-1)
            else:
                delta = up @ down
            out[host_key] = (w0, w0 + alpha * delta)
    return out


def _host_weight(patcher, key, weight):
    """The weight the host uses for ``key``: its patches applied by the host's own LoRA math."""
    import comfy.lora

    calculate = getattr(comfy.lora, "calculate_weight", None)  # ModelPatcher.calculate_weight on older hosts
    if calculate is None:
        return patcher.calculate_weight(patcher.patches[key], weight, key)
    return calculate(patcher.patches[key], weight, key)


def _problems(caplog):
    """Host log lines that say a patch was not applied (its LoRA math logs and skips on any error)."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR or "not merged" in r.getMessage().lower()
            or "not loaded" in r.getMessage().lower()]


def _check_parity(model, clip, loaded_model, loaded_clip, path):
    expected = _official_weights(model, clip, path, UNET_STRENGTH, TEXT_STRENGTH)
    patched = {**loaded_model.patches, **loaded_clip.patcher.patches}
    assert set(patched) == set(expected)  # every module of the file is patched, nothing else
    kinds = set()
    with torch.inference_mode():
        for key, (w0, official) in expected.items():
            patcher = loaded_model if key.startswith("diffusion_model.") else loaded_clip.patcher
            used = _host_weight(patcher, key, w0.clone())
            assert used.shape == official.shape and torch.equal(used, official), key
            kinds.add((key.rsplit(".", 2)[-2], w0.dim()))
    return kinds


def _sample(host, cn, model, clip, words):
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    cond = encode.encode(clip, f"a photo of {' '.join(words)}")[0]
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    return cn.common_ksampler(model, 0, 1, 1.0, "euler", "normal", cond, cond, latent)[0]["samples"]


def test_research_checkpoints_apply_the_official_deltas_with_conv_or_linear_proj(host, cn, testbed, caplog):
    _, clip, _ = testbed
    for linear_proj in (False, True):  # SD1.5's 1x1-conv proj_in/proj_out, then SD2/SDXL-style linear ones
        model = _tiny_model(host, linear_proj)
        name = f"research_tiny_{'linear' if linear_proj else 'conv'}.pth"
        path = test_assets.official_edlora_checkpoint(
            os.path.join(host.models("edloras"), name), words=("<res1>", "<res2>"), seed=3, width=64,
            research_keys=True, research_modules=True, conv_proj=not linear_proj,
            blocks=test_assets.attention_blocks(32, (1, 2, 2, 2)), text_layers=2, text_mlp=128)
        loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
        loaded_model, loaded_clip = loader.load(model, clip, name, UNET_STRENGTH, TEXT_STRENGTH)
        kinds = _check_parity(model, clip, loaded_model, loaded_clip, path)
        proj_dims = 2 if linear_proj else 4
        assert {("proj_in", proj_dims), ("proj_out", proj_dims), ("proj", 2), ("2", 2), ("fc1", 2)} <= kinds

        without_lora = host.pack("nodes.concepts.layerwise").with_layer_patch(model)
        base = _sample(host, cn, without_lora, loaded_clip, ("<res1>", "<res2>"))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            samples = _sample(host, cn, loaded_model, loaded_clip, ("<res1>", "<res2>"))
        assert not _problems(caplog)
        assert torch.isfinite(samples).all() and not torch.allclose(samples, base, atol=1e-5)


def test_lora_that_does_not_fit_the_weight_is_refused_naming_both_shapes(host, testbed):
    model, clip, _ = testbed
    path = test_assets.official_edlora_checkpoint(
        os.path.join(host.models("edloras"), "research_misfit.pth"), words=("<mis1>",), width=64,
        research_keys=True, research_modules=True, blocks=test_assets.attention_blocks(64, (1, 2, 2, 2)),
        text_layers=2, text_mlp=128)  # UNet widths twice the testbed's
    with pytest.raises(host.pack("mixofshow_core.errors").KeyMappingError) as err:
        host.pack("nodes.concepts.nodes").EDLoRALoader().load(model, clip, os.path.basename(path), 1.0, 1.0)
    message = str(err.value)
    assert "down_blocks.0.attentions.0.proj_in (LoRA [64, 64], weight [32, 32, 1, 1])" in message, message
    assert "1x1 convolution [out, in, 1, 1]" in message


@pytest.mark.fullsize
def test_research_checkpoint_on_sd15_applies_the_official_deltas(host, cn, sd15, caplog):
    model, clip, _, _ = sd15
    path = test_assets.official_edlora_checkpoint(os.path.join(host.models("edloras"), "research_sd15.pth"),
                                                  words=("<rsd1>", "<rsd2>"), research_keys=True,
                                                  research_modules=True)
    loaded_model, loaded_clip = host.pack("nodes.concepts.nodes").EDLoRALoader().load(
        model, clip, "research_sd15.pth", UNET_STRENGTH, TEXT_STRENGTH)
    kinds = _check_parity(model, clip, loaded_model, loaded_clip, path)
    assert {("proj_in", 4), ("proj_out", 4), ("proj", 2), ("2", 2), ("fc1", 2)} <= kinds
    assert len(loaded_model.patches) == 16 * 12 and len(loaded_clip.patcher.patches) == 12 * 6
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        samples = _sample(host, cn, loaded_model, loaded_clip, ("<rsd1>", "<rsd2>"))
    assert not _problems(caplog)
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("mode", ["closed_form", "average", "lbfgs"])
def test_gradient_fusion_fuses_research_concepts_with_conv_proj(host, cn, testbed, caplog, mode):
    """SD1.5's 1x1-conv proj_in/proj_out are fused as the linear maps they are: every fused layer reaches the
    host in its weight's shape (no 'shape mismatch ... not merged'), and the fused model samples."""
    _, clip, _ = testbed
    model = _tiny_model(host, linear_proj=False)
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    loaded, loaded_clip = model, clip
    for i, word in enumerate(("ann", "bob")):
        name = f"research_fuse_{word}.pth"
        test_assets.official_edlora_checkpoint(
            os.path.join(host.models("edloras"), name), words=(f"<{word}1>", f"<{word}2>"), seed=10 + i, width=64,
            research_keys=True, research_modules=True, conv_proj=True,
            blocks=test_assets.attention_blocks(32, (1, 2, 2, 2)), text_layers=2, text_mlp=128)
        loaded, loaded_clip = loader.load(loaded, loaded_clip, name, 1.0, 1.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fused, fused_clip, report = host.pack("nodes.fusion.nodes").GradientFusion().fuse(
            loaded, loaded_clip, mode, 1, 64, 0, 1e-4, text_iters=2, kv_iters=2, spatial_iters=2)
        proj = [k for k in fused.patches if k.endswith(("proj_in.weight", "proj_out.weight"))]
        sites = host.pack("nodes.model_layout").cross_attention_sites(model)
        assert len(proj) == 2 * len(sites)  # proj_in and proj_out of every spatial transformer
        import comfy.utils

        for key in proj:
            w0 = comfy.utils.get_attr(fused.model, key).detach().float().clone()
            assert w0.dim() == 4 and not torch.equal(_host_weight(fused, key, w0.clone()), w0), key
        samples = _sample(host, cn, fused, fused_clip, ("<ann1>", "<ann2>"))
    assert not [m for m in _problems(caplog) if "mismatch" in m.lower() or "not merged" in m.lower()]
    assert torch.isfinite(samples).all() and "UNet attention" in report
