"""Standard LoRAs as concepts (issue 35): files in the key layouts kohya, LyCORIS and diffusers write, read the
host's way, fused with gradient fusion (also mixed with an ED-LoRA) and placed in regions through the executor.

Parity: a LoRA read as a concept and applied through the host (``kohya.state_dict`` -> ``load_lora_for_models``)
changes every weight exactly as stock ``LoraLoader`` does with the original file, at the same strengths.
"""
import logging
import os

import pytest
import standard_loras
import torch
from integration.host_support import random_concept, write_concept

import comfy_host

TAGS = {"10_ohwx girl": {"ohwx girl": 12, "smile": 5}}


def _weights(patcher, root) -> dict[str, torch.Tensor]:
    """Every patched weight of a ModelPatcher as the host computes it (float32)."""
    import comfy.lora
    import comfy.utils

    return {k: comfy.lora.calculate_weight(p, comfy.utils.get_attr(root, k).float().clone(), k)
            for k, p in patcher.patches.items()}


def _concept(host, model, clip, name, triggers=("ohwx girl",), strength_model=0.8, strength_clip=0.6):
    standard = host.pack("nodes.concepts.standard_lora")
    return standard.concept_from_lora(model, clip, os.path.join(host.models("loras"), name), list(triggers),
                                      strength_model, strength_clip)


def _check_parity(host, cn, model, clip, name, concept, caplog):
    import comfy.sd

    kohya = host.pack("mixofshow_core.formats.kohya")
    stock_model, stock_clip = cn.LoraLoader().load_lora(model, clip, name, 0.8, 0.6)
    with caplog.at_level(logging.WARNING):
        ours_model, ours_clip = comfy.sd.load_lora_for_models(model, clip, kohya.state_dict(concept), 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    for stock, ours, root in ((stock_model, ours_model, model.model), (stock_clip.patcher, ours_clip.patcher,
                                                                      clip.cond_stage_model)):
        expected, got = _weights(stock, root), _weights(ours, root)
        assert sorted(got) == sorted(expected) and expected
        for key, w in expected.items():
            assert torch.allclose(got[key], w, atol=1e-6, rtol=1e-5), key


@pytest.mark.parametrize("kind", standard_loras.KINDS)
def test_each_layout_reads_as_loraloader_applies_it(host, cn, testbed, kind, caplog):
    model, clip, _ = testbed
    name = f"std_{kind}.safetensors"
    standard_loras.write_lora(os.path.join(host.models("loras"), name), model, clip, kind, seed=3, tags=TAGS)
    concept = _concept(host, model, clip, name)
    assert concept.triggers == ["ohwx girl"] and not concept.words and concept.base_family == "sd1"
    lora = host.pack("mixofshow_core.lora")
    kinds = {type(d) for d in {**concept.text_lora, **concept.unet_lora}.values()}
    expected = {"kohya": {lora.LoRAPair}, "diffusers": {lora.LoRAPair}, "loha": {lora.DenseDelta},
                "locon": {lora.LoRAPair, lora.DenseDelta}}[kind]  # LoCon's 3x3 convolutions are full changes
    assert kinds == expected
    layers = len(standard_loras.text_targets(clip)) // 6  # the tiny CLIP's layers
    assert len(concept.text_lora) == (4 if kind == "diffusers" else 6) * layers  # attention only / and MLP
    _check_parity(host, cn, model, clip, name, concept, caplog)


@pytest.mark.parametrize("kind", ["kohya", "loha"])
def test_sdxl_layouts_read_as_loraloader_applies_them(host, cn, testbed_sdxl, kind, caplog):
    model, clip, _ = testbed_sdxl
    name = f"std_xl_{kind}.safetensors"
    standard_loras.write_lora(os.path.join(host.models("loras"), name), model, clip, kind, seed=4, sdxl=True)
    concept = _concept(host, model, clip, name)
    assert concept.base_family == "sdxl" and [w for _, w in concept.text_encoders] == [64, 128]
    assert any(m.startswith("text_encoder_2.") for m in concept.text_lora)
    _check_parity(host, cn, model, clip, name, concept, caplog)


def test_unknown_keys_are_listed_not_dropped(host, testbed):
    model, clip, _ = testbed
    extra = {"lora_unet_not_a_layer.lora_down.weight": torch.zeros(4, 8),
             "lora_unet_not_a_layer.lora_up.weight": torch.zeros(8, 4)}
    standard_loras.write_lora(os.path.join(host.models("loras"), "std_stray.safetensors"), model, clip, extra=extra)
    errors = host.pack("mixofshow_core.errors")
    with pytest.raises(errors.KeyMappingError, match=r"2 of its \d+ keys match no weight.*lora_unet_not_a_layer"):
        _concept(host, model, clip, "std_stray.safetensors")


def test_a_lora_for_another_family_is_refused(host, testbed, testbed_sdxl):
    sd1_model, sd1_clip, _ = testbed
    standard_loras.write_lora(os.path.join(host.models("loras"), "std_sd1.safetensors"), sd1_model, sd1_clip)
    model, clip, _ = testbed_sdxl
    errors = host.pack("mixofshow_core.errors")
    with pytest.raises(errors.BaseModelMismatchError, match="trained for SD1.x .* this model is SDXL"):
        _concept(host, model, clip, "std_sd1.safetensors")


def test_a_pickle_is_never_opened(host, testbed, tmp_path):
    model, clip, _ = testbed
    marker = tmp_path / "ran"
    path = os.path.join(host.models("loras"), "std_pickle.pt")

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, path)
    errors = host.pack("mixofshow_core.errors")
    with pytest.raises(errors.ConceptFileError, match="from .safetensors files only"):
        host.pack("nodes.concepts.standard_lora").concept_from_lora(model, clip, path, ["x"], 1.0, 1.0)
    assert not marker.exists()


