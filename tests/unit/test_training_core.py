"""Training core without a host: recipe pieces, data pipeline, resume state, Orthogonal Adaptation."""
import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mixofshow_core.concept import Concept
from mixofshow_core.formats import edlora_safetensors
from mixofshow_core.lora import LoRAPair
from mixofshow_core.training import augment, captions, dataset, loop, losses, orthogonal, plot, state
from mixofshow_core.training.config import TrainConfig, TrainingConfigError
from mixofshow_core.training.trainable import TrainableConcept


class ToyHost:
    """A denoiser whose only trainable path is a 4x4 LoRA on the noisy latent plus a context bias."""

    device = torch.device("cpu")
    prediction = "eps"

    def __init__(self, trainable: TrainableConcept):
        self.trainable = trainable

    def alphas_cumprod(self):
        return torch.linspace(0.99, 0.05, 50)

    def encode_latents(self, images, seed):
        pooled = torch.nn.functional.avg_pool2d(images, 8)  # (B, 3, R/8, R/8)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)  # (B, 4, h, w)

    def contexts(self, prompts, embeddings):
        packed = embeddings.mean(0).unsqueeze(0).expand(len(prompts), -1, -1)  # (B, L, D)
        return packed, torch.zeros(len(prompts), embeddings.shape[0], dtype=torch.long)

    def predict(self, noisy, timesteps, contexts, positions):
        down, up = self.trainable.unet_lora()["toy"]
        lora = torch.einsum("oc,bchw->bohw", up @ down, noisy)  # (B, 4, h, w)
        bias = contexts.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return 0.1 * noisy + self.trainable.alpha * lora + bias, []

    def autocast(self):
        return contextlib.nullcontext()


def _concept(seed=0) -> Concept:
    g = torch.Generator().manual_seed(seed)
    return Concept(words=["<a>", "<b>"], embeddings={"<a>": torch.randn(2, 8, generator=g) * 0.01,
                                                     "<b>": torch.randn(2, 8, generator=g) * 0.01},
                   unet_lora={"toy": LoRAPair(down=torch.randn(2, 4, generator=g) * 0.5, up=torch.zeros(4, 2))})


def _data(count=3) -> dataset.ConceptDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(count, 96, 80, 3, generator=g)
    return dataset.from_tensors(images, ["<TOK>, red, big, shiny"], torch.ones(count, 96, 80))


def _config(**kw) -> TrainConfig:
    base = dict(words=["<a>", "<b>"], init=["<rand-0.013>", "man"], resolution=64, batch_size=2, attn_reg_weight=0.0,
                lr_unet=5e-2, emb_norm_threshold=100.0)
    return TrainConfig(**(base | kw))


def _setup(config, total):
    trainable = TrainableConcept(_concept())
    host = ToyHost(trainable)
    optimizer = loop.make_optimizer(trainable, config)
    return host, trainable, optimizer, loop.make_scaler(host, "fp32"), loop.Progress(total=total)


def test_loss_falls_on_a_learnable_toy_target():
    config = _config()
    host, trainable, optimizer, scaler, progress = _setup(config, 60)
    before = loop.evaluate(host, trainable, _data(), config, range(500, 520))
    assert loop.run(host, trainable, _data(), config, optimizer, scaler, progress)
    after = loop.evaluate(host, trainable, _data(), config, range(500, 520))
    assert after < 0.8 * before, (before, after)
    assert len(progress.losses) == 60 and progress.done


def test_stop_then_resume_from_file_equals_an_uninterrupted_run(tmp_path):
    config, data = _config(lr_embedding=0.05), _data()
    host, straight, optimizer, scaler, progress = _setup(config, 8)
    loop.run(host, straight, data, config, optimizer, scaler, progress)

    host, first, optimizer, scaler, progress = _setup(config, 8)
    stops = iter([False] * 3 + [True])
    assert not loop.run(host, first, data, config, optimizer, scaler, progress, loop.Callbacks(lambda: next(stops)))
    assert progress.step == 3
    state.save(tmp_path / "s.safetensors", first, optimizer, scaler, config, data.fingerprint(), progress)

    saved = state.load(tmp_path / "s.safetensors")
    host, resumed, optimizer, scaler, _ = _setup(saved.config, 8)
    state.restore(saved, resumed, optimizer, scaler)
    assert saved.fingerprint == data.fingerprint() and saved.progress.losses == progress.losses
    loop.run(host, resumed, data, saved.config, optimizer, scaler, saved.progress)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_embeddings_freeze_at_the_norm_threshold():
    config = _config(lr_embedding=0.5, emb_norm_threshold=0.3)
    host, trainable, optimizer, scaler, progress = _setup(config, 10)
    loop.run(host, trainable, _data(), config, optimizer, scaler, progress)
    assert progress.frozen_at is not None and progress.frozen_at < 10
    assert torch.equal(trainable.embeddings.detach(), progress.frozen_embeddings)


