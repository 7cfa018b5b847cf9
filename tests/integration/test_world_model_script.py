"""The testbed training script runs end to end (a few steps) and its file loads as a working SD1 model."""
import os
import subprocess
import sys

import comfy_host
import torch


def _sample(cn, model, clip, vae, text: str, steps: int, count: int = 1):
    """``count`` 64x64 images through stock nodes: IMAGE [count, 64, 64, 3]."""
    with torch.inference_mode():
        positive = cn.CLIPTextEncode().encode(clip, text)[0]
        negative = cn.CLIPTextEncode().encode(clip, "")[0]
        latent = cn.EmptyLatentImage().generate(64, 64, count)[0]
        samples = cn.KSampler().sample(model, 0, steps, 5.0, "euler", "normal", positive, negative, latent)[0]
        return cn.VAEDecode().decode(vae, samples)[0]


def test_training_script_writes_a_checkpoint_that_samples(host, cn, tmp_path):
    out = tmp_path / "world_smoke.safetensors"
    script = os.path.join(comfy_host.REPO, "scripts", "testbed", "train_world_model.py")
    run = subprocess.run([sys.executable, script, "--images", "48", "--vae-steps", "2", "--unet-steps", "2",
                          "--batch", "8", "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env=os.environ.copy())
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"unet_steps": "2"' in run.stdout and out.stat().st_size > 1_000_000
    with torch.inference_mode():
        model, clip, vae = host.pack("nodes.testbed").load_trained(str(out))
    image = _sample(cn, model, clip, vae, "a large red striped circle, black background", 2)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_shipped_world_model_loads_through_the_loader_node(host, cn):
    testbed_nodes = host.pack("nodes.testbed_nodes")
    variants = testbed_nodes.TestbedCheckpointLoader.INPUT_TYPES()["required"]["variant"][0]
    if not os.path.isfile(testbed_nodes.WORLD_WEIGHTS):
        assert variants == [testbed_nodes.RANDOM]  # not offered without its weights
        return
    assert testbed_nodes.WORLD in variants
    with torch.inference_mode():
        model, clip, vae = testbed_nodes.TestbedCheckpointLoader().load(testbed_nodes.WORLD, 0)
    images = _sample(cn, model, clip, vae, "a large red circle, black background", 20, count=4)
    assert images.shape == (4, 64, 64, 3) and torch.isfinite(images).all()
    scorer = host.pack("mixofshow_core.world.scorer")
    colours = [scorer.recognise(image.numpy()).colour for image in images]
    assert colours.count("red") >= 3, colours  # the model draws the colour it is asked for (100 % in the eval)
