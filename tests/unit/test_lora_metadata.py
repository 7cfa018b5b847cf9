"""Trigger phrases and base family from a standard LoRA's metadata; concepts made of triggers."""
import json

import pytest
import torch
from safetensors.torch import save_file

from mixofshow_core.concept import Concept
from mixofshow_core.errors import ConceptFileError, ConceptWordError
from mixofshow_core.formats import WRITERS, kohya
from mixofshow_core.formats.lora_metadata import base_family, describe_lora, read_metadata, split_phrases
from mixofshow_core.lora import DenseDelta, LoRAPair

KOHYA = {"ss_base_model_version": "sdxl_base_v1-0",
         "ss_tag_frequency": json.dumps({"10_ohwx girl": {"ohwx girl": 20, "smile": 7},
                                         "5_ohwx girl": {"ohwx girl": 5, "1girl": 25}})}


def test_kohya_dataset_folder_names_the_trigger():
    info = describe_lora(KOHYA)
    assert info.triggers == ["ohwx girl"] and info.source == "dataset folder" and info.base_family == "sdxl"
    assert info.tags == [("1girl", 25), ("ohwx girl", 25), ("smile", 7)]  # summed over folders, ties by name
    assert "trigger 'ohwx girl' (from dataset folder); caption tags: 1girl (25), ohwx girl (25)" in info.summary()


def test_modelspec_trigger_wins_and_tags_are_the_last_resort():
    assert describe_lora({**KOHYA, "modelspec.trigger_phrase": "miku, twintails"}).triggers == ["miku", "twintails"]
    plain = {"ss_tag_frequency": json.dumps({"img": {"hatsune  miku": 9, "smile": 3}})}
    assert describe_lora(plain).triggers == ["hatsune miku"] and describe_lora(plain).source == "most frequent tag"
    nothing = describe_lora({})
    assert nothing.triggers == [] and "no trigger" in nothing.summary() and "no caption tags" in nothing.summary()
    assert describe_lora({"ss_tag_frequency": "not json"}).tags == []


def test_family_from_either_metadata_convention():
    assert base_family({"ss_base_model_version": "sd_v1"}) == "sd1"
    assert base_family({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}) == "sdxl"
    assert base_family({"modelspec.architecture": "flux-1-dev/lora"}) == "flux"
    assert base_family({}) == ""


def test_split_phrases():
    assert split_phrases(" hatsune  miku ,, twintails, hatsune miku") == ["hatsune miku", "twintails"]


def test_only_safetensors_are_read(tmp_path):
    with pytest.raises(ConceptFileError, match=r"from .safetensors files only \(found '.pt'"):
        read_metadata(tmp_path / "a.pt")
    bad = tmp_path / "b.safetensors"
    bad.write_bytes(b"\x89PNG\r\n" + bytes(100))
    with pytest.raises(ConceptFileError, match="not a readable safetensors file .*a PNG image"):
        read_metadata(bad)
    good = tmp_path / "c.safetensors"
    save_file({"x": torch.zeros(1)}, str(good), metadata={"ss_network_dim": "4"})
    assert read_metadata(good) == {"ss_network_dim": "4"}


def _trigger_concept(**kw):
    change = DenseDelta(torch.ones(4, 3, 3, 3))
    return Concept(words=[], embeddings={}, triggers=["hatsune  miku"], text_encoders=[("clip_l", 8)],
                   unet_lora={"input_blocks.1.0.in_layers.2": change},
                   text_lora={"text_model.encoder.layers.0.mlp.fc1": LoRAPair(torch.ones(2, 8), torch.ones(5, 2))},
                   **kw)


def test_a_concept_of_triggers(tmp_path):
    c = _trigger_concept()
    assert c.triggers == ["hatsune miku"] and c.prompt_text == "hatsune miku" and c.name == "hatsune miku"
    assert c.layer_count == 0 and c.text_width == 8 and c.rank == 2 and c.word_groups == []
    state = kohya.state_dict(c)  # LDM names keep their names; a full change is a .diff
    assert torch.equal(state["lora_unet_input_blocks_1_0_in_layers_2.diff"], torch.ones(4, 3, 3, 3))
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in state
    with pytest.raises(ConceptFileError, match="stays in its own LoRA file"):
        WRITERS["edlora"](c, tmp_path / "x.safetensors")
    with pytest.raises(ConceptWordError, match="or, for a standard LoRA, a trigger phrase"):
        Concept(words=[], embeddings={}, text_encoders=[("clip_l", 8)])
    with pytest.raises(ConceptFileError, match="give its text_encoders"):
        Concept(words=[], embeddings={}, triggers=["x"])
    assert DenseDelta(torch.ones(4, 3, 1, 1)).linear and not DenseDelta(torch.ones(4, 3, 3, 3)).linear
    assert DenseDelta(torch.ones(4, 3, 3, 3)).delta(0.5).shape == (4, 27)
