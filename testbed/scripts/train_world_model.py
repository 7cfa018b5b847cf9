"""Train the tiny text-to-image testbed model on the synthetic world (re-runnable; CPU is enough).

The model is the pack's testbed architecture (testbed/model.py: ComfyUI's SD1 UNet at 32 channels,
an SD1 CLIP at width 64 with the bundled tokenizer, a small KL autoencoder), so it loads in ComfyUI
like any SD1 checkpoint. Phases:
1. autoencoder on world images, half the patterned objects in a random second hue (deterministic:
   posterior means, L1 + MSE with objects weighted 5x), its posterior variance pinned tiny and its latent
   scale folded into the weights so latents have the spread SD1's latent format (x 0.18215) expects; its
   reconstructions are scored with the world scorer;
2. a wider decoder (--decoder) trained on the frozen encoder's latents replaces the small one, which was only a
   training aid (``--widen-decoder-of FILE`` runs this phase alone on a trained file, keeping its UNet);
3. UNet and text encoder from scratch on the base world's captions (epsilon-prediction, min-SNR-5
   weighting, 10 % empty captions for classifier-free guidance, an EMA of the weights is what is saved,
   every --save-every steps, so a stopped run leaves a usable file). Novel concepts are never shown.
   ``--unet-channels`` sets the UNet's width (32 shipped); ``--retrain-unet-of FILE`` runs this phase alone
   on a trained file's autoencoder.
The script prints its wall time per phase; testbed/scripts/eval_world_model.py measures caption fidelity.

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON testbed/scripts/train_world_model.py --out testbed/weights/world_tiny_sd1.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import safetensors
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(REPO, "scripts")]
SD1_SCALE = 0.18215
DECODER_STEPS = 1800


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, 64, 64) in [-1, 1]


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, lr: float, seed: int, log) -> None:
    """A deterministic autoencoder on the posterior means (L1 + MSE, objects weighted 5x, a small pull of the
    latents to 0, cosine learning-rate decay); the posterior's variance is then pinned tiny. Sampling the
    posterior during training (a KL-VAE with a negligible KL weight) kept unit noise on the latents, and
    the decoder learnt to draw only blobs."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    for step in range(steps):
        x = images[torch.randint(len(images), (batch,), generator=g)]
        mean = vae.quant_conv(vae.encoder(x))[:, :4]  # (B, 4, h, w); channels 4..7 are the log-variance
        loss = reconstruction_loss(vae.decode(mean), x) + 1e-4 * (mean ** 2).mean()
        _step(opt, loss, lr, step, steps)
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}: loss {float(loss.detach()):.4f}")
    with torch.no_grad():  # log-variance -10 everywhere: ComfyUI's encode samples, with std e^-5 that is the mean
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -10.0


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE with objects (saturated pixels) weighted 5x: the ground is most of every image."""
    weight = 1 + 4 * (x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True) > 0.6)  # (B, 1, 64, 64)
    err = rec - x
    return ((err.abs() + err ** 2) * weight).mean() / weight.float().mean()


def _step(opt, loss: torch.Tensor, lr: float, step: int, steps: int) -> None:
    """One Adam step with the learning rate on a cosine decay to 0."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for group in opt.param_groups:
        group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
    opt.step()


def widen_decoder(vae, testbed, images: torch.Tensor, changes: dict, steps: int, batch: int, lr: float, seed: int,
                  log) -> None:
    """Replace the decoder by a wider one (VAE_CONFIG plus ``changes``) trained on the frozen encoder's latents,
    so the UNet trained on those latents stays valid. The small decoder of the joint phase is a training aid:
    with it, squares came back as blobs and yellow dots on red as orange."""
    latents = posterior_means(vae, images)  # (N, 4, 8, 8), fixed
    decoder = testbed.build_decoder({**testbed.VAE_CONFIG, **changes}, std=None)
    train_host().prepare_for_autograd(decoder)
    post = vae.post_quant_conv  # trained on with the new decoder
    log(f"wide decoder: {sum(p.numel() for p in decoder.parameters()) / 1e6:.1f} M parameters "
        f"(was {sum(p.numel() for p in vae.decoder.parameters()) / 1e6:.2f} M)")
    opt = torch.optim.Adam([*decoder.parameters(), *post.parameters()], lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        pick = torch.randint(len(images), (batch,), generator=g)
        loss = reconstruction_loss(decoder(post(latents[pick])), images[pick])
        _step(opt, loss, lr, step, steps)
        if step % 100 == 0 or step == steps - 1:
            log(f"decoder step {step}: loss {float(loss.detach()):.4f}")
    vae.decoder = decoder.eval()


@torch.no_grad()
def posterior_means(vae, images: torch.Tensor) -> torch.Tensor:
    """Posterior means [N, 4, h, w] (encoder + quant_conv, before sampling)."""
    return torch.cat([vae.quant_conv(vae.encoder(images[i: i + 256]))[:, :4] for i in range(0, len(images), 256)])


@torch.no_grad()
def fold_latent_scale(vae, images: torch.Tensor) -> float:
    """Scale the latent space so SD1's 0.18215 factor maps it to unit spread; returns the factor applied."""
    means = posterior_means(vae, images)
    k = float(1.0 / SD1_SCALE / means.std())
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:4] *= k
    quant.bias[:4] *= k
    quant.bias[4:] += 2 * float(np.log(k))  # log-variance of the scaled posterior
    post.weight /= k
    return k


