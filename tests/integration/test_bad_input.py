"""Bad concept input in the real host: each case fails with a message that says what to do."""
import os

import pytest
import torch
from integration.host_support import random_concept, write_concept

import test_assets


def _loader(host):
    return host.pack("nodes.concept_nodes").EDLoRALoader()


def _errors(host):
    return host.pack("mixofshow_core.errors")


def _concept(host, words, layers, width, seed=0):
    init = host.pack("mixofshow_core.concept_init")
    g = torch.Generator().manual_seed(seed)
    return init.init_concept(list(words), [torch.randn(width, generator=g) for _ in words], layers, {}, {})


@pytest.mark.parametrize("layers,width,family", [(16, 1024, "sd2"), (70, 2048, "sdxl"), (7, 64, "unknown-64")])
def test_wrong_base_family_is_refused(host, testbed, layers, width, family):
    model, clip, _ = testbed
    name = write_concept(host, _concept(host, ["<w1>"], layers, width), f"fam_{layers}_{width}.safetensors")
    with pytest.raises(_errors(host).BaseModelMismatchError) as err:
        _loader(host).load(model, clip, name, 1.0, 1.0)
    message = str(err.value)
    assert f"text width {width}, {layers} cross-attention layers" in message and family in message
    assert "text width 64 and 16 layers" in message


def test_two_concepts_sharing_a_word_are_refused(host, testbed):
    model, clip, _ = testbed
    write_concept(host, random_concept(host, model, clip, ("<hero1>", "<hero2>"), seed=4), "hero_a.safetensors")
    write_concept(host, random_concept(host, model, clip, ("<hero1>", "<x9>"), seed=5), "hero_b.safetensors")
    m, c = _loader(host).load(model, clip, "hero_a.safetensors", 1.0, 1.0)
    with pytest.raises(_errors(host).ConceptWordError, match=r"\['<hero1>'\] already used by loaded concept"):
        _loader(host).load(m, c, "hero_b.safetensors", 1.0, 1.0)


def test_lora_on_modules_the_model_lacks_is_refused_listing_them(host, testbed):
    model, clip, _ = testbed
    concept = random_concept(host, model, clip, ("<odd1>",), seed=6)
    lora = host.pack("mixofshow_core.lora")
    concept.unet_lora["down_blocks.0.resnets.0.conv1"] = lora.LoRAPair(torch.zeros(4, 32), torch.zeros(32, 4))
    concept.text_lora["text_model.encoder.layers.7.self_attn.q_proj"] = lora.LoRAPair(torch.zeros(4, 64),
                                                                                    torch.zeros(64, 4))
    name = write_concept(host, concept, "odd.safetensors")
    with pytest.raises(_errors(host).KeyMappingError) as err:
        _loader(host).load(model, clip, name, 1.0, 1.0)
    assert "down_blocks.0.resnets.0.conv1" in str(err.value)


def test_errors_reach_the_user_through_the_executor(host, tmp_path):
    import comfy_host

    path = os.path.join(host.models("edloras"), "cut.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # header cut short
    prompt = {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "EDLoRALoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                       "concept_name": "cut.safetensors",
                                                       "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "EDLoRATextEncode", "inputs": {"clip": ["2", 1], "text": "x"}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["6", 0], "seed": 0, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "x"}},
    }
    result = comfy_host.run_prompt(prompt)
    assert not result.success
    assert "ConceptFileError" in result.error and "corrupt or truncated" in result.error
    prompt["2"]["inputs"]["concept_name"] = "does_not_exist.safetensors"
    assert "validation failed" in comfy_host.run_prompt(prompt).error


def test_code_carrying_pth_is_refused_in_the_loader(host, testbed, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(os.path.join(host.models("edloras"), "evil.pth"), "wb") as f:
        pickle.dump({"params": {"new_concept_embedding": Payload()}}, f)
    model, clip, _ = testbed
    with pytest.raises(_errors(host).ConceptFileError, match="Refused to load evil.pth"):
        _loader(host).load(model, clip, "evil.pth", 1.0, 1.0)
    assert not marker.exists()


def test_official_checkpoint_on_the_tiny_model_reports_the_family(host, testbed):
    path = os.path.join(host.models("edloras"), "potter_tiny_mismatch.pth")
    test_assets.official_edlora_checkpoint(path)
    model, clip, _ = testbed
    with pytest.raises(_errors(host).BaseModelMismatchError, match="base family sd1 .text width 768"):
        _loader(host).load(model, clip, "potter_tiny_mismatch.pth", 1.0, 1.0)
