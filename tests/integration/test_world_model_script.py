"""The testbed training script runs end to end (a few steps) and its file loads as a working SD1 model."""
import os
import subprocess
import sys

import pytest
import safetensors.torch
import torch

import comfy_host


def _sample(cn, model, clip, vae, text: str, steps: int, count: int = 1):
    """``count`` 64x64 images through stock nodes: IMAGE [count, 64, 64, 3]."""
    with torch.inference_mode():
        positive = cn.CLIPTextEncode().encode(clip, text)[0]
        negative = cn.CLIPTextEncode().encode(clip, "")[0]
        latent = cn.EmptyLatentImage().generate(64, 64, count)[0]
        samples = cn.KSampler().sample(model, 0, steps, 5.0, "euler", "normal", positive, negative, latent)[0]
        return cn.VAEDecode().decode(vae, samples)[0]


def _train(*args: str) -> subprocess.CompletedProcess:
    script = os.path.join(comfy_host.REPO, "testbed", "scripts", "train_world_model.py")
    run = subprocess.run([sys.executable, script, "--images", "48", *args], capture_output=True, text=True,
                         timeout=600, env=os.environ.copy())
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_training_script_writes_a_checkpoint_that_samples(host, cn, tmp_path, trains):
    out = tmp_path / "world_smoke.safetensors"
    run = _train("--vae-steps", "2", "--decoder-steps", "2", "--unet-steps", "2", "--batch", "8", "--out", str(out))
    assert '"unet_steps": "2"' in run.stdout and out.stat().st_size > 1_000_000
    with torch.inference_mode():
        model, clip, vae = host.pack("testbed.model").load_trained(str(out))
    image = _sample(cn, model, clip, vae, "a large red striped circle, black background", 2)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()

    # the wide-decoder phase alone, on that file: only the decoding half changes, and the file loads with it
    wide = tmp_path / "world_wide.safetensors"
    _train("--widen-decoder-of", str(out), "--decoder", '{"ch_mult": [1, 2, 2, 2]}', "--decoder-steps", "2",
           "--out", str(wide))
    before, after = safetensors.torch.load_file(str(out)), safetensors.torch.load_file(str(wide))
    kept = [k for k in before if not k.startswith(("vae.decoder.", "vae.post_quant_conv."))]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert after["vae.decoder.conv_in.weight"].shape == (64, 4, 3, 3) != before["vae.decoder.conv_in.weight"].shape
    with torch.inference_mode():
        model, clip, vae = host.pack("testbed.model").load_trained(str(wide))
    assert vae.first_stage_model.decoder.conv_in.out_channels == 64
    image = _sample(cn, model, clip, vae, "a large red striped circle, black background", 2)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()

    # the UNet phase alone, wider, on that file's autoencoder: the autoencoder is kept, the width read back
    wider = tmp_path / "world_wider_unet.safetensors"
    run = _train("--retrain-unet-of", str(wide), "--unet-channels", "64", "--unet-steps", "2", "--batch", "8",
                 "--out", str(wider))
    assert '"autoencoder_of": "world_wide.safetensors"' in run.stdout and '"unet_channels": "64"' in run.stdout
    retrained = safetensors.torch.load_file(str(wider))
    assert all(torch.equal(after[k], retrained[k]) for k in after if k.startswith("vae."))
    assert retrained["unet.input_blocks.0.0.weight"].shape[0] == 64
    with torch.inference_mode():
        model, clip, vae = host.pack("testbed.model").load_trained(str(wider))
    assert model.model.diffusion_model.input_blocks[0][0].out_channels == 64
    image = _sample(cn, model, clip, vae, "a large red striped circle, black background", 2)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    with pytest.raises(ValueError, match="multiple of 32.*got 48"):
        host.pack("testbed.model").build_model(0, channels=48)


def test_shipped_world_model_loads_through_the_loader_node(host, cn):
    testbed_nodes = host.pack("testbed.nodes")
    variants = testbed_nodes.TestbedCheckpointLoader.INPUT_TYPES()["required"]["variant"][0]
    if not os.path.isfile(testbed_nodes.WORLD_WEIGHTS):
        assert variants == [testbed_nodes.RANDOM]  # not offered without its weights
        return
    assert testbed_nodes.WORLD in variants
    with torch.inference_mode():
        model, clip, vae = testbed_nodes.TestbedCheckpointLoader().load(testbed_nodes.WORLD, 0)
    images = _sample(cn, model, clip, vae, "a large red circle, black background", 20, count=4)
    assert images.shape == (4, 64, 64, 3) and torch.isfinite(images).all()
    scorer = host.pack("testbed.world.scorer")
    colours = [scorer.recognise(image.numpy()).colour for image in images]
    assert colours.count("red") >= 3, colours  # the model draws the colour it is asked for (100 % in the eval)
