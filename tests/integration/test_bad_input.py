"""Bad concept input in the real host: each case fails with a message that says what to do."""
import os

import pytest
import torch
from integration.host_support import random_concept, write_concept

import test_assets


def _loader(host):
    return host.pack("nodes.concepts.nodes").EDLoRALoader()


def _errors(host):
    return host.pack("mixofshow_core.errors")


def _concept(host, words, layers, width, seed=0):
    init = host.pack("mixofshow_core.concept_init")
    g = torch.Generator().manual_seed(seed)
    return init.init_concept(list(words), [torch.randn(width, generator=g) for _ in words], layers, {}, {})


@pytest.mark.parametrize("layers,width,family", [(16, 1024, "SD2.x (text encoders clip_h 1024"),
                                                 (70, 2048, "SDXL (text encoders clip_l 768 + clip_g 1280"),
                                                 (7, 64, "unknown-64 (text encoders clip_l 64")])
def test_wrong_base_family_is_refused(host, testbed, layers, width, family):
    model, clip, _ = testbed
    name = write_concept(host, _concept(host, ["<w1>"], layers, width), f"fam_{layers}_{width}.safetensors")
    with pytest.raises(_errors(host).BaseModelMismatchError) as err:
        _loader(host).load(model, clip, name, 1.0, 1.0)
    message = str(err.value)
    assert f"made for {family}, {layers} layer rows), but this model (SD1.x) has text encoders clip_l 64 and 16 " \
           "layer rows" in message


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


def _loader_prompt(concept_name):
    """Checkpoint -> EDLoRALoader -> encode -> KSampler -> SaveLatent, as a user would wire it."""
    return {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "EDLoRALoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                       "concept_name": concept_name,
                                                       "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "EDLoRATextEncode", "inputs": {"clip": ["2", 1], "text": "x"}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["6", 0], "seed": 0, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "x"}},
    }


def _executor_error(prompt) -> tuple[str, str]:
    """(exception type, message) the executor reports to the user for a failed prompt."""
    import comfy_host

    result = comfy_host.run_prompt(prompt)
    assert not result.success
    errors = [data for event, data in result.messages if event == "execution_error"]
    assert errors, result.error
    return errors[-1]["exception_type"], errors[-1]["exception_message"]


def test_errors_reach_the_user_through_the_executor(host, tmp_path):
    import comfy_host

    path = os.path.join(host.models("edloras"), "cut.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # header cut short
    prompt = _loader_prompt("cut.safetensors")
    kind, message = _executor_error(prompt)
    assert "ConceptFileError" in kind and "cut.safetensors is truncated" in message
    prompt["2"]["inputs"]["concept_name"] = "does_not_exist.safetensors"
    assert "validation failed" in comfy_host.run_prompt(prompt).error


def _write_unloadable(path, kind):
    import pickle

    ckpt = {"params": {"new_concept_embedding": {"<a1>": torch.randn(16, 64)}}}
    if kind == "random_bytes.pth":
        data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
        open(path, "wb").write(data.numpy().tobytes())
    elif kind == "notes_text.pth":
        open(path, "w").write("unet_alpha: 1.0\ntext_encoder_alpha: 1.0\n" * 20)
    elif kind == "photo_png.pth":
        open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind in ("zip_cut.pth", "legacy_cut.pth"):
        torch.save(ckpt, path, _use_new_zipfile_serialization=kind == "zip_cut.pth")
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "code_pickle.pth":
        class Payload:
            def __reduce__(self):
                return (print, ("this must never run",))

        with open(path, "wb") as f:
            pickle.dump({"params": {"new_concept_embedding": Payload()}}, f)
    elif kind == "noise.safetensors":
        data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
        open(path, "wb").write(data.numpy().tobytes())
    elif kind == "half.safetensors":
        from safetensors.torch import save_file

        save_file({"embedding.0": torch.randn(16, 64)}, path, {"mixofshow.format": "edlora"})
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])


