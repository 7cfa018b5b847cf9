"""ED-LoRA concepts on the SDXL architecture (tiny SDXL testbed: the SDXL block layout with 70 cross-attention
layers in 11 attention blocks, CLIP-L and CLIP-G): loading, layer-wise encoding, pooled text, LoRA export."""
import logging
import os

import pytest
import torch
from integration.host_support import (
    check_recorded,
    layer_table,
    random_concept,
    record_contexts,
    reference_contexts,
    reference_encoding,
    write_concept,
)

PROMPT = "a photo of {} {} in a forest, (smiling:1.2)"
ROW_DEPTHS = [2, 2, 10, 10, 10, 10, 10, 10, 2, 2, 2]  # transformers per attention block, down -> mid -> up


@pytest.fixture(scope="module")
def fox(host, testbed_sdxl):
    model, clip, _ = testbed_sdxl
    concept = random_concept(host, model, clip, ("<fox1>", "<fox2>"), seed=21, up_std=0.05)
    write_concept(host, concept, "fox_sdxl.safetensors")
    return concept


@pytest.fixture(scope="module")
def fox_loaded(host, testbed_sdxl, fox):
    model, clip, _ = testbed_sdxl
    return host.pack("nodes.concepts.nodes").EDLoRALoader().load(model, clip, "fox_sdxl.safetensors", 1.0, 1.0)


def test_sdxl_layout_has_70_cross_attention_layers_in_11_rows_as_the_sdxl_constant(host, testbed_sdxl):
    model = testbed_sdxl[0]
    layout_mod, unet_layout = host.pack("nodes.model_layout"), host.pack("mixofshow_core.unet_layout")
    sites = layout_mod.cross_attention_sites(model)
    assert layout_mod.model_family(model) == "SDXL" and layout_mod.layer_rows(model) == 11
    assert [sum(s.row == r for s in sites) for r in range(11)] == ROW_DEPTHS
    assert [(s.ldm_prefix, s.diffusers_prefix, s.row) for s in sites] == \
        [(s.ldm_prefix, s.diffusers_prefix, s.row) for s in unet_layout.sdxl_layout().sites()]
    assert sites[0].diffusers_prefix == "down_blocks.1.attentions.0.transformer_blocks.0"
    assert sites[0].block == ("input", 4) and sites[-1].block == ("output", 5)
    assert {s.diffusers_prefix for s in sites if s.row == 4} == \
        {f"mid_block.attentions.0.transformer_blocks.{k}" for k in range(10)}


