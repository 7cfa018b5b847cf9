"""Concept files: native round-trip, original Mix-of-Show checkpoints, kohya export, damaged and unsafe files."""
import json
import os
import pickle
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import test_assets
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


def test_research_branch_checkpoint_with_conv_and_feed_forward_loras_imports(tmp_path):
    path = test_assets.official_edlora_checkpoint(str(tmp_path / "research.pth"), research_keys=True,
                                                  research_modules=True)
    raw = torch.load(path, weights_only=True)["params"]
    loaded = load_concept(path)
    assert len(loaded.unet_lora) == 16 * 12 and len(loaded.text_lora) == 12 * 6
    for part, loras in (("unet", loaded.unet_lora), ("text_encoder", loaded.text_lora)):
        for module, pair in loras.items():
            down, up = raw[part][module + "_lora.down.weight"], raw[part][module + "_lora.up.weight"]
            assert (pair.rank, pair.in_features, pair.out_features) == (down.shape[0], down.shape[1], up.shape[0])
    block = "up_blocks.3.attentions.2"
    for part, module in (("unet", f"{block}.proj_in"), ("unet", f"{block}.proj_out"),
                         ("unet", f"{block}.transformer_blocks.0.ff.net.0.proj"),
                         ("unet", f"{block}.transformer_blocks.0.ff.net.2"),
                         ("unet", f"{block}.transformer_blocks.0.attn2.to_k"),
                         ("text_encoder", "text_model.encoder.layers.11.mlp.fc1")):
        down, up = raw[part][module + "_lora.down.weight"], raw[part][module + "_lora.up.weight"]
        official = up.squeeze() @ down.squeeze()  # research branch: squeeze 1x1 convolutions, then up @ down
        pair = (loaded.unet_lora if part == "unet" else loaded.text_lora)[module]
        assert torch.equal(pair.delta(1.0), official), module
    assert raw["unet"][f"{block}.proj_in_lora.down.weight"].shape == (4, 320, 1, 1)  # the file's conv factors
    ff = loaded.unet_lora[f"{block}.transformer_blocks.0.ff.net.0.proj"]
    assert (ff.in_features, ff.out_features) == (320, 2560)


def test_unsupported_lora_shapes_and_keys_are_named_with_their_shape(tmp_path):
    path = test_assets.official_edlora_checkpoint(str(tmp_path / "r.pth"), research_keys=True, research_modules=True)
    ckpt = torch.load(path, weights_only=True)
    key = "down_blocks.0.attentions.0.proj_in_lora.down.weight"
    ckpt["params"]["unet"][key] = torch.zeros(4, 320, 3, 3)  # a 3x3 convolution: not what ED-LoRA adapts
    torch.save(ckpt, tmp_path / "conv3.pth")
    with pytest.raises(ConceptFileError) as err:
        load_concept(tmp_path / "conv3.pth")
    message = str(err.value)
    assert key in message and "[4, 320, 3, 3]" in message and "1x1" in message, message
    ckpt = torch.load(path, weights_only=True)
    ckpt["params"]["unet"]["down_blocks.0.attentions.0.proj_in_lora.alpha"] = torch.tensor(1.0)
    torch.save(ckpt, tmp_path / "alpha.pth")
    with pytest.raises(ConceptFileError) as err:
        load_concept(tmp_path / "alpha.pth")
    message = str(err.value)
    assert "down_blocks.0.attentions.0.proj_in_lora.alpha []" in message and "_lora.down.weight" in message, message


def _code_pickle(path, marker, container="pickle"):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    if container == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"params": Payload()}, f)
    else:  # what torch.save writes: its zip format, or the legacy one
        torch.save({"params": {"new_concept_embedding": Payload()}}, path,
                   _use_new_zipfile_serialization=container == "zip")


@pytest.mark.parametrize("container", ["pickle", "zip", "legacy"])
def test_pickle_carrying_code_is_refused_and_not_run(tmp_path, container):
    marker = tmp_path / "pwned"
    _code_pickle(tmp_path / "evil.pth", marker, container)
    with pytest.raises(ConceptFileError, match="never executes code") as err:
        load_concept(tmp_path / "evil.pth")
    assert not marker.exists()
    message = str(err.value)
    assert len(message) <= 300 and re.search(r"\((builtins|io)\.open\)", message) and "weights_only" not in message
    assert "safetensors" in message  # what to do


def _bad_pth(tmp_path, kind: str):
    """A .pth that cannot be loaded, of the given kind; returns its path."""
    path = tmp_path / f"{kind}.pth"
    ckpt = {"params": {"new_concept_embedding": {"<a1>": torch.randn(16, 768)}}}
    if kind == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "text_file":
        path.write_text("lora_path: concepts/potter.pth\nunet_alpha: 1.0\n" * 20)
    elif kind == "png_image":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind == "jpeg_image":
        path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    elif kind == "zip_cut_in_half":
        torch.save(ckpt, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zip_header_only":
        path.write_bytes(b"PK\x03\x04garbage")
    elif kind in ("legacy_cut_in_half", "legacy_cut_in_pickle"):
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "legacy_cut_in_half" else data[:200])
    elif kind == "plain_pickle_cut":
        path.write_bytes(pickle.dumps({"params": {"x": list(range(1000))}}, protocol=4)[:300])
    return path