@pytest.mark.parametrize("name,found,todo", [
    ("random_bytes.pth", "is not a checkpoint", "Choose the concept file"),
    ("notes_text.pth", "is not a checkpoint: it holds text", "Choose the concept file"),
    ("photo_png.pth", "is not a checkpoint: it holds a PNG image", "Choose the concept file"),
    ("zip_cut.pth", "is truncated or damaged", "download the file again"),
    ("legacy_cut.pth", "is truncated", "download the file again"),
    ("code_pickle.pth", "asks to run code (builtins.print)", "Re-save the concept's tensors as safetensors"),
    ("noise.safetensors", "is not a safetensors file", "Choose the concept file"),
    ("half.safetensors", "is truncated", "download the file again"),
])
def test_unloadable_files_get_short_messages_in_the_executor(host, name, found, todo, capsys):
    _write_unloadable(os.path.join(host.models("edloras"), name), name)
    kind, message = _executor_error(_loader_prompt(name))
    assert "ConceptFileError" in kind
    assert message.startswith((name, f"Refused to load {name}")) and found in message and todo in message, message
    assert len(message) <= 300, (len(message), message)
    assert "weights_only" not in message and "Error" not in message, message
    assert "this must never run" not in capsys.readouterr().out


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
    with pytest.raises(_errors(host).BaseModelMismatchError,
                       match=r"made for SD1.x \(text encoders clip_l 768, 16 layer rows\), but this model \(SD1.x\)"):
        _loader(host).load(model, clip, "potter_tiny_mismatch.pth", 1.0, 1.0)


def _tiny_sd2_model():
    """A width-reduced SD2.x MODEL (the host's SD20 config, text width 64 like the SD1 testbed's CLIP)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    class TinySD2(comfy.supported_models.SD20):
        unet_extra_config = {"num_heads": -1, "num_head_channels": 16}

    config = TinySD2(dict(
        use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
        in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 2, 2],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        transformer_depth_middle=1, use_linear_in_transformer=True, context_dim=64, use_temporal_resblock=False,
        use_temporal_attention=False))
    config.set_inference_dtype(torch.float32, None)
    return comfy.model_patcher.ModelPatcher(config.get_model({}), comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def test_a_model_of_an_unsupported_family_is_refused_naming_it(host, testbed):
    """An SD2.x MODEL (even with a CLIP of matching width) gets one message naming SD2.x and what is supported,
    not a shape error deep inside."""
    model, clip, _ = testbed
    concept_file = write_concept(host, random_concept(host, model, clip, ("<fam1>",), seed=3), "fam_sd1.safetensors")
    with torch.inference_mode():
        sd2 = _tiny_sd2_model()
    assert host.pack("nodes.model_layout").model_family(sd2) == "SD2.x"
    expected = r"This MODEL is SD2.x: the pack supports SD1.x .* and SDXL .* models today; SD2.x is not supported yet"
    with pytest.raises(_errors(host).BaseModelMismatchError, match=expected):
        _loader(host).load(sd2, clip, concept_file, 1.0, 1.0)


def test_training_and_fusion_refuse_a_mismatched_clip_or_an_unsupported_family(host, testbed, testbed_sdxl):
    """Both take SD1.x and SDXL; an SD1.x MODEL with an SDXL CLIP, or an SD2.x MODEL, gets a message naming what
    is wrong (and the stage), not a shape error deep inside."""
    _, clip, vae = testbed_sdxl
    sd1_model, sd1_clip, _ = testbed
    concept_file = write_concept(host, random_concept(host, sd1_model, sd1_clip, ("<fam2>",), seed=3),
                                 "fam2_sd1.safetensors")
    errors = _errors(host)
    fusion, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    item = fusion.FusionItem(formats.load_concept(f"{host.models('edloras')}/{concept_file}"))
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=1)
    train_host = host.pack("nodes.training.train_host").ComfyTrainHost
    with pytest.raises(errors.BaseModelMismatchError, match="expects text width 64 but CLIP gives 192"):
        fusion.fuse(sd1_model, clip, [item], config)
    with pytest.raises(errors.BaseModelMismatchError, match="expects text width 64 but CLIP gives 192"):
        train_host(sd1_model, clip, vae, ["<w1>"], ["a <w1>"], "fp32", False)
    with torch.inference_mode():
        sd2 = _tiny_sd2_model()
    with pytest.raises(errors.BaseModelMismatchError,
                       match="This MODEL is SD2.x: ED-LoRA training supports SD1.x .*; SD2.x is not supported yet"):
        train_host(sd2, sd1_clip, vae, ["<w1>"], ["a <w1>"], "fp32", False)
    with pytest.raises(errors.BaseModelMismatchError,
                       match="This MODEL is SD2.x: gradient fusion supports SD1.x .*; SD2.x is not supported yet"):
        fusion.fuse(sd2, sd1_clip, [item], config)