def test_fusing_two_loras_and_an_edlora_reproduces_each_on_its_trigger(host, testbed):
    """K/V at each concept's tokens (its trigger's, or its words') equal its own; one name per layer."""
    model, clip, _ = testbed
    loras = host.models("loras")
    standard_loras.write_lora(os.path.join(loras, "fuse_miku.safetensors"), model, clip, "kohya", seed=21)
    standard_loras.write_lora(os.path.join(loras, "fuse_rin.safetensors"), model, clip, "loha", seed=22)
    write_concept(host, random_concept(host, model, clip, ("<fox1>", "<fox2>"), seed=23), "fuse_std_fox.safetensors")
    nodes = host.pack("nodes.fusion.nodes")
    concepts = nodes.LoRAAsConcept().append("fuse_miku.safetensors", "hatsune miku", 1.0, 1.0)[0]
    concepts = nodes.LoRAAsConcept().append("fuse_rin.safetensors", "kagamine rin", 1.0, 1.0, concepts)[0]
    concepts = nodes.EDLoRAConceptList().append("fuse_std_fox.safetensors", 1.0, 1.0, concepts)[0]
    pipeline, config = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.config")
    items = [pipeline.FusionItem(_concept(host, model, clip, "fuse_miku.safetensors", ["hatsune miku"], 1.0, 1.0)),
             pipeline.FusionItem(_concept(host, model, clip, "fuse_rin.safetensors", ["kagamine rin"], 1.0, 1.0)),
             pipeline.FusionItem(host.pack("mixofshow_core.formats").load_concept(
                 os.path.join(host.models("edloras"), "fuse_std_fox.safetensors")))]
    cfg = config.FusionConfig(resolution=64, steps=2, ridge=0.0, spatial_ridge=0.0, kv_targets="official")
    _, fused_clip, deltas, report = pipeline.fuse(model, clip, items, cfg)
    assert "kagamine rin" in report.text() and "<fox1> <fox2>" in report.text()
    assert report.residual["cross-attention K/V"] < 1e-6
    layerwise = host.pack("nodes.concepts.layerwise")
    sites = host.pack("nodes.model_layout").cross_attention_sites(model)
    layout = host.pack("nodes.model_layout").unet_layout(model)
    by_ldm = {layout.ldm_name(m): d for m, d in deltas["unet"].items()}
    assert len(by_ldm) == len(deltas["unet"])  # the ED-LoRA's diffusers names and the LoRAs' LDM names: one each
    for item in items:
        c = item.concept
        contexts, _, positions = layerwise.layer_contexts(fused_clip, f"photo of a {c.prompt_text}", 16, c.triggers)
        ids = [t[0] for t in fused_clip.tokenize(c.prompt_text)["l"][0]]
        tokens = 2 if c.words else ids.index(fused_clip.tokenizer.clip_l.end_token, 1) - 1  # BOS ... EOS
        assert len(positions) == tokens + 1  # its tokens and the first end token
        own = {layout.ldm_name(m): d for m, d in c.unet_lora.items()}
        for site in sites:
            for proj in ("to_k", "to_v"):
                module = f"{site.ldm_prefix}.attn2.{proj}"
                x = contexts[site.row, positions].double()
                expected = x @ own[module].delta(1.0).double().T
                fused = x @ by_ldm[module].double().flatten(1).T
                assert torch.allclose(fused, expected, atol=1e-4 * expected.abs().max()), (c.name, module)


