"""Concept files: native round-trip, original Mix-of-Show checkpoints, kohya export, damaged and unsafe files."""
import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mixofshow_core.errors import ConceptFileError
from mixofshow_core.files import atomic_write
from mixofshow_core.formats import kohya, load_concept
from mixofshow_core.formats.edlora_safetensors import write
from support import make_concept


def _same(a, b):
    assert a.words == b.words and a.alpha == b.alpha and a.name == b.name and a.base_family == b.base_family
    for w in a.words:
        assert torch.equal(a.embeddings[w], b.embeddings[w])
    for mine, theirs in ((a.text_lora, b.text_lora), (a.unet_lora, b.unet_lora)):
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert torch.equal(mine[k].down, theirs[k].down) and torch.equal(mine[k].up, theirs[k].up)


def test_native_round_trip_is_exact_and_metadata_is_versioned(tmp_path, concept):
    concept.alpha = 0.7
    path = write(concept, tmp_path / "c.safetensors")
    _same(concept, load_concept(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["mixofshow.format"] == "edlora" and meta["mixofshow.format_version"] == "1"
    assert json.loads(meta["mixofshow.words"]) == ["<cat1>", "<cat2>"]
    assert (meta["mixofshow.layer_count"], meta["mixofshow.text_width"], meta["mixofshow.rank"]) == ("4", "8", "4")
    assert float(meta["mixofshow.alpha"]) == 0.7 and meta["mixofshow.base_family"] == concept.base_family
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def _official(concept, research=False):
    down, up = ("_lora.down.weight", "_lora.up.weight") if research else (".lora_down.weight", ".lora_up.weight")
    part = lambda loras: {k: v for m, p in loras.items() for k, v in ((m + down, p.down), (m + up, p.up))}  # noqa: E731
    return {"params": {"new_concept_embedding": dict(concept.embeddings),
                       "text_encoder": part(concept.text_lora), "unet": part(concept.unet_lora)}}


@pytest.mark.parametrize("research", [False, True])
def test_original_mixofshow_checkpoints_import(tmp_path, concept, research):
    path = tmp_path / "edlora.pth"
    torch.save(_official(concept, research), path)
    loaded = load_concept(path)
    concept.name = "edlora"
    _same(concept, loaded)


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": Payload()}, f)
    with pytest.raises(ConceptFileError, match="never executes code"):
        load_concept(path)
    assert not marker.exists()


def test_truncated_and_corrupt_files_get_clear_errors(tmp_path, concept):
    path = write(concept, tmp_path / "c.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(4096))
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04garbage")
    for name in ("cut.safetensors", "noise.safetensors", "cut.pth"):
        with pytest.raises(ConceptFileError, match="corrupt or truncated"):
            load_concept(tmp_path / name)


def test_unknown_tensors_and_unknown_checkpoint_keys_are_listed(tmp_path, concept):
    path = write(concept, tmp_path / "c.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file({**tensors, "unet.x.conv.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"), meta)
    with pytest.raises(ConceptFileError, match="unet.x.conv.weight"):
        load_concept(tmp_path / "extra.safetensors")
    ckpt = _official(concept)
    ckpt["params"]["unet"]["down_blocks.0.resnets.0.conv1.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "odd.pth")
    with pytest.raises(ConceptFileError, match="resnets.0.conv1"):
        load_concept(tmp_path / "odd.pth")


def test_newer_format_version_and_foreign_files_are_refused(tmp_path, concept):
    path = write(concept, tmp_path / "c.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(tmp_path / "v9.safetensors"), {**meta, "mixofshow.format_version": "9"})
    with pytest.raises(ConceptFileError, match="Update the Mix-of-Show pack"):
        load_concept(tmp_path / "v9.safetensors")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, str(tmp_path / "plain_lora.safetensors"))
    with pytest.raises(ConceptFileError, match="not an ED-LoRA concept file"):
        load_concept(tmp_path / "plain_lora.safetensors")
    with pytest.raises(ConceptFileError, match="not found"):
        load_concept(tmp_path / "missing.safetensors")


def test_kohya_export_reproduces_the_official_scale(tmp_path):
    concept = make_concept(alpha=0.6)
    path = kohya.write(concept, tmp_path / "l.safetensors")
    with safe_open(str(path), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    rank = sd[f"{name}.lora_down.weight"].shape[0]
    loader_delta = sd[f"{name}.alpha"] / rank * sd[f"{name}.lora_up.weight"] @ sd[f"{name}.lora_down.weight"]
    assert torch.allclose(loader_delta, concept.unet_lora[module].delta(0.6))
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj.alpha" in sd
    assert len(sd) == 3 * (len(concept.text_lora) + len(concept.unet_lora))


def test_failed_write_leaves_no_file(tmp_path):
    def boom(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.safetensors", boom)
    assert os.listdir(tmp_path) == []
