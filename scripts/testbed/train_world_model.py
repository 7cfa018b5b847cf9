"""Train the tiny text-to-image testbed model on the synthetic world (re-runnable; CPU is enough).

The model is the pack's testbed architecture (nodes/testbed.py: ComfyUI's SD1 UNet at 32 channels,
an SD1 CLIP at width 64 with the bundled tokenizer, a small KL autoencoder), so it loads in ComfyUI
like any SD1 checkpoint. Phases:
1. autoencoder on world images (L1 + MSE + a small KL), then its latent scale is folded into the
   weights so latents have the spread SD1's latent format (× 0.18215) expects;
2. UNet and text encoder from scratch on the base world's captions (ε-prediction, 10 % empty captions
   for classifier-free guidance). Novel concepts are never shown.
The script prints its wall time per phase and the caption fidelity measured with the world scorer.

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON scripts/testbed/train_world_model.py --out nodes/testbed_weights/world_tiny_sd1.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(REPO, "scripts")]
SD1_SCALE = 0.18215


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, 64, 64) in [-1, 1]


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, seed: int, log) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for step in range(steps):
        x = images[torch.randint(len(images), (batch,), generator=g)]
        moments = vae.quant_conv(vae.encoder(x))  # (B, 8, h, w): mean and log-variance
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum() / len(x)
        rec = vae.decode(z)
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}: loss {float(loss.detach()):.4f}")


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


def train_unet_and_text(model, clip, latents: torch.Tensor, tokens: torch.Tensor, steps: int, batch: int,
                        seed: int, log) -> None:
    """ε-prediction on DDPM-noised latents; the text encoder is trained jointly from scratch."""
    glue = __import__(f"{host_pack()}.nodes.train_glue", fromlist=["x"])
    unet, encoder = model.model.diffusion_model, clip.cond_stage_model.clip_l
    params = list(unet.parameters()) + list(encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    sigmas = model.model.model_sampling.sigmas.float()
    alphas = 1.0 / (1.0 + sigmas ** 2)  # (1000,)
    empty = tokens_for(clip, [""])[0]
    g = torch.Generator().manual_seed(seed)
    restore = glue._out_of_place_text_layers(encoder.transformer)
    try:
        for step in range(steps):
            idx = torch.randint(len(latents), (batch,), generator=g)
            x0 = latents[idx] * SD1_SCALE
            ids = tokens[idx].clone()
            ids[torch.rand(batch, generator=g) < 0.1] = empty  # caption dropout for CFG
            t = torch.randint(len(alphas), (batch,), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            clip.cond_stage_model.reset_clip_options()
            context = encoder(ids.tolist())[0]
            pred = unet(noisy, timesteps=t.float(), context=context, transformer_options={})
            loss = ((pred - noise) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group in opt.param_groups:
                group["lr"] = 5e-4 * min(1.0, (step + 1) / 200) * (1 - step / steps) ** 0.5
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                log(f"unet step {step}: loss {float(loss.detach()):.4f}")
    finally:
        for layer in restore:
            del layer.forward
        for p in params:
            p.requires_grad_(False)


def tokens_for(clip, captions: list[str]) -> torch.Tensor:
    return torch.tensor([[int(t[0]) for t in clip.tokenize(c)["l"][0]] for c in captions])  # (N, 77)


_HOST = {}


def host_pack() -> str:
    return _HOST["name"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "nodes", "testbed_weights", "world_tiny_sd1.safetensors"))
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import comfy_host

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-world-"))
    _HOST["name"] = host.pack_name
    testbed = host.pack("nodes.testbed")
    world = host.pack("mixofshow_core.world.concepts")
    started = time.monotonic()
    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(f"[{time.monotonic() - started:7.1f}s] {text}")
        print(lines[-1], flush=True)

    torch.manual_seed(args.seed)
    images, captions = world.base_dataset(args.images, seed=args.seed)
    pixels = _pixels(images)
    with torch.inference_mode(False):
        with torch.no_grad():  # the CLIP constructor writes into its weights
            model, clip = testbed.build_model(args.seed, std=None), testbed.build_clip(args.seed, std=None)
            vae = testbed.build_vae(args.seed, std=None)
        clip.cond_stage_model.float()  # ComfyUI keeps text encoders in fp16 on CPU; AdamW needs fp32 weights
        glue = host.pack("nodes.train_glue")
        for module in (model.model, clip.cond_stage_model, vae.first_stage_model):
            glue.prepare_for_autograd(module)
        autoencoder = vae.first_stage_model
        with torch.enable_grad():
            train_vae(autoencoder, pixels, args.vae_steps, 32, args.seed, log)
        k = fold_latent_scale(autoencoder, pixels)
        log(f"latent scale folded into the autoencoder: x{k:.3f}")
        with torch.no_grad():
            latents = posterior_means(autoencoder, pixels)  # (N, 4, 8, 8)
        tokens = tokens_for(clip, captions)
        vae_seconds = time.monotonic() - started
        with torch.enable_grad():
            train_unet_and_text(model, clip, latents, tokens, args.unet_steps, args.batch, args.seed, log)
        unet_seconds = time.monotonic() - started - vae_seconds
    state = testbed.checkpoint_state(model, clip, vae)
    meta = {"mixofshow.testbed": "world_tiny_sd1", "images": str(args.images), "vae_steps": str(args.vae_steps),
            "unet_steps": str(args.unet_steps), "batch": str(args.batch), "seed": str(args.seed),
            "vae_seconds": f"{vae_seconds:.0f}", "unet_seconds": f"{unet_seconds:.0f}",
            "torch_threads": str(torch.get_num_threads())}
    host.pack("mixofshow_core.files").save_safetensors_atomic(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, args.out, meta)
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB)")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