def test_masked_mse_true_mean_and_official_scale():
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    full = torch.ones(2, 1, 8, 8)
    torch.testing.assert_close(losses.masked_mse(pred, target, full), torch.nn.functional.mse_loss(pred, target))
    torch.testing.assert_close(losses.masked_mse(pred, target, full, official_scale=True),
                               4 * torch.nn.functional.mse_loss(pred, target))
    half = torch.zeros(2, 1, 8, 8)
    half[..., :4] = 1
    expected = torch.nn.functional.mse_loss(pred[..., :4], target[..., :4])
    torch.testing.assert_close(losses.masked_mse(pred, target, half), expected)


def test_attention_regularisation_penalises_attention_outside_the_mask():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    inside = torch.nn.functional.interpolate(mask, size=(8, 8)).view(1, 1, 8, 8, 1).expand(1, 2, 8, 8, 2)
    outside = 1 - inside
    assert float(losses.attention_regularisation([inside], mask, False)) == 0
    assert float(losses.attention_regularisation([outside], mask, False)) == pytest.approx(2.0)
    assert float(losses.attention_regularisation([inside], mask, True)) == 0  # class word covers the mask exactly
    assert losses.attention_regularisation([inside], torch.ones(1, 1, 16, 16), False) is None  # no background


@pytest.mark.parametrize("crop", ["paper", "center", "pad"])
def test_crops_give_square_images_and_consistent_masks(crop):
    image, mask = torch.rand(3, 120, 80), torch.ones(1, 120, 80)
    for seed in range(6):
        out, subject, valid = augment.CROPS[crop](image, mask, 64, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 64, 64) and subject.shape == valid.shape == (1, 64, 64)
        assert float(out.min()) >= -1 and float(out.max()) <= 1
        assert torch.all(subject <= valid + 1e-6)  # the subject lies on the pasted picture
        assert bool((out[:, valid[0] == 0] == -1).all())  # padding is black
    if crop == "center":
        assert float(valid.mean()) == 1.0
    if crop == "pad":
        assert float(valid.mean()) == pytest.approx(80 / 120, abs=0.02)


def test_batches_are_a_pure_function_of_seed_and_step():
    data, config = _data(5), _config(templates="human")
    a, b = data.batch(7, config, ["<a>", "<b>"]), data.batch(7, config, ["<a>", "<b>"])
    assert torch.equal(a.images, b.images) and a.prompts == b.prompts
    assert not torch.equal(a.images, data.batch(8, config, ["<a>", "<b>"]).images)
    seen = sorted(i for s in range(0, 5, 1) for i in data.indices(s, 1, 0))  # one pass visits every image once
    assert seen == list(range(5))
    assert all("<a> <b>" in p for p in a.prompts)


def test_caption_shuffle_keeps_the_first_part_and_templates_wrap_the_caption():
    g = torch.Generator().manual_seed(0)
    shuffled = {captions.shuffle_caption("<TOK>, a, b, c, d", g) for _ in range(20)}
    assert all(s.startswith("<TOK>, ") and sorted(s.split(", ")[1:]) == ["a", "b", "c", "d"] for s in shuffled)
    assert len(shuffled) > 1
    assert [len(captions.TEMPLATES[k]) for k in ("human", "object", "style")] == [19, 27, 19]
    assert captions.bind_placeholder("<TOK>,  smiling", ["<p1>", "<p2>"]) == "<p1> <p2>, smiling"


def test_dataset_errors_say_what_to_do(tmp_path):
    images = torch.rand(3, 32, 32, 3)
    with pytest.raises(dataset.DatasetError, match="3 images but 2 caption lines"):
        dataset.from_tensors(images, ["<TOK>", "<TOK>, x"])
    with pytest.raises(dataset.DatasetError, match="do not contain the placeholder"):
        dataset.from_tensors(images, ["a photo"])
    with pytest.raises(dataset.DatasetError, match=r"Masks have shape \[3, 16, 16\]"):
        dataset.from_tensors(images, ["<TOK>"], torch.ones(3, 16, 16))
    with pytest.raises(dataset.DatasetError, match="does not exist"):
        dataset.from_folder(tmp_path / "missing")
    with pytest.raises(dataset.DatasetError, match="No images"):
        dataset.from_folder(tmp_path)


def test_folder_reads_captions_beside_or_in_captions_and_masks(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"img{i}.png")
    (tmp_path / "img0.txt").write_text("<TOK>, red\nsecond line ignored\n")
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "img1.txt").write_text("<TOK>, blue")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(tmp_path / "masks" / "img1.png")
    data = dataset.from_folder(tmp_path)
    assert [s.caption for s in data.samples] == ["<TOK>, red", "<TOK>, blue", "<TOK>"]
    assert data.samples[0].mask is None and data.samples[1].mask.shape == (1, 30, 40)
    assert data.samples[1].image[2].mean() == 1.0 and data.has_masks
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "img2.png")
    with pytest.raises(dataset.DatasetError, match="masks must have the image's size"):
        dataset.from_folder(tmp_path)