def test_sdxl_concept_file_keeps_both_encoders_rows_and_lora(host, fox):
    formats = host.pack("mixofshow_core.formats")
    from safetensors import safe_open

    path = os.path.join(host.models("edloras"), "fox_sdxl.safetensors")
    with safe_open(path, "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
        assert tuple(f.get_tensor("embedding.clip_g.1").shape) == (11, 128)
    assert meta["mixofshow.format_version"] == "2" and meta["mixofshow.base_family"] == "sdxl"
    assert meta["mixofshow.text_encoders"] == '[["clip_l", 64], ["clip_g", 128]]'
    assert meta["mixofshow.layer_granularity"] == "attention_block" and meta["mixofshow.layer_count"] == "11"
    assert {"embedding.clip_l.0", "embedding.clip_g.0"} <= keys and "embedding.0" not in keys
    assert any(k.startswith("text_encoder_2.text_model.encoder.layers.2.") for k in keys)
    back = formats.load_concept(path)
    assert back.text_encoders == [("clip_l", 64), ("clip_g", 128)] and back.base_family == "sdxl"
    assert all(torch.equal(back.embeddings[w], fox.embeddings[w]) for w in fox.words)
    assert sorted(back.text_lora) == sorted(fox.text_lora) and sorted(back.unet_lora) == sorted(fox.unet_lora)
    assert len(back.unet_lora) == 70 * 8 and sum(m.startswith("text_encoder_2.") for m in back.text_lora) == 12


def test_every_sdxl_layer_gets_its_blocks_row_through_both_encoders(host, cn, fox_loaded):
    """Reference independent of the pack's encoder: for row l, stock CLIPTextEncode with each word as an SDXL
    textual-inversion file (clip_l and clip_g parts of row l); every one of the 70 layers must see its block's."""
    model, clip = fox_loaded
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    positive = encode.encode(clip, PROMPT.format("<fox1>", "<fox2>"))[0]
    negative = encode.encode(clip, "lowres, blurry")[0]
    references = reference_contexts(host, cn, clip, PROMPT, ("<fox1>", "<fox2>"), 11)
    plain_negative = cn.CLIPTextEncode().encode(clip, "lowres, blurry")[0][0][0][0]

    recording, recorder = record_contexts(model)
    latent = cn.EmptyLatentImage().generate(96, 64, 1)[0]
    cn.common_ksampler(recording, 0, 1, 7.0, "euler", "normal", positive, negative, latent)

    rows = check_recorded(recorder, layer_table(host, model),
                          {0: lambda row: [references[row]], 1: lambda row: [plain_negative]}, atol=2e-4)
    assert rows == set(range(11))
    assert len({block for block, _, _ in recorder.calls}) == 70
    assert not torch.allclose(references[0], references[10], atol=1e-3)  # rows differ: the check has teeth


def test_sdxl_pooled_text_is_the_prompt_with_each_words_mean_row(host, cn, fox_loaded):
    model, clip = fox_loaded
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    cond = encode.encode(clip, PROMPT.format("<fox1>", "<fox2>"))[0]
    pooled = cond[0][1]["pooled_output"]
    mean_ref = reference_encoding(host, cn, clip, PROMPT, ("<fox1>", "<fox2>"), lambda rows: rows.mean(0))[1]
    first_ref = reference_encoding(host, cn, clip, PROMPT, ("<fox1>", "<fox2>"), lambda rows: rows[0])[1]
    assert pooled.shape == (1, 128)
    assert torch.allclose(pooled, mean_ref, atol=1e-4)
    assert not torch.allclose(pooled, first_ref, atol=1e-3)
    # the pooled text reaches the UNet: SDXL's ADM input changes the sample
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    other = [[cond[0][0], {**cond[0][1], "pooled_output": first_ref}]]
    a = cn.common_ksampler(model, 1, 1, 1.0, "euler", "normal", cond, cond, latent)[0]["samples"]
    b = cn.common_ksampler(model, 1, 1, 1.0, "euler", "normal", other, other, latent)[0]["samples"]
    assert not torch.allclose(a, b, atol=1e-5)


def test_sdxl_concept_lora_and_its_kohya_export_load_every_key(host, cn, testbed_sdxl, fox, caplog):
    """The kohya export writes what kohya writes for SDXL (lora_te1_, lora_te2_, lora_unet_ with LDM names); stock
    LoraLoader uses every key and gives the same model and CLIP as EDLoRALoader."""
    model, clip, _ = testbed_sdxl
    node = host.pack("nodes.concepts.nodes").EDLoRAExport()
    path = node.export("fox_sdxl.safetensors", "kohya LoRA (for LoraLoader)", "fox_sdxl_lora")["result"][0]
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    prefixes = {k.split("_text_model")[0] if k.startswith("lora_te") else "lora_unet" for k in keys}
    assert prefixes == {"lora_te1", "lora_te2", "lora_unet"}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_out_0.alpha" in keys
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    with caplog.at_level(logging.WARNING):
        m_lora, c_lora = cn.LoraLoader().load_lora(model, clip, "fox_sdxl_lora.safetensors", 1.0, 1.0)
        m_ours, c_ours = host.pack("nodes.concepts.nodes").EDLoRALoader().load(
            model, clip, "fox_sdxl.safetensors", 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    assert len(m_lora.patches) == 560 and len(c_lora.patcher.patches) == 24
    assert set(m_lora.patches) == set(m_ours.patches) and set(c_lora.patcher.patches) == set(c_ours.patcher.patches)
    text = "a fox in the snow"
    cond_lora, cond_ours = cn.CLIPTextEncode().encode(c_lora, text)[0], cn.CLIPTextEncode().encode(c_ours, text)[0]
    assert torch.allclose(cond_lora[0][0], cond_ours[0][0], atol=1e-5)
    assert torch.allclose(cond_lora[0][1]["pooled_output"], cond_ours[0][1]["pooled_output"], atol=1e-5)
    assert not torch.allclose(cond_lora[0][0], cn.CLIPTextEncode().encode(clip, text)[0][0][0], atol=1e-3)
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    a = cn.common_ksampler(m_lora, 3, 1, 4.0, "euler", "normal", cond_lora, cond_lora, latent)[0]["samples"]
    b = cn.common_ksampler(m_ours, 3, 1, 4.0, "euler", "normal", cond_lora, cond_lora, latent)[0]["samples"]
    assert torch.allclose(a, b, atol=1e-5)


def test_concepts_of_the_other_family_are_refused_naming_both(host, testbed, testbed_sdxl, fox):
    errors = host.pack("mixofshow_core.errors")
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    sd1_model, sd1_clip, _ = testbed
    write_concept(host, random_concept(host, sd1_model, sd1_clip, ("<hen1>",), seed=4), "hen_sd1.safetensors")
    model, clip, _ = testbed_sdxl
    with pytest.raises(errors.BaseModelMismatchError,
                       match=r"made for SD1.x .* this model \(SDXL\) has text encoders clip_l 64 \+ clip_g 128 and 11"):
        loader.load(model, clip, "hen_sd1.safetensors", 1.0, 1.0)
    with pytest.raises(errors.BaseModelMismatchError, match=r"made for SDXL .* but this model \(SD1.x\) has"):
        loader.load(sd1_model, sd1_clip, "fox_sdxl.safetensors", 1.0, 1.0)
    with pytest.raises(errors.BaseModelMismatchError, match=r"expects text width 192 but CLIP gives 64"):
        loader.load(model, sd1_clip, "fox_sdxl.safetensors", 1.0, 1.0)


def test_full_size_sdxl_layout_and_every_lora_key_of_a_concept_map_onto_its_weights(host):
    """The real SDXL module tree (built on the meta device: names and shapes, no weights): the pack finds the same
    70 layers in 11 rows as its SDXL constant, and a concept with LoRA on all 560 UNet attention projections and
    both encoders' 176 attention projections maps every module onto a weight of its shape, both in the pack's own
    loading and under the kohya SDXL names the host's LoRA key map knows."""
    import comfy.lora
    from integration.host_support import full_size_sdxl_on_meta

    model, clip = full_size_sdxl_on_meta()
    layout_mod, targets = host.pack("nodes.model_layout"), host.pack("nodes.training.targets")
    unet_layout, init = host.pack("mixofshow_core.unet_layout"), host.pack("mixofshow_core.concept_init")
    assert layout_mod.model_family(model) == "SDXL" and layout_mod.layer_rows(model) == 11
    assert layout_mod.unet_layout(model).sites() == unet_layout.sdxl_layout().sites()
    assert layout_mod.clip_encoders(clip) == [("clip_l", 768), ("clip_g", 1280)]
    text, unet = targets.text_targets(clip), targets.unet_targets(model)
    assert len(unet) == 560 and len(text) == 48 + 128
    assert text["text_encoder_2.text_model.encoder.layers.31.self_attn.out_proj"] == (1280, 1280)
    assert unet["mid_block.attentions.0.transformer_blocks.9.attn2.to_k"] == (2048, 1280)
    concept = init.init_concept(["<big1>"], [torch.zeros(2048)], 11, text, unet, up_std=0.01, base_family="sdxl")
    host.pack("nodes.concepts.model_patches")._check_lora_keys(model, clip, concept, layout_mod.unet_layout(model))
    kohya = host.pack("mixofshow_core.formats.kohya")
    unet_keys = comfy.lora.model_lora_keys_unet(model.model, {})
    clip_keys = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    names = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in kohya.state_dict(concept)}
    assert len(names) == 560 + 176
    assert all(n in unet_keys or n in clip_keys for n in names), sorted(n for n in names if n not in unet_keys)[:3]
    assert unet_keys["lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_v"] == \
        "diffusion_model.output_blocks.5.1.transformer_blocks.1.attn2.to_v.weight"


def test_sdxl_graph_in_the_executor_with_stock_nodes_before_and_after(host, testbed_sdxl, fox):
    """The built-in tiny SDXL through the real executor: loader -> ED-LoRA Loader -> stock LoraLoader (a kohya SDXL
    LoRA) -> regions -> stock KSampler at 1216x832's aspect -> VAE Decode; the concept and the regions both act."""
    import safetensors.torch

    import comfy_host

    model, clip, _ = testbed_sdxl
    hare = random_concept(host, model, clip, ("<hare1>",), seed=23, up_std=0.05)
    write_concept(host, hare, "hare_sdxl.safetensors")
    host.pack("mixofshow_core.formats").WRITERS["kohya_lora"](
        random_concept(host, model, clip, ("<x>",), seed=24, up_std=0.05),
        os.path.join(host.models("loras"), "style_sdxl.safetensors"))
    ckpt, loader, lora = ["1", 0], ["2", 0], ["3", 1]

    def run(with_regions: bool, concept: str, name: str) -> torch.Tensor:
        prompt = {
            "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sdxl", "seed": 0}},
            "2": {"class_type": "EDLoRALoader", "inputs": {"model": ckpt, "clip": ["1", 1], "concept_name": concept,
                                                           "strength_model": 1.0, "strength_clip": 1.0}},
            "3": {"class_type": "LoraLoader", "inputs": {"model": loader, "clip": ["2", 1], "lora_name":
                                                         "style_sdxl.safetensors", "strength_model": 0.5,
                                                         "strength_clip": 0.5}},
            "4": {"class_type": "EDLoRATextEncode", "inputs": {"clip": lora, "text": "a <fox1> <fox2> and a hare"}},
            "5": {"class_type": "EDLoRATextEncode", "inputs": {"clip": lora, "text": "blurry"}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 304, "height": 208, "batch_size": 1}},
            "7": {"class_type": "RegionPrompt", "inputs": {"clip": lora, "prompt": "a <fox1> <fox2>",
                                                           "negative": "ugly", "x": 0.0, "y": 0.0, "width": 0.5,
                                                           "height": 1.0, "weight": 1.0}},
            "8": {"class_type": "ApplyRegions", "inputs": {"model": ["3", 0], "regions": ["7", 0]}},
            "9": {"class_type": "KSampler", "inputs": {
                "model": ["8", 0] if with_regions else ["3", 0], "positive": ["4", 0], "negative": ["5", 0],
                "latent_image": ["6", 0], "seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 1.0}},
            "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
            "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": name}},
            "12": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": name}},
        }
        if concept != "fox_sdxl.safetensors":  # the fox words must still be defined: load it after the other
            prompt["13"] = {"class_type": "EDLoRALoader", "inputs": {
                "model": ["2", 0], "clip": ["2", 1], "concept_name": "fox_sdxl.safetensors", "strength_model": 1.0,
                "strength_clip": 1.0}}
            prompt["3"]["inputs"].update(model=["13", 0], clip=["13", 1])
        result = comfy_host.run_prompt(prompt)
        assert result.success, result.error
        assert result.outputs["11"]["images"][0]["filename"].endswith(".png")
        import folder_paths

        saved = result.outputs["12"]["latents"][0]
        path = os.path.join(folder_paths.get_output_directory(), saved["subfolder"], saved["filename"])
        return safetensors.torch.load_file(path)["latent_tensor"].float()

    regional = run(True, "fox_sdxl.safetensors", "sdxl_regional")
    assert regional.shape == (1, 4, 26, 38)
    assert not torch.allclose(regional, run(False, "fox_sdxl.safetensors", "sdxl_plain"), atol=1e-4)
    assert not torch.allclose(regional, run(True, "hare_sdxl.safetensors", "sdxl_two"), atol=1e-4)
