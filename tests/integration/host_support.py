"""Helpers for host tests: concepts fitted to a model, context recording, a real server."""
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import torch


def random_concept(host, model, clip, words=("<cat1>", "<cat2>"), seed=0, up_std=0.02, distinct_layers=True):
    """A concept fitted to (model, clip) with visible LoRA and different rows per layer."""
    layout = host.pack("nodes.model_layout")
    targets = host.pack("nodes.training.targets")
    init = host.pack("mixofshow_core.concept_init")
    layers, encoders = layout.layer_rows(model), layout.clip_encoders(clip)
    width = sum(w for _, w in encoders)
    g = torch.Generator().manual_seed(seed)
    concept = init.init_concept(list(words), [torch.randn(width, generator=g) for _ in words], layers,
                                targets.text_targets(clip), targets.unet_targets(model), seed=seed, up_std=up_std,
                                text_encoders=encoders, base_family=layout.concept_family(model))
    if distinct_layers:
        for w in words:
            concept.embeddings[w] = concept.embeddings[w] + torch.randn(layers, width, generator=g)
    return concept


def write_concept(host, concept, name):
    path = os.path.join(host.models("edloras"), name)
    host.pack("mixofshow_core.formats").WRITERS["edlora"](concept, path)
    return name


class ContextRecorder:
    """attn2_patch appended after the pack's: records what each cross-attention layer receives."""

    def __init__(self):
        self.calls = []

    def __call__(self, n, context, value, extra):
        block = extra["block"]
        self.calls.append(((block[0], block[1], extra.get("block_index", 0)), list(extra["cond_or_uncond"]),
                           context.detach().clone()))
        return n, context, value


def record_contexts(model):
    recorder = ContextRecorder()
    patched = model.clone()
    patched.set_model_attn2_patch(recorder)
    return patched, recorder


def check_fused_lora_export(cn, base, fused, exported, text, steps):
    """The fused (MODEL, CLIP) and the base with its exported fused LoRA encode ``text`` and sample alike; both
    differ from the base model."""
    fused_cond = cn.CLIPTextEncode().encode(fused[1], text)[0]
    lora_cond = cn.CLIPTextEncode().encode(exported[1], text)[0]
    assert torch.allclose(fused_cond[0][0], lora_cond[0][0], atol=1e-3)
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    a, b, plain = (cn.common_ksampler(m, 0, steps, 5.0, "euler", "normal", fused_cond, fused_cond, latent)[0]["samples"]
                   for m in (fused[0], exported[0], base))
    assert torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, plain, atol=1e-4)


def same_context(seen, expected, atol=1e-5):
    """``seen`` [N, D] equals ``expected`` [T, D], allowing the host's whole-sequence repetition."""
    if seen.shape[0] % expected.shape[0]:
        return False
    reps = seen.shape[0] // expected.shape[0]
    return torch.allclose(seen.float(), expected.float().repeat(reps, 1), atol=atol)


def reference_contexts(host, cn, clip, template, words, layers):
    """Per-layer reference via ComfyUI's own embedding files and stock CLIPTextEncode.

    ``template`` has one ``{}`` per word in ``words``; returns a list of [T, D] contexts, one per layer.
    """
    return [reference_encoding(host, cn, clip, template, words, lambda rows, layer=layer: rows[layer])[0]
            for layer in range(layers)]


def reference_encoding(host, cn, clip, template, words, pick):
    """(context [T, D], pooled [1, P]) of stock CLIPTextEncode with each word as a textual-inversion file holding
    ``pick(rows)`` ([L, D] -> [D]); with two text encoders the file has each encoder's part under its name."""
    from safetensors.torch import save_file

    registry = host.pack("nodes.concepts.layerwise").concept_registry(clip)
    encoders = host.pack("nodes.model_layout").clip_encoders(clip)
    names = []
    for word in words:
        row = pick(registry[word]["embedding"]).reshape(1, -1).clone()  # (1, D)
        parts = dict(zip([n for n, _ in encoders], row.split([w for _, w in encoders], dim=1)))
        tensors = {"emb_params": row} if len(parts) == 1 else {n: p.contiguous() for n, p in parts.items()}
        name = f"ref_{word.strip('<>')}_{hashlib.sha1(row.numpy().tobytes()).hexdigest()[:12]}"
        save_file(tensors, os.path.join(host.models("embeddings"), f"{name}.safetensors"))
        names.append(f"embedding:{name}")
    cond = cn.CLIPTextEncode().encode(clip, template.format(*names))[0]
    return cond[0][0][0], cond[0][1]["pooled_output"]


