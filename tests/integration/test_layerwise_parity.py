"""Full-size SD1.5 shape: each of the 16 cross-attention layers receives exactly its own context.

Reference (independent of the pack's encoder): ComfyUI's own textual-inversion path. For layer l,
each concept word's row l is written as an embedding file and the prompt is encoded by stock
CLIPTextEncode with ``embedding:<file>`` in place of the word.
"""
import os

import pytest
import torch
from integration.host_support import check_recorded, record_contexts, reference_contexts

import test_assets
from support import SD15_TABLE

pytestmark = pytest.mark.fullsize
PROMPT = "a photo of {} {} in a forest, (smiling:1.2)"


@pytest.fixture(scope="module")
def potter(host, sd15):
    path = os.path.join(host.models("edloras"), "potter_official.pth")
    test_assets.official_edlora_checkpoint(path)
    model, clip, vae, _ = sd15
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    return loader.load(model, clip, "potter_official.pth", 1.0, 1.0)


def test_block_ids_map_to_the_official_layer_order(host, sd15):
    sites = host.pack("nodes.model_layout").cross_attention_sites(sd15[0])
    assert [(s.diffusers_prefix, s.block) for s in sites] == \
        [(f"{d}.transformer_blocks.0", b) for d, b in SD15_TABLE]


def test_every_layer_gets_the_prompt_encoded_with_its_own_row(host, cn, potter):
    model, clip = potter
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    positive = encode.encode(clip, PROMPT.format("<potter1>", "<potter2>"))[0]
    negative = encode.encode(clip, "lowres, bad anatomy")[0]
    assert host.pack("nodes.concepts.layerwise").concept_registry(clip)["<potter1>"]["embedding"].shape == (16, 768)
    references = reference_contexts(host, cn, clip, PROMPT, ("<potter1>", "<potter2>"), 16)
    plain_negative = cn.CLIPTextEncode().encode(clip, "lowres, bad anatomy")[0][0][0][0]

    recording, recorder = record_contexts(model)
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    cn.common_ksampler(recording, 0, 1, 7.0, "euler", "normal", positive, negative, latent)

    table = {(b[0], b[1], 0): i for i, (_, b) in enumerate(SD15_TABLE)}  # the official table, not ours
    layers = check_recorded(recorder, table, {0: lambda layer: [references[layer]], 1: lambda layer: [plain_negative]},
                            atol=2e-4)
    assert layers == set(range(16))
    assert not torch.allclose(references[0], references[15], atol=1e-3)  # rows differ, so the check has teeth
