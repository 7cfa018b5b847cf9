"""ED-LoRA / Orthogonal Adaptation training in the real ComfyUI (tiny testbed, CPU).

The testbed here uses fan-in-scaled random weights (``build_testbed(seed, std=None)``) so that every
layer moves the output and training has something to learn. Training needs ComfyUI 0.3.41 or newer: on
an older host (the opt-in 2024 check) these tests skip and test_training_old_host.py checks what its user sees.
"""
from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.usefixtures("trains")

WORDS = "<toy1> <toy2>"
INIT = "<rand-0.013> man"


@pytest.fixture(scope="module")
def bed(host):
    with torch.inference_mode():
        return host.pack("testbed.model").build_testbed(3, std=None)


def _images(colour: int, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Coloured squares at different places on black; masks cover the squares. IMAGE [N,64,64,3], MASK [N,64,64]."""
    images, masks = torch.zeros(count, 64, 64, 3), torch.zeros(count, 64, 64)
    for i in range(count):
        top, left = 8 + 6 * i, 40 - 8 * i
        images[i, top: top + 20, left: left + 20, colour] = 1.0
        masks[i, top: top + 20, left: left + 20] = 1.0
    return images, masks


def _dataset(host, colour=0, masks=True, captions="<TOK>, square\n<TOK>\n<TOK>, small, square\n<TOK>, on black"):
    images, mask = _images(colour)
    return host.pack("nodes.training.nodes").EDLoRADataset().build(images, captions, mask if masks else None)[0]


def _train(host, bed, dataset, name, steps, resume=False, **options):
    model, clip, vae = bed
    node = host.pack("nodes.training.nodes").EDLoRATrain()
    options = {"attn_reg_weight": 0.0, "crop": "center", "templates": "none", **options}
    return node.train(model, clip, vae, dataset, name, options.pop("words", WORDS), options.pop("init", INIT), steps,
                      1, 2, 64, options.pop("seed", 0), resume, **options)["result"]


def _config(host, **options):
    base = dict(words=WORDS.split(), init=INIT.split(), batch_size=2, resolution=64, crop="center",
                templates="none", attn_reg_weight=0.0)
    return host.pack("mixofshow_core.training.config").TrainConfig(**(base | options))


def _concept(host, name):
    return host.pack("mixofshow_core.formats").load_concept(os.path.join(host.models("edloras"), f"{name}.safetensors"))


@pytest.mark.parametrize("train_lora", [True, False], ids=["lora", "embedding_only"])
def test_loss_falls_on_a_fixed_evaluation_set(host, bed, train_lora):
    """Same images, noise and timesteps before and after: the trained concept has a lower objective."""
    run = host.pack("nodes.training.run")
    data = _dataset(host, masks=False)
    rates = dict(lr_unet=5e-2, lr_text=1e-2, lr_embedding=5e-2) if train_lora else dict(lr_embedding=3e-1)
    options = dict(train_lora=train_lora, emb_norm_threshold=100.0, mask_loss=False, **rates)
    config = _config(host, **options)
    before = run.evaluate(*bed, data, config, None, range(100, 116))
    _train(host, bed, data, f"falls_{train_lora}", 40, **options)
    trained = _concept(host, f"falls_{train_lora}")
    after = run.evaluate(*bed, data, config, trained, range(100, 116))
    assert after < before - (4e-3 if train_lora else 5e-4), (before, after)
    ups = [p.up for p in {**trained.text_lora, **trained.unet_lora}.values()]
    if train_lora:
        assert max(float(u.abs().max()) for u in ups) > 1e-3
    else:  # embedding only: LoRA untouched (zero up factors), rows moved away from their initial values
        assert all(torch.count_nonzero(u) == 0 for u in ups)
        start = run.fresh_trainable(bed[0], bed[1], config)[0].embeddings.detach()
        assert float((trained.embedding_stack() - start).abs().max()) > 1e-2


def test_cancel_keeps_a_usable_concept_and_resume_equals_an_uninterrupted_run(host, bed):
    import comfy.model_management as mm
    import comfy.utils

    data = _dataset(host)
    options = dict(attn_reg_weight=0.01, lr_unet=1e-2, save_every=3)
    _train(host, bed, data, "straight", 8, **options)

    def cancel_at_five(value, total, preview, **_):
        if value == 5:
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(cancel_at_five)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _train(host, bed, data, "cut", 8, **options)
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(lambda *a, **k: mm.throw_exception_if_processing_interrupted())
    state = host.pack("mixofshow_core.training.state").load(
        os.path.join(host.output(), "mixofshow_training", "cut", "state.safetensors"))
    assert state.progress.step == 5 and len(state.progress.losses) == 5
    partial = _concept(host, "cut")  # usable right away
    model, clip = host.pack("nodes.concepts.nodes").EDLoRALoader().load(bed[0], bed[1], "cut.safetensors", 1.0, 1.0)
    assert "<toy1>" in host.pack("nodes.concepts.layerwise").concept_registry(clip)

    _train(host, bed, data, "cut", 8, resume=True, **options)
    straight, resumed = _concept(host, "straight"), _concept(host, "cut")
    assert not torch.equal(partial.embedding_stack(), resumed.embedding_stack())
    assert torch.equal(straight.embedding_stack(), resumed.embedding_stack())
    for part in ("text_lora", "unet_lora"):
        a, b = getattr(straight, part), getattr(resumed, part)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k].up, b[k].up) and torch.equal(a[k].down, b[k].down) for k in a)


def test_resume_refuses_other_settings_or_data(host, bed):
    data = _dataset(host)
    _train(host, bed, data, "guarded", 2)
    state_errors = host.pack("mixofshow_core.training.state").TrainingStateError
    with pytest.raises(state_errors, match="lr_unet: saved 0.0001, now 0.5"):
        _train(host, bed, data, "guarded", 2, resume=True, lr_unet=0.5)
    with pytest.raises(state_errors, match="other images or captions"):
        _train(host, bed, _dataset(host, colour=2), "guarded", 2, resume=True)
    _train(host, bed, _dataset(host, colour=2), "guarded", 2, resume=False)  # resume off starts over


def test_trained_concept_loads_and_inference_contexts_match_training(host, bed, cn):
    """The loader + ED-LoRA Text Encode give each layer the context training optimised.

    Word rows: exact. Text LoRA: ComfyUI merges it into its fp16 text-encoder weights, training adds it
    in fp32 beside them, so the two agree to fp16 rounding of the merged weights.
    """
    model, clip, vae = bed
    data = _dataset(host)
    result = _train(host, bed, data, "roundtrip", 3, lr_embedding=0.2, lr_text=1e-2)
    assert result[2] == "roundtrip.safetensors"
    assert result[3].shape[-1] == 3 and result[3].shape[1] > 100  # loss plot IMAGE
    text = "a photo of <toy1> <toy2>, square"
    glue = host.pack("nodes.training.train_host")
    concept = _concept(host, "roundtrip")
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    for strength_clip, atol in ((0.0, 1e-6), (1.0, 3e-3)):
        loaded_clip = loader.load(model, clip, "roundtrip.safetensors", 1.0, strength_clip)[1]
        with torch.inference_mode():
            packed = host.pack("nodes.concepts.layerwise").encode_layerwise(loaded_clip, text)[0][0]
        with torch.inference_mode(False):
            train_host = glue.ComfyTrainHost(model, clip, vae, WORDS.split(), [text], "fp32", False)
            trainable = host.pack("mixofshow_core.training.trainable").TrainableConcept(concept)
            with torch.no_grad():
                for up in trainable.text_up:
                    up.mul_(strength_clip)
            with train_host.attached(trainable), torch.no_grad():
                (trained, pooled), positions = train_host.contexts([text], trainable.embeddings)
        assert pooled is None  # SD1.x: no pooled text section
        assert trained.shape == packed.shape == (1, 77 * 16, 64)
        torch.testing.assert_close(trained, packed, atol=atol, rtol=0)
    assert positions.tolist() == [[4, 5]]  # BOS a photo of <toy1> <toy2>


def test_masks_attention_regularisation_and_validation_images(host, bed):
    data = _dataset(host, masks=True)
    result = _train(host, bed, data, "reg", 2, attn_reg_weight=0.5, templates="human", crop="paper",
                    validation_prompts="a photo of <toy1> <toy2>\n<toy1> <toy2> on black", validation_steps=2,
                    validate_every=1)
    validation = result[4]
    assert validation.shape == (2, 64, 64, 3) and torch.isfinite(validation).all()
    folder = os.path.join(host.output(), "mixofshow_training", "reg")
    assert sorted(f for f in os.listdir(folder) if f.startswith("validation_")) == [
        "validation_000001.png", "validation_000002.png"]
    assert os.path.isfile(os.path.join(folder, "loss.png"))
    assert "2/2 steps" in result[5]


def test_attention_maps_cover_every_layer_with_word_columns(host, bed):
    model, clip, vae = bed
    glue = host.pack("nodes.training.train_host")
    config = _config(host)
    trainable = host.pack("nodes.training.run").fresh_trainable(model, clip, config)[0]
    with torch.inference_mode(False):
        train_host = glue.ComfyTrainHost(model, clip, vae, WORDS.split(), ["<toy1> <toy2>, square"], "fp32", False)
        with train_host.attached(trainable), torch.no_grad():
            contexts, positions = train_host.contexts(["<toy1> <toy2>, square"] * 2, trainable.embeddings)
            _, maps = train_host.predict(torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), contexts, positions)
    assert len(maps) == 16
    assert sorted({m.shape[2] for m in maps}) == [1, 2, 4, 8]  # 64 px image: latent 8, then 4, 2, 1
    assert all(m.shape[0] == 2 and m.shape[-1] == 2 and float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)


def test_orthogonal_concepts_are_exactly_orthogonal_and_merge_by_sum(host, bed):
    model, clip, vae = bed
    options = dict(mode="orthogonal", lr_unet=5e-2, lr_text=1e-2)
    _train(host, bed, _dataset(host, colour=0), "ortho_red", 4, words="<red1> <red2>", orthogonal_slot=0, **options)
    _train(host, bed, _dataset(host, colour=2), "ortho_blue", 4, words="<blue1> <blue2>", orthogonal_slot=1, seed=5,
           **options)
    red, blue = _concept(host, "ortho_red"), _concept(host, "ortho_blue")
    assert red.orthogonal["slot"] == 0 and blue.orthogonal["slot"] == 1
    trained = []
    for part in ("text_lora", "unet_lora"):
        for name, pair in getattr(red, part).items():
            other = getattr(blue, part)[name]
            assert float((pair.down.double() @ other.down.double().T).abs().max()) < 1e-6
            trained += [bool(pair.up.abs().max() > 0), bool(other.up.abs().max() > 0)]
    # all but attn1 q/k at the 1x1 level (softmax over one key has no gradient) moved
    assert sum(trained) >= 0.9 * len(trained)

    concept_list = host.pack("nodes.fusion.nodes").EDLoRAConceptList()
    entries = concept_list.append("ortho_red.safetensors", 1.0, 1.0)[0]
    entries = concept_list.append("ortho_blue.safetensors", 1.0, 1.0, entries)[0]
    merge = host.pack("nodes.fusion.orthogonal_nodes").OrthogonalMerge()
    merged_model, merged_clip, report = merge.merge(model, clip, entries, 0.6)
    assert float(report.split("1 = same rows): ")[1].split("\n")[0]) < 1e-6
    registry = host.pack("nodes.concepts.layerwise").concept_registry(merged_clip)
    assert {"<red1>", "<red2>", "<blue1>", "<blue2>"} <= set(registry)

    # on each concept's own input subspace the merged layer equals that concept alone
    single_model = host.pack("nodes.concepts.model_patches").apply_concept(model, clip, red, 0.6, 0.6, "red")[0]
    layout = host.pack("nodes.model_layout").unet_layout(model)
    ldm = host.pack("mixofshow_core.unet_layout").map_unet_modules(layout, list(red.unet_lora))
    merged_w, single_w = _patched_weights(merged_model, ldm), _patched_weights(single_model, ldm)
    changed = 0
    for name, pair in red.unet_lora.items():
        x = pair.down.T.double() @ torch.randn(pair.rank, 3, dtype=torch.float64)  # (in, 3) in span(B_red)
        torch.testing.assert_close(merged_w[name].double() @ x, single_w[name].double() @ x, atol=1e-6, rtol=1e-6)
        changed += float((merged_w[name] - single_w[name]).abs().max()) > 1e-4  # blue changed it elsewhere
    assert changed >= 0.9 * len(red.unet_lora)

    with pytest.raises(Exception, match="both use orthogonal slot 0"):
        twice = concept_list.append("ortho_red.safetensors", 1.0, 1.0, concept_list.append(
            "ortho_red.safetensors", 1.0, 1.0)[0])[0]
        merge.merge(model, clip, twice, 0.6)


def _patched_weights(model, ldm_names: dict[str, str]) -> dict[str, torch.Tensor]:
    """UNet weights with the model's LoRA patches applied by the host's own LoRA math (model untouched)."""
    unet = model.model.diffusion_model
    out = {}
    with torch.inference_mode():
        for name, module in ldm_names.items():
            key = f"diffusion_model.{module}.weight"
            weight = unet.get_submodule(module).weight.detach().float().clone()
            out[name] = model.calculate_weight(model.patches.get(key, []), weight, key)
    return out


def test_bad_training_input_is_explained(host, bed):
    errors = host.pack("mixofshow_core.training.dataset").DatasetError
    with pytest.raises(errors, match="do not contain the placeholder '<TOK>'"):
        _dataset(host, captions="a red square")
    with pytest.raises(errors, match="4 images but 2 caption lines"):
        _dataset(host, captions="<TOK>\n<TOK>, red")
    with pytest.raises(Exception, match="not one token of this CLIP"):
        _train(host, bed, _dataset(host), "badinit", 1, init="<rand-0.013> xqzzyvw")
    with pytest.raises(Exception, match="one initializer per concept word"):
        _train(host, bed, _dataset(host), "badinit", 1, init="<rand-0.013>")


def test_gradient_checkpointing_gives_the_same_concept(host, bed):
    data = _dataset(host)
    _train(host, bed, data, "plain_grad", 3, lr_unet=1e-2)
    _train(host, bed, data, "ckpt_grad", 3, lr_unet=1e-2, gradient_checkpointing=True)
    plain, checkpointed = _concept(host, "plain_grad"), _concept(host, "ckpt_grad")
    assert any(float(p.up.abs().max()) > 0 for p in plain.unet_lora.values())
    for name, pair in plain.unet_lora.items():
        torch.testing.assert_close(checkpointed.unet_lora[name].up, pair.up, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(checkpointed.embedding_stack(), plain.embedding_stack(), atol=1e-6, rtol=1e-5)


def test_cancel_through_the_executor_keeps_the_work(host):
    """A prompt cancelled mid-training ends as interrupted (not an error) and leaves a loadable concept."""
    import comfy.model_management as mm
    import comfy.utils
    import folder_paths
    from PIL import Image

    import comfy_host

    folder = os.path.join(folder_paths.get_input_directory(), "training", "executor_cut")
    os.makedirs(folder, exist_ok=True)
    for i, colour in enumerate([(220, 40, 40), (40, 40, 220), (40, 220, 40)]):
        Image.new("RGB", (64, 64), colour).save(os.path.join(folder, f"p{i}.png"))
    prompt = {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "EDLoRADatasetFromFolder", "inputs": {"folder": "training/executor_cut",
                                                                  "default_caption": "<TOK>, a square"}},
        "3": {"class_type": "EDLoRATrain", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "dataset": ["2", 0], "concept_name": "executor_cut",
            "words": WORDS, "init": INIT, "steps": 30, "repeats": 1, "batch_size": 1, "resolution": 64, "seed": 0,
            "resume": False, "save_every": 0}},
    }
    cut = []

    # Cancel at the first progress report from step 2 on (newer hosts throttle reports to one per 100 ms).
    def cancel_from_two(value, total, preview, **_):
        if value >= 2 and not cut:
            cut.append(value)
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(cancel_from_two)
    try:
        result = comfy_host.run_prompt(prompt)
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(lambda *a, **k: mm.throw_exception_if_processing_interrupted())
    events = [event for event, _ in result.messages]
    assert not result.success and "execution_interrupted" in events and "execution_error" not in events
    concept = _concept(host, "executor_cut")
    assert concept.words == WORDS.split()
    saved = host.pack("mixofshow_core.training.state").load(
        os.path.join(host.output(), "mixofshow_training", "executor_cut", "state.safetensors"))
    assert 2 <= cut[0] < 30 and saved.progress.step == cut[0] and saved.progress.total == 30


def test_an_error_mid_run_keeps_the_last_completed_step(host, bed, monkeypatch):
    """Nothing is lost: a failure after some steps (here: validation at step 2) leaves concept and state."""
    glue = host.pack("nodes.training.train_host")

    def broken(*args, **kwargs):
        raise RuntimeError("validation ran out of memory")

    monkeypatch.setattr(glue.ComfyTrainHost, "validation_images", broken)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        _train(host, bed, _dataset(host), "mid_error", 5, save_every=0, validate_every=2,
               validation_prompts="a photo of <toy1> <toy2>")
    saved = host.pack("mixofshow_core.training.state").load(
        os.path.join(host.output(), "mixofshow_training", "mid_error", "state.safetensors"))
    assert saved.progress.step == 2
    assert _concept(host, "mid_error").words == WORDS.split()