@pytest.mark.parametrize("kind,expected", [
    ("random_bytes", "not a checkpoint"), ("text_file", "not a checkpoint"), ("png_image", "not a checkpoint"),
    ("jpeg_image", "not a checkpoint"), ("zip_cut_in_half", "truncated"), ("zip_header_only", "truncated"),
    ("legacy_cut_in_half", "truncated"), ("legacy_cut_in_pickle", "truncated"), ("plain_pickle_cut", "truncated"),
])
def test_unloadable_pth_files_are_named_for_what_they_are(tmp_path, kind, expected):
    path = _bad_pth(tmp_path, kind)
    with pytest.raises(ConceptFileError) as err:
        load_concept(path)
    message = str(err.value)
    assert expected in message and path.name in message, message
    assert len(message) <= 300, (len(message), message)
    assert "run code" not in message and "weights_only" not in message
    assert not re.search(r"\w+Error\b|Errno", message), message  # what was found, not a Python exception
    assert ("again" in message) if expected == "truncated" else ("concept file" in message)


def _bad_safetensors(tmp_path, concept, kind: str):
    path = write(concept, tmp_path / f"{kind}.safetensors")
    data = path.read_bytes()
    if kind == "cut_in_half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "header_cut":
        path.write_bytes(data[:40])
    elif kind == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "too_short":
        path.write_bytes(b"\x10\x00")
    elif kind == "text_file":
        path.write_text("not a model, just some notes about a concept\n" * 10)
    return path


@pytest.mark.parametrize("kind,expected", [
    ("cut_in_half", "truncated"), ("header_cut", "truncated"), ("random_bytes", "not a safetensors file"),
    ("too_short", "not a safetensors file"), ("text_file", "not a safetensors file"),
])
def test_unloadable_safetensors_get_short_messages(tmp_path, concept, kind, expected):
    path = _bad_safetensors(tmp_path, concept, kind)
    with pytest.raises(ConceptFileError) as err:
        load_concept(path)
    message = str(err.value)
    assert expected in message and path.name in message, message
    assert len(message) <= 300, (len(message), message)
    assert not re.search(r"\w+Error\b|Errno", message), message
    assert ("again" in message) if expected == "truncated" else ("concept file" in message)


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


UNET_MODULES_SMALL = {"down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k": (10, 8)}


def _two_encoder_concept():
    """An SDXL-shaped concept at small widths: rows [3, 4 + 6] (CLIP-L 4, CLIP-G 6), LoRA on both encoders."""
    from mixofshow_core.concept_init import init_concept

    g = torch.Generator().manual_seed(5)
    text = {"text_model.encoder.layers.0.self_attn.q_proj": (4, 4),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj": (6, 6)}
    concept = init_concept(["<a1>", "<a2>"], [torch.randn(10, generator=g) for _ in range(2)], 3, text,
                           UNET_MODULES_SMALL, up_std=0.1, text_encoders=[("clip_l", 4), ("clip_g", 6)],
                           base_family="sdxl")
    for w in concept.words:
        concept.embeddings[w] = concept.embeddings[w] + torch.randn(3, 10, generator=g)
    return concept


def test_two_encoder_concepts_round_trip_as_version_2_with_each_encoders_rows(tmp_path):
    concept = _two_encoder_concept()
    path = write(concept, tmp_path / "xl.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
        assert torch.equal(f.get_tensor("embedding.clip_g.1"), concept.embeddings["<a2>"][:, 4:])
    assert meta["mixofshow.format_version"] == "2" and meta["mixofshow.layer_granularity"] == "attention_block"
    assert json.loads(meta["mixofshow.text_encoders"]) == [["clip_l", 4], ["clip_g", 6]]
    assert "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight" in keys
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight" in keys
    back = load_concept(path)
    _same(concept, back)
    assert back.text_encoders == [("clip_l", 4), ("clip_g", 6)]
    assert back.encoder_rows("<a1>")["clip_g"].shape == (3, 6)
    kohya_keys = set(kohya.state_dict(back))
    assert {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha",
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha",
            "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.alpha"} <= kohya_keys


def test_version_2_files_with_mismatched_encoders_or_granularity_are_refused(tmp_path):
    path = write(_two_encoder_concept(), tmp_path / "xl.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(tmp_path / "g.safetensors"), {**meta, "mixofshow.layer_granularity": "transformer_block"})
    with pytest.raises(ConceptFileError, match="layer granularity 'transformer_block'; this pack reads"):
        load_concept(tmp_path / "g.safetensors")
    save_file(tensors, str(tmp_path / "w.safetensors"), {**meta, "mixofshow.text_encoders": '[["clip_l", 6], '
                                                                                             '["clip_g", 4]]'})
    with pytest.raises(ConceptFileError, match=r"do not match mixofshow.text_encoders: \['embedding.clip_l.0 \[3, 4\]"):
        load_concept(tmp_path / "w.safetensors")
    del tensors["embedding.clip_g.1"]
    save_file(tensors, str(tmp_path / "m.safetensors"), meta)
    with pytest.raises(ConceptFileError, match=r"word '<a2>' has no tensor \['embedding.clip_g.1'\]"):
        load_concept(tmp_path / "m.safetensors")
