"""ED-LoRA training on the SDXL architecture (tiny SDXL testbed with fan-in-scaled random weights): both text
encoders, 11 rows, pooled text from the mean rows, as inference encodes them."""
from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.usefixtures("trains")

WORDS = "<kit1> <kit2>"
INIT = "<rand-0.013> cat"


@pytest.fixture(scope="module")
def bed_xl(host):
    with torch.inference_mode():
        return host.pack("testbed.model_sdxl").build_testbed(3, std=None)


def _dataset(host):
    images, masks = torch.zeros(4, 64, 64, 3), torch.zeros(4, 64, 64)
    for i in range(4):
        top, left = 8 + 6 * i, 40 - 8 * i
        images[i, top: top + 20, left: left + 20, 2] = 1.0
        masks[i, top: top + 20, left: left + 20] = 1.0
    captions = "<TOK>, square\n<TOK>\n<TOK>, small\n<TOK>, on black"
    return host.pack("nodes.training.nodes").EDLoRADataset().build(images, captions, masks)[0]


def _config(host, **options):
    base = dict(words=WORDS.split(), init=INIT.split(), batch_size=2, resolution=64, crop="center",
                templates="none", attn_reg_weight=0.0)
    return host.pack("mixofshow_core.training.config").TrainConfig(**(base | options))


def test_sdxl_training_lowers_the_loss_and_writes_an_sdxl_concept(host, bed_xl):
    run = host.pack("nodes.training.run")
    data = _dataset(host)
    # (560 UNet LoRA modules: the SD1 test's rate of 5e-2 overshoots here and the loss does not fall)
    options = dict(lr_unet=1e-2, lr_text=2e-3, lr_embedding=1e-2, emb_norm_threshold=100.0, mask_loss=False)
    config = _config(host, **options)
    before = run.evaluate(*bed_xl, data, config, None, range(100, 116))
    node = host.pack("nodes.training.nodes").EDLoRATrain()
    model, clip, vae = bed_xl
    node.train(model, clip, vae, data, "xl_kit", WORDS, INIT, 40, 1, 2, 64, 0, False, attn_reg_weight=0.0,
               crop="center", templates="none", **options)
    concept = host.pack("mixofshow_core.formats").load_concept(os.path.join(host.models("edloras"),
                                                                           "xl_kit.safetensors"))
    after = run.evaluate(*bed_xl, data, config, concept, range(100, 116))
    assert after < before - 5e-4, (before, after)  # measured: 0.99980 -> 0.99871 on these held-out batches
    assert concept.base_family == "sdxl" and concept.text_encoders == [("clip_l", 64), ("clip_g", 128)]
    assert concept.layer_count == 11 and len(concept.unet_lora) == 560
    assert sum(m.startswith("text_encoder_2.") for m in concept.text_lora) == 12
    moved = [p.up for m, p in concept.text_lora.items() if m.startswith("text_encoder_2.")]
    assert max(float(u.abs().max()) for u in moved) > 1e-4  # CLIP-G's LoRA trained too
    start = run.fresh_trainable(model, clip, config)[0].embeddings.detach()  # (W, 11, 192)
    change = (concept.embedding_stack() - start).abs()
    assert float(change[..., :64].max()) > 1e-3 and float(change[..., 64:].max()) > 1e-3  # both encoders' parts


def test_sdxl_training_contexts_and_pooled_text_equal_inference(host, bed_xl):
    """What training optimises is what the loader + ED-LoRA Text Encode give the UNet: every row of the packed
    contexts and the pooled text (word rows exact; text LoRA to the fp16 rounding of the merged weights)."""
    model, clip, vae = bed_xl
    glue, run = host.pack("nodes.training.train_host"), host.pack("nodes.training.run")
    concept = run.fresh_trainable(model, clip, _config(host))[0].to_concept("xl_ctx")
    g = torch.Generator().manual_seed(1)
    for word in concept.words:  # distinct rows and a visible text LoRA
        concept.embeddings[word] = concept.embeddings[word] + torch.randn(concept.embeddings[word].shape, generator=g)
    for module, pair in concept.text_lora.items():
        concept.text_lora[module] = type(pair)(down=pair.down, up=torch.randn(pair.up.shape, generator=g) * 0.05)
    host.pack("mixofshow_core.formats").WRITERS["edlora"](concept, os.path.join(host.models("edloras"),
                                                                              "xl_ctx.safetensors"))
    text = "a photo of <kit1> <kit2>, (square:1.0)"
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    trainable = host.pack("mixofshow_core.training.trainable").TrainableConcept(concept)
    for strength_clip, atol in ((0.0, 1e-5), (1.0, 3e-3)):
        loaded_clip = loader.load(model, clip, "xl_ctx.safetensors", 1.0, strength_clip)[1]
        with torch.inference_mode():
            cond = host.pack("nodes.concepts.layerwise").encode_layerwise(loaded_clip, text)[0]
        with torch.inference_mode(False):
            train_host = glue.ComfyTrainHost(model, clip, vae, WORDS.split(), [text], "fp32", False)
            with torch.no_grad():
                scaled = host.pack("mixofshow_core.training.trainable").TrainableConcept(concept)
                for up in scaled.text_up:
                    up.mul_(strength_clip)
            with train_host.attached(scaled), torch.no_grad():
                (packed, pooled), positions = train_host.contexts([text], trainable.embeddings)
        assert packed.shape == cond[0].shape == (1, 77 * 11, 192)
        torch.testing.assert_close(packed, cond[0], atol=atol, rtol=0)
        torch.testing.assert_close(pooled, cond[1]["pooled_output"], atol=atol, rtol=0)
    assert positions.tolist() == [[4, 5]]


def test_sdxl_attention_maps_cover_all_70_layers_and_the_adm_input_is_used(host, bed_xl):
    model, clip, vae = bed_xl
    glue, run = host.pack("nodes.training.train_host"), host.pack("nodes.training.run")
    trainable = run.fresh_trainable(model, clip, _config(host))[0]
    with torch.inference_mode(False):
        train_host = glue.ComfyTrainHost(model, clip, vae, WORDS.split(), ["<kit1> <kit2>, square"], "fp32", False)
        with train_host.attached(trainable), torch.no_grad():
            contexts, positions = train_host.contexts(["<kit1> <kit2>, square"] * 2, trainable.embeddings)
            noisy, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
            out, maps = train_host.predict(noisy, t, contexts, positions)
            other, _ = train_host.predict(noisy, t, (contexts[0], contexts[1] * 0), None)
    assert len(maps) == 70
    assert sorted({m.shape[2] for m in maps}) == [2, 4]  # SDXL attends at 1/2 and 1/4 of the 8x8 latent
    assert all(m.shape[0] == 2 and m.shape[-1] == 2 for m in maps)
    assert not torch.allclose(out, other, atol=1e-5)  # the pooled text reaches the UNet through its ADM input