def _train_node_lora(host, model, clip, vae, prefix, seed):
    """A LoRA file written by ComfyUI's own Train LoRA + Save LoRA nodes (3 steps on two random 64-px images)."""
    pytest.importorskip("comfy_extras.nodes_train")
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2, 64, 64, 3, generator=g)  # (n, H, W, 3)
    name, lora, _ = standard_loras.train_comfy_lora(model, clip, vae, pixels, ["zorbl creature"] * 2, host.output(),
                                                    host.models("loras"), prefix, seed=seed, steps=3, rank=4,
                                                    batch_size=2)
    return name, lora


def test_train_lora_node_files_fuse_with_their_biases_and_norms(host, cn, testbed, caplog):
    """ComfyUI's Train LoRA saves biases (.diff_b) and norms (1-D .diff) next to its LoRA pairs: read as LoraLoader
    applies them, weight-averaged by fusion, and written back into the fused LoRA file."""
    model, clip, vae = testbed
    files = [_train_node_lora(host, model, clip, vae, f"train_node_{seed}", seed) for seed in (51, 52)]
    kinds = {k.rsplit(".", 1)[-1] for k in files[0][1]}
    assert {"diff_b", "diff"} <= kinds and any(v.dim() == 1 for k, v in files[0][1].items() if k.endswith(".diff"))
    pipeline = host.pack("nodes.fusion.pipeline")
    concept = _concept(host, model, clip, files[0][0], ["zorbl creature"], 0.8, 0.6)
    biases = [k for k in concept.other_changes if k.endswith(".bias")]
    norms = [k for k, d in concept.other_changes.items() if k.endswith(".weight") and d.dim() == 1]
    assert biases and norms and all(k.startswith("diffusion_model.") for k in concept.other_changes)
    assert max(d.abs().max() for d in concept.other_changes.values()) > 0
    stock = cn.LoraLoader().load_lora(model, clip, files[0][0], 0.8, 0.6)[0]
    ours = pipeline._with_lora(model, clip, concept, 1.0, 1.0)[0]
    expected, got = _weights(stock, model.model), _weights(ours, model.model)
    assert sorted(got) == sorted(expected) and set(concept.other_changes) <= set(expected)
    for key, w in expected.items():
        assert torch.allclose(got[key], w, atol=1e-6, rtol=1e-5), key

    nodes = host.pack("nodes.fusion.nodes")
    concepts = nodes.LoRAAsConcept().append(files[0][0], "zorbl creature", 1.0, 1.0)[0]
    concepts = nodes.LoRAAsConcept().append(files[1][0], "quenta creature", 1.0, 1.0, concepts)[0]
    with torch.inference_mode():
        fused, _, report = nodes.GradientFusion().fuse(model, clip, "closed_form", 2, 64, 0, 1e-3, concepts=concepts,
                                                       lora_filename="fused_train_node")
    assert "biases and norms (weight average)" in report
    own = [_concept(host, model, clip, n, ["t"], 1.0, 1.0).other_changes for n, _ in files]
    fused_weights = _weights(fused, model.model)
    for key in sorted(set(own[0]) | set(own[1])):
        base = model.model.get_parameter(key).float()
        average = (own[0].get(key, 0) + own[1].get(key, 0)) / 2
        assert torch.allclose(fused_weights[key], base + average, atol=1e-6), key
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reloaded = cn.LoraLoader().load_lora(model, clip, "fused_train_node.safetensors", 1.0, 1.0)[0]
    assert "lora key not loaded" not in caplog.text
    again = _weights(reloaded, model.model)
    assert set(again) == set(fused_weights) and set(own[0]) <= set(again)
    for key, w in again.items():
        assert torch.allclose(w, fused_weights[key], atol=1e-5), key