def test_config_steps_and_errors():
    assert _config(repeats=500, batch_size=2).total_steps(14) == 3500
    assert _config(steps=123).total_steps(14) == 123
    with pytest.raises(TrainingConfigError, match="one initializer per concept word"):
        TrainConfig(words=["<a>", "<b>"], init=["man"])
    with pytest.raises(TrainingConfigError, match="resolution must be a multiple of 64"):
        _config(resolution=100)
    assert TrainConfig.from_json(_config().to_json()) == _config()


def test_orthogonal_basis_is_orthogonal_deterministic_and_slots_are_disjoint():
    o = orthogonal.basis(64)
    assert float((o @ o.T - torch.eye(64, dtype=torch.float64)).abs().max()) < 1e-12
    orthogonal.basis.cache_clear()
    assert torch.equal(o, orthogonal.basis(64))
    b0, b1 = orthogonal.down_projection(64, 4, 0), orthogonal.down_projection(64, 4, 1)
    assert b0.shape == (4, 64) and float((b0.double() @ b1.double().T).abs().max()) < 1e-7
    torch.testing.assert_close(b0 @ b0.T, 0.25 * torch.eye(4), atol=1e-6, rtol=0)  # scale 0.5 rows
    assert orthogonal.max_slot([64, 32, 128], 4) == 7
    with pytest.raises(orthogonal.OrthogonalSlotError, match="only 16 slots"):
        orthogonal.down_projection(64, 4, 16)


def _ortho_concept(slot, words, seed):
    g = torch.Generator().manual_seed(seed)
    down = orthogonal.down_projection(32, 4, slot)
    return Concept(words=words, embeddings={w: torch.zeros(2, 8) for w in words},
                   unet_lora={"m": LoRAPair(down=down, up=torch.randn(16, 4, generator=g))},
                   orthogonal={"basis": orthogonal.BASIS_NAME, "slot": slot, "scale": 0.5, "rank": 4})


def test_merge_checks_report_zero_interference_for_distinct_slots_and_refuse_shared_ones():
    a, b = _ortho_concept(0, ["<a>"], 1), _ortho_concept(3, ["<b>"], 2)
    measured = orthogonal.interference([a, b], [0.6, 0.6])
    assert measured["overlap"] < 1e-6 and measured["crosstalk"] < 1e-6
    same = orthogonal.interference([a, _ortho_concept(0, ["<c>"], 3)], [0.6, 0.6])
    assert same["overlap"] == pytest.approx(1.0) and same["crosstalk"] > 0.1
    assert orthogonal.check_slots([a, b]) == []
    with pytest.raises(orthogonal.OrthogonalSlotError, match="both use orthogonal slot 0"):
        orthogonal.check_slots([a, _ortho_concept(0, ["<c>"], 3)])
    plain = Concept(words=["<p>"], embeddings={"<p>": torch.zeros(2, 8)})
    assert "not trained in orthogonal mode" in orthogonal.check_slots([a, plain])[0]


def test_orthogonal_metadata_round_trips_through_the_file(tmp_path):
    concept = _ortho_concept(2, ["<o1>", "<o2>"], 0)
    edlora_safetensors.write(concept, tmp_path / "o.safetensors")
    loaded = edlora_safetensors.read(tmp_path / "o.safetensors")
    assert loaded.orthogonal == concept.orthogonal
    assert torch.equal(loaded.unet_lora["m"].down, concept.unet_lora["m"].down)


def test_state_file_errors(tmp_path):
    with pytest.raises(state.TrainingStateError, match="cannot be read"):
        (tmp_path / "bad.safetensors").write_bytes(b"garbage")
        state.load(tmp_path / "bad.safetensors")
    edlora_safetensors.write(_concept(), tmp_path / "concept.safetensors")
    with pytest.raises(state.TrainingStateError, match="not an ED-LoRA training state"):
        state.load(tmp_path / "concept.safetensors")


def test_loss_plot_is_an_image_with_both_curves():
    image = plot.loss_plot([1.0, 0.8, 0.9, 0.5, 0.4], marks=[(3, "frozen")])
    assert image.shape == (1, 360, 640, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    pixels = (image[0] * 255).round().to(torch.int32).reshape(-1, 3).tolist()
    colours = {tuple(p) for p in pixels}
    assert (30, 90, 200) in colours and (180, 180, 180) in colours
    assert json.dumps(plot.smooth([1.0, 1.0])) == "[1.0, 1.0]"