class EMA:
    """Exponential moving average of parameters (what gets saved: far better samples than the raw weights)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short memory early on
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def train_unet_and_text(model, clip, latents: torch.Tensor, tokens: torch.Tensor, args, log, save) -> None:
    """ε-prediction on DDPM-noised latents with min-SNR-5 weighting; the text encoder is trained jointly from
    scratch. ``save(step)`` is called every ``args.save_every`` steps and at the end with the EMA weights in place."""
    glue = train_host()
    unet, encoder = model.model.diffusion_model, clip.cond_stage_model.clip_l
    params = list(unet.parameters()) + list(encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = EMA(params, args.ema)
    sigmas = model.model.model_sampling.sigmas.float()
    alphas = 1.0 / (1.0 + sigmas ** 2)  # (1000,) cumulative alpha per timestep
    snr_weight = torch.clamp(1.0 / sigmas ** 2, max=5.0) * sigmas ** 2  # min(SNR, 5) / SNR, (1000,)
    empty = tokens_for(clip, [""])[0]
    g = torch.Generator().manual_seed(args.seed)
    steps, batch, warmup = args.unet_steps, args.batch, 200
    hooks = glue._clone_text_norm_inputs(encoder.transformer)
    try:
        for step in range(steps):
            idx = torch.randint(len(latents), (batch,), generator=g)
            x0 = latents[idx] * SD1_SCALE  # (B, 4, 8, 8), unit spread
            ids = tokens[idx].clone()
            ids[torch.rand(batch, generator=g) < 0.1] = empty  # caption dropout for CFG
            t = torch.randint(len(alphas), (batch,), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            clip.cond_stage_model.reset_clip_options()
            context = encoder(ids.tolist())[0]
            pred = unet(noisy, timesteps=t.float(), context=context, transformer_options={})
            loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * snr_weight[t]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            progress = max(0.0, (step - warmup) / max(1, steps - warmup))
            for group in opt.param_groups:  # warm-up, then cosine down to 10 %
                group["lr"] = args.lr * min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * np.cos(np.pi * progress))
            opt.step()
            ema.update(step)
            if step % 100 == 0 or step == steps - 1:
                log(f"unet step {step}: loss {float(loss.detach()):.4f}")
            if (step + 1) % args.save_every == 0 or step == steps - 1:
                ema.swap()
                save(step + 1)
                ema.swap()
    finally:
        for hook in hooks:
            hook.remove()
        for p in params:
            p.requires_grad_(False)
    ema.swap()  # leave the averaged weights in the model


@torch.no_grad()
def reconstruction_fidelity(vae, scorer, render, fidelity, count: int = 240, seed: int = 1) -> dict[str, float]:
    """Scorer accuracy on autoencoder reconstructions of single-object renders, a third of them in two hues
    (the ceiling for sampling)."""
    rng = np.random.default_rng(seed)
    fields = ("shape", "colour", "pattern", "accent", "size", "position")
    objs = []
    for i in range(count):
        colour = str(rng.choice(list(render.COLOURS)))
        accent = str(rng.choice([c for c in render.COLOURS if c != colour])) if i % 3 == 0 else render.SHADE
        pattern = str(rng.choice(render.PATTERNS[1:] if i % 3 == 0 else render.PATTERNS))
        objs.append((render.Obj(str(rng.choice(render.SHAPES)), colour, pattern, accent,
                                str(rng.choice(list(render.SIZES))), str(rng.choice(list(render.POSITIONS)))),
                     str(rng.choice(render.BACKGROUNDS))))
    images = np.stack([render.render([o], ground, seed=i)[0] for i, (o, ground) in enumerate(objs)])
    x = _pixels(images)
    rec = torch.cat([vae.decode(vae.quant_conv(vae.encoder(x[i: i + 64]))[:, :4]) for i in range(0, count, 64)])
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    right = dict.fromkeys(fields, 0)
    for (obj, _), image in zip(objs, rec):
        got = scorer.recognise(image)
        want = fidelity.expected(obj)
        for f in fields:
            right[f] += got.found and getattr(got, f) == want[f]
    return {f: right[f] / count for f in fields}


def tokens_for(clip, captions: list[str]) -> torch.Tensor:
    return torch.tensor([[int(t[0]) for t in clip.tokenize(c)["l"][0]] for c in captions])  # (N, 77)


_HOST = {}


def host_pack() -> str:
    return _HOST["name"]


def train_host():
    """The pack's nodes.training.train_host module under the booted host's package name."""
    return __import__(f"{host_pack()}.nodes.training.train_host", fromlist=["x"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "testbed", "weights", "world_tiny_sd1.safetensors"))
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--pairs", type=float, default=0.25, help="fraction of two-object scenes")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--decoder", type=json.loads, default={"ch_mult": [1, 2, 4, 4], "num_res_blocks": 2},
                        help="JSON of VAE_CONFIG changes for the wide decoder; {} keeps the small one")
    parser.add_argument("--decoder-steps", type=int, default=DECODER_STEPS)
    parser.add_argument("--decoder-lr", type=float, default=1e-3)
    parser.add_argument("--widen-decoder-of", metavar="FILE",
                        help="only the wide-decoder phase, on this trained file's autoencoder (its UNet and text "
                             "encoder are kept); writes --out")
    parser.add_argument("--retrain-unet-of", metavar="FILE",
                        help="only the UNet and text-encoder phase, from scratch, on this trained file's autoencoder "
                             "(e.g. with another --unet-channels); writes --out")
    parser.add_argument("--unet-channels", type=int, default=32, help="the UNet's base width (a multiple of 32)")
    parser.add_argument("--unet-steps", type=int, default=4500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--save-every", type=int, default=500, help="write the EMA weights every N UNet steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.widen_decoder_of and not args.decoder:
        parser.error("--widen-decoder-of needs a wide --decoder (JSON of VAE_CONFIG changes); {} changes nothing")
    if args.widen_decoder_of and args.retrain_unet_of:
        parser.error("--widen-decoder-of and --retrain-unet-of each run one phase; give one of them")
    import comfy_host

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-world-"))
    _HOST["name"] = host.pack_name
    testbed = host.pack("testbed.model")
    world = host.pack("testbed.world.concepts")
    glue = host.pack("nodes.training.train_host")
    started = time.monotonic()
    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(f"[{time.monotonic() - started:7.1f}s] {text}")
        print(lines[-1], flush=True)

    def write(state: dict, meta: dict) -> None:
        host.pack("mixofshow_core.files").save_safetensors_atomic(
            {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, args.out, dict(meta))

    def score(autoencoder, meta: dict, key: str) -> None:
        rec = reconstruction_fidelity(autoencoder, *(host.pack(f"testbed.world.{m}")
                                                     for m in ("scorer", "render", "fidelity")))
        log(f"{key} scored: " + ", ".join(f"{f} {v:.0%}" for f, v in rec.items()))
        meta[key] = json.dumps(rec)

    def decoder_phase(vae, ae_pixels: torch.Tensor, meta: dict) -> None:
        if not args.decoder:
            return
        phase_started = time.monotonic()
        with torch.enable_grad():
            widen_decoder(vae.first_stage_model, testbed, ae_pixels, args.decoder, args.decoder_steps, 32,
                          args.decoder_lr, args.seed, log)
        meta.update({testbed.DECODER_KEY: json.dumps(args.decoder), "decoder_steps": str(args.decoder_steps),
                     "decoder_lr": str(args.decoder_lr),
                     "decoder_seconds": f"{time.monotonic() - phase_started:.0f}"})
        score(vae.first_stage_model, meta, "wide_decoder_reconstruction")

    def autoencoder_phase(ae_pixels: torch.Tensor, meta: dict):
        """A new VAE trained on ``ae_pixels``, its latent scale folded in, then the wide decoder."""
        with torch.no_grad():
            vae = testbed.build_vae(args.seed, std=None)
        glue.prepare_for_autograd(vae.first_stage_model)
        with torch.enable_grad():
            train_vae(vae.first_stage_model, ae_pixels, args.vae_steps, 32, args.vae_lr, args.seed, log)
        k = fold_latent_scale(vae.first_stage_model, ae_pixels)
        log(f"latent scale folded into the autoencoder: x{k:.3f}")
        score(vae.first_stage_model, meta, "vae_reconstruction")
        meta["vae_seconds"] = f"{time.monotonic() - started:.0f}"
        decoder_phase(vae, ae_pixels, meta)
        return vae

    def unet_phase(model, clip, vae, images: np.ndarray, captions: list[str], meta: dict) -> None:
        with torch.no_grad():
            latents = posterior_means(vae.first_stage_model, _pixels(images))  # (N, 4, 8, 8)
        tokens = tokens_for(clip, captions)
        unet_started = time.monotonic()

        def save(step: int) -> None:
            meta["unet_steps_done"] = str(step)
            meta["unet_seconds"] = f"{time.monotonic() - unet_started:.0f}"
            write(testbed.checkpoint_state(model, clip, vae), meta)
            log(f"wrote {args.out} at step {step} ({os.path.getsize(args.out) / 2**20:.1f} MB)")

        with torch.enable_grad():
            train_unet_and_text(model, clip, latents, tokens, args, log, save)

    torch.manual_seed(args.seed)
    if not args.retrain_unet_of:  # the autoencoder's own images
        ae_pixels = _pixels(world.autoencoder_dataset(args.images, seed=args.seed, pair_fraction=args.pairs))
    if args.widen_decoder_of:
        with safetensors.safe_open(args.widen_decoder_of, "pt") as f:
            meta = dict(f.metadata() or {})
        with torch.inference_mode(False):
            with torch.no_grad():
                model, clip, vae = testbed.load_trained(args.widen_decoder_of)
            vae.first_stage_model.float()
            decoder_phase(vae, ae_pixels, meta)
            write(testbed.checkpoint_state(model, clip, vae), meta)
        log(f"wrote {args.out}")
        return
    images, captions = world.base_dataset(args.images, seed=args.seed, pair_fraction=args.pairs)
    log(f"rendered {len(images)} world images" + ("" if args.retrain_unet_of else " (and as many for the autoencoder)"))
    meta = {"mixofshow.testbed": "world_tiny_sd1", "images": str(args.images), "pairs": str(args.pairs),
            "vae_steps": str(args.vae_steps), "vae_lr": str(args.vae_lr),
            "unet_channels": str(args.unet_channels), "unet_steps": str(args.unet_steps), "batch": str(args.batch),
            "lr": str(args.lr), "ema": str(args.ema), "seed": str(args.seed),
            "torch_threads": str(torch.get_num_threads())}
    with torch.inference_mode(False):
        with torch.no_grad():  # the CLIP constructor writes into its weights
            model = testbed.build_model(args.seed, std=None, channels=args.unet_channels)
            clip = testbed.build_clip(args.seed, std=None)
        clip.cond_stage_model.float()  # ComfyUI keeps text encoders in fp16 on CPU; AdamW needs fp32 weights
        for module in (model.model, clip.cond_stage_model):
            glue.prepare_for_autograd(module)
        if args.retrain_unet_of:  # the file's autoencoder and its record
            with safetensors.safe_open(args.retrain_unet_of, "pt") as f:
                meta.update({k: v for k, v in (f.metadata() or {}).items()
                             if k.startswith(("vae", "decoder", "wide_decoder", testbed.DECODER_KEY))},
                            autoencoder_of=os.path.basename(args.retrain_unet_of))
            with torch.no_grad():
                vae = testbed.load_trained(args.retrain_unet_of)[2]
            vae.first_stage_model.float()
        else:
            vae = autoencoder_phase(ae_pixels, meta)
            del ae_pixels  # 0.5 GB the UNet phase does not need
        unet_phase(model, clip, vae, images, captions, meta)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