def test_fused_file_writes_text_encoder_biases_and_norms_where_loraloader_finds_them(host, cn, testbed, caplog):
    """Text-encoder bias and norm changes (from a LoRA that has them) go into the fused file under ComfyUI's generic
    ``text_encoders.`` keys, and LoraLoader places each on its parameter."""
    model, clip, _ = testbed
    kohya = host.pack("mixofshow_core.formats.kohya")
    root = clip.cond_stage_model
    keys = ["clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.bias",
            "clip_l.transformer.text_model.encoder.layers.1.layer_norm1.weight",
            "diffusion_model.input_blocks.1.0.emb_layers.1.bias"]
    g = torch.Generator().manual_seed(5)
    owner = {k: model.model if k.startswith("diffusion_model.") else root for k in keys}
    other = {k: torch.randn(owner[k].get_parameter(k).shape, generator=g) * 0.01 for k in keys}  # (channels,)
    kohya.write_diff({}, {}, os.path.join(host.models("loras"), "other_only.safetensors"), "sd1", other)
    with caplog.at_level(logging.WARNING):
        loaded_model, loaded_clip = cn.LoraLoader().load_lora(model, clip, "other_only.safetensors", 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    got = {**_weights(loaded_model, model.model), **_weights(loaded_clip.patcher, root)}
    assert sorted(got) == sorted(keys)
    for key in keys:
        base = owner[key].get_parameter(key).float()
        assert torch.allclose(got[key], base + other[key], atol=1e-6), key
    with pytest.raises(ValueError, match="ending in .weight or .bias"):
        kohya.other_change_name("clip_l.transformer.text_model.embeddings.position_ids")


def test_colliding_triggers_get_a_clear_error(host, testbed):
    model, clip, _ = testbed
    standard_loras.write_lora(os.path.join(host.models("loras"), "twin_a.safetensors"), model, clip, seed=31)
    standard_loras.write_lora(os.path.join(host.models("loras"), "twin_b.safetensors"), model, clip, seed=32)
    pipeline, config = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.config")
    items = [pipeline.FusionItem(_concept(host, model, clip, n, ["Ohwx  Girl" if n == "twin_b.safetensors" else
                                                                 "ohwx girl"])) for n in ("twin_a.safetensors",
                                                                                          "twin_b.safetensors")]
    errors = host.pack("mixofshow_core.errors")
    with pytest.raises(errors.ConceptWordError, match="both use the trigger 'ohwx girl'.*only knows the trigger"):
        pipeline.fuse(model, clip, items, config.FusionConfig(resolution=64, steps=1))


def test_two_lora_characters_in_regions_through_the_executor(host, testbed):
    """LoRA as Concept x2 -> Gradient Fusion -> one region per trigger -> Regional KSampler, stock nodes around."""
    model, clip, _ = testbed
    loras = host.models("loras")
    standard_loras.write_lora(os.path.join(loras, "graph_a.safetensors"), model, clip, "kohya", seed=41, tags=TAGS)
    standard_loras.write_lora(os.path.join(loras, "graph_b.safetensors"), model, clip, "locon", seed=42)
    prompt = {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "LoRAAsConcept", "inputs": {"lora_name": "graph_a.safetensors", "trigger_words": "",
                                                        "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "LoRAAsConcept", "inputs": {"lora_name": "graph_b.safetensors",
                                                        "trigger_words": "kagamine rin", "strength_model": 0.9,
                                                        "strength_clip": 0.9, "concepts": ["2", 0]}},
        "4": {"class_type": "GradientFusion", "inputs": {"model": ["1", 0], "clip": ["1", 1], "mode": "closed_form",
                                                         "steps": 2, "resolution": 64, "seed": 0, "ridge": 0.001,
                                                         "concepts": ["3", 0]}},
        "5": {"class_type": "RegionPrompt", "inputs": {"clip": ["4", 1], "prompt": "ohwx girl, smiling", "negative": "",
                                                       "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0, "weight": 1.0}},
        "6": {"class_type": "RegionPrompt", "inputs": {"clip": ["4", 1], "prompt": "kagamine rin", "negative": "",
                                                       "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0, "weight": 1.0,
                                                       "regions": ["5", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "two girls side by side"}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}},
        "10": {"class_type": "RegionalKSampler", "inputs": {
            "model": ["4", 0], "positive": ["7", 0], "negative": ["8", 0], "regions": ["6", 0],
            "latent_image": ["9", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
        "12": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "std_regions"}},
    }
    result = comfy_host.run_prompt(prompt)
    assert result.success, result.error
    report = result.outputs["11"]["text"][0]
    assert "fused 2 concept(s): graph_a (ohwx girl), graph_b (kagamine rin)" in report
    assert "convolutions (weight average): 16 layers" in report  # LoCon's 3x3 convolutions of 8 resnets
    assert "kagamine rin" in result.outputs["12"]["text"][0]