def check_recorded(recorder, table, expected_by_kind, atol=1e-4):
    """Every recorded row matches one of the contexts allowed for its kind (0 cond, 1 uncond) and layer.

    ``expected_by_kind[kind]`` is a function layer -> list of [T, D] candidates. Returns visited layers.
    """
    layers = set()
    for block, cond_or_uncond, context in recorder.calls:
        layer = table[block]
        layers.add(layer)
        per_chunk = context.shape[0] // len(cond_or_uncond)
        for chunk, kind in enumerate(cond_or_uncond):
            for row in context[chunk * per_chunk:(chunk + 1) * per_chunk]:
                candidates = expected_by_kind[kind](layer)
                assert any(same_context(row, c, atol=atol) for c in candidates), (layer, kind)
    return layers


def layer_table(host, model):
    sites = host.pack("nodes.model_layout").cross_attention_sites(model)
    return {(s.block[0], s.block[1], s.depth): s.row for s in sites}


@contextlib.contextmanager
def running_server(root, settings=None):
    """``main.py --cpu`` with this pack linked as custom_nodes/ComfyUI-Mix-of-Show and edloras at root/concepts.

    ``settings``: frontend settings (comfy.settings.json) of a fresh user directory root/user, e.g. to keep
    first-run dialogs away; without it the host's own user directory is used.
    """
    import json

    import comfy_host

    (root / "custom_nodes").mkdir(exist_ok=True)
    os.symlink(comfy_host.REPO, root / "custom_nodes" / "ComfyUI-Mix-of-Show")
    (root / "concepts").mkdir(exist_ok=True)
    (root / "paths.yaml").write_text(
        f"mos_test:\n  base_path: {root}\n  custom_nodes: custom_nodes\n  edloras: concepts\n")
    user = []
    if settings is not None:
        (root / "user" / "default").mkdir(parents=True, exist_ok=True)
        (root / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
        user = ["--user-directory", str(root / "user")]
    with comfy_server(["--extra-model-paths-config", str(root / "paths.yaml"), "--output-directory",
                       str(root / "out")] + user, root / "server.log") as url:
        yield url


PACK_FOLDER = "ComfyUI-Mix-of-Show"  # the folder name a user's custom_nodes/ gives the pack


@contextlib.contextmanager
def fresh_server(base, flags=()):
    """``main.py --cpu [flags]`` on the empty ComfyUI base directory ``base`` (a pathlib.Path) with this pack in
    base/custom_nodes and an empty input folder; yields its URL."""
    import comfy_host

    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(comfy_host.REPO, base / "custom_nodes" / PACK_FOLDER)
    (base / "input").mkdir()
    with comfy_server(["--base-directory", str(base), "--input-directory", str(base / "input"), *flags],
                      base / "server.log") as url:
        yield url


@contextlib.contextmanager
def comfy_server(args, log_path):
    """``main.py --cpu <args>`` of COMFYUI_PATH on a free port, with the shims on its path; yields its URL."""
    import comfy_host

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    shim = os.environ.get("MOS_TORCHVISION_SHIM")
    if shim:
        env["PYTHONPATH"] = shim + os.pathsep + env.get("PYTHONPATH", "")
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)] + args,
                            cwd=comfy_host.comfy_path(), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.25)
        if proc.poll() is not None:
            raise RuntimeError("ComfyUI server did not start:\n" + log_path.read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def full_size_sdxl_on_meta():
    """(MODEL, CLIP stand-in with .cond_stage_model) of SDXL at full size on the meta device: the real module tree,
    names and shapes (UNet 2.57 B parameters, CLIP-L + CLIP-G) without weights, for key-layout checks."""
    import types

    import comfy.model_patcher
    import comfy.sdxl_clip
    import comfy.supported_models

    unet = dict(use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False, adm_in_channels=2816,
                num_classes="sequential", in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
                channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                use_linear_in_transformer=True, context_dim=2048, num_head_channels=64, use_temporal_resblock=False,
                use_temporal_attention=False)
    config = comfy.supported_models.SDXL(unet)
    config.set_inference_dtype(torch.float16, None)
    model = comfy.model_patcher.ModelPatcher(config.get_model({}, device="meta"), torch.device("cpu"),
                                             torch.device("cpu"))
    clip = types.SimpleNamespace(cond_stage_model=comfy.sdxl_clip.SDXLClipModel(device="meta", dtype=torch.float16))
    return model, clip
