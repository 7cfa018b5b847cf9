"""Regional sampling in the real host (tiny testbed): per-layer outputs, samplers, ControlNet strength."""
import pytest
import torch
from integration.host_support import random_concept, write_concept


@pytest.fixture(scope="module")
def loaded(host, testbed):
    return _load_two(host, testbed)


@pytest.fixture(scope="module")
def loaded_sdxl(host, testbed_sdxl):
    return _load_two(host, testbed_sdxl)


def _load_two(host, testbed):
    model, clip, _ = testbed
    loader = host.pack("nodes.concepts.nodes").EDLoRALoader()
    with torch.inference_mode():
        for i, w in enumerate(("cat", "dog")):
            write_concept(host, random_concept(host, model, clip, (f"<{w}1>", f"<{w}2>"), seed=50 + i),
                          f"reg_{w}.safetensors")
            model, clip = loader.load(model, clip, f"reg_{w}.safetensors", 1.0, 1.0)
    return model, clip


def _regions(host, clip):
    node = host.pack("nodes.regions.nodes").RegionPrompt()
    regions = node.add(clip, "a <cat1> <cat2>", "ugly cat", 0.0, 0.0, 0.5, 1.0, 1.0)[0]
    return node.add(clip, "a <dog1> <dog2>", "ugly dog", 0.25, 0.0, 0.5, 1.0, 2.0, regions=regions)[0]


class Recorder:
    def __init__(self):
        self.inputs, self.outputs = [], []

    def before(self, n, context, value, extra):
        self.inputs.append((extra["block"], extra.get("block_index", 0), n.clone(), list(extra["cond_or_uncond"]),
                            list(extra["original_shape"])))
        return n, context, value

    def after(self, n, extra):
        self.outputs.append(n.clone())
        return n


@pytest.mark.parametrize("models,width,height", [("loaded", 64, 96), ("loaded_sdxl", 304, 208)])
def test_each_layer_output_is_region_attention_inside_and_global_outside(host, cn, request, models, width, height):
    """On SD1.x and on SDXL at 1216x832's aspect (its 70 layers, odd attention grids such as 19x13 and 10x7)."""
    model, clip = request.getfixturevalue(models)
    layout, layer_ctx = host.pack("nodes.model_layout"), host.pack("mixofshow_core.layer_context")
    regions_mod = host.pack("mixofshow_core.regions")
    from comfy.ldm.modules.attention import optimized_attention

    regions = _regions(host, clip)
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    positive, negative = encode.encode(clip, "two animals in a field")[0], encode.encode(clip, "blurry")[0]
    patched = host.pack("nodes.regions.nodes").ApplyRegions().apply(model, regions)[0]
    recorder = Recorder()
    patched.set_model_attn2_patch(recorder.before)
    patched.set_model_attn2_output_patch(recorder.after)
    latent = cn.EmptyLatentImage().generate(width, height, 2)[0]  # non-square, batch 2
    cn.common_ksampler(patched, 0, 1, 5.0, "euler", "normal", positive, negative, latent)
    sites = {(s.block[0], s.block[1], s.depth): s for s in layout.cross_attention_sites(model)}
    rows = layout.layer_rows(model)
    unet = model.model.diffusion_model
    checked, grids = 0, set()
    for (block, depth, n, kinds, shape), out in zip(recorder.inputs, recorder.outputs):
        site = sites[(block[0], block[1], depth)]
        attn = unet.get_submodule(site.ldm_prefix).attn2
        heads = attn.heads
        per = n.shape[0] // len(kinds)

        def context(pos, neg):
            picked = [layer_ctx.select_layer(neg if k else pos, site.row, rows) for k in kinds for _ in range(per)]
            return torch.cat(picked)

        def attend_to(ctx):
            return attn.to_out(optimized_attention(attn.to_q(n), attn.to_k(ctx), attn.to_v(ctx), heads))

        glob = attend_to(context(positive[0][0], negative[0][0]))
        per_region = [attend_to(context(rc.positive, rc.negative)) for rc in regions]
        h, w = regions_mod.attention_grid(shape[2], shape[3], n.shape[1])
        masks = [regions_mod.rasterize(rc.region, h, w)[0].reshape(-1) for rc in regions]
        weights = [rc.region.weight for rc in regions]
        expected = glob.clone()
        count = sum(wt * m.float() for wt, m in zip(weights, masks))
        mix = sum(wt * m.float()[None, :, None] * r for wt, m, r in zip(weights, masks, per_region))
        inside = count > 0
        expected[:, inside] = mix[:, inside] / count[inside][None, :, None]
        assert torch.allclose(out, expected, atol=1e-4), (site.index, h, w)
        assert inside.any() and (~inside).any()
        checked += 1
        grids.add((h, w))
    assert checked >= len(sites)
    if models == "loaded_sdxl":  # SDXL attends at 1/2 and 1/4 of the latent (26x38): odd grids both
        assert grids == {(13, 19), (7, 10)}


def test_any_sampler_works_with_apply_regions_and_regional_ksampler(host, cn, loaded):
    model, clip = loaded
    regions = _regions(host, clip)
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    positive, negative = encode.encode(clip, "two animals")[0], encode.encode(clip, "")[0]
    latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
    nodes_mod = host.pack("nodes.regions.nodes")
    a = nodes_mod.RegionalKSampler().sample(model, regions, positive, negative, latent, 3, 2, 5.0, "euler", "normal",
                                            1.0)[0]["samples"]
    patched = nodes_mod.ApplyRegions().apply(model, regions)[0]
    b = cn.common_ksampler(patched, 3, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    c = cn.KSamplerAdvanced().sample(patched, "enable", 3, 2, 5.0, "euler", "normal", positive, negative, latent,
                                     0, 10000, "disable")[0]["samples"]
    plain = cn.common_ksampler(model, 3, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(b, c, atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-4)


def test_one_box_over_the_whole_image_samples_like_the_stock_sampler_with_its_prompts(host, cn, loaded):
    """Regional sampling adds nothing of its own: a box covering the image gives, whatever the global prompt,
    the image KSampler gives for the box's prompt and negative (docs/fidelity.md, What one regional pass
    loses: the canvas)."""
    model, clip = loaded
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    region_nodes = host.pack("nodes.regions.nodes")
    latent = cn.EmptyLatentImage().generate(64, 64, 2)[0]
    with torch.inference_mode():
        regions = region_nodes.RegionPrompt().add(clip, "a <cat1> <cat2>", "ugly cat", 0.0, 0.0, 1.0, 1.0, 1.0)[0]
        boxed = region_nodes.RegionalKSampler().sample(
            model, regions, encode.encode(clip, "two animals")[0], encode.encode(clip, "blurry")[0], latent, 3, 3,
            5.0, "euler", "normal", 1.0)[0]["samples"]
        plain = cn.KSampler().sample(model, 3, 3, 5.0, "euler", "normal", encode.encode(clip, "a <cat1> <cat2>")[0],
                                     encode.encode(clip, "ugly cat")[0], latent)[0]["samples"]
        other = cn.KSampler().sample(model, 3, 3, 5.0, "euler", "normal", encode.encode(clip, "two animals")[0],
                                     encode.encode(clip, "blurry")[0], latent)[0]["samples"]
    assert torch.allclose(boxed, plain, atol=1e-5), float((boxed - plain).abs().max())
    assert not torch.allclose(boxed, other, atol=1e-3)  # the global prompt alone would give another image


@pytest.mark.parametrize("models,layout,size", [("loaded", "sd1", (64, 64)), ("loaded_sdxl", "sdxl", (304, 208))])
def test_region_control_strength_replaces_the_global_strength_inside(host, cn, request, models, layout, size):
    """With the stock Apply ControlNet, on SD1.x and on SDXL (its ControlNet reads the pooled-text ADM input too)."""
    model, clip = request.getfixturevalue(models)
    control = host.pack("testbed.nodes").TestbedControlNet().load(7, layout)[0]
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    positive, negative = encode.encode(clip, "animals")[0], encode.encode(clip, "")[0]
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    pos_c, neg_c = cn.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, hint, 0.8, 0.0, 1.0)
    node = host.pack("nodes.regions.nodes").RegionPrompt()
    regions = node.add(clip, "a <cat1> <cat2>", "", 0.0, 0.0, 0.5, 1.0, 1.0, control_strength=0.0)[0]
    pos_r, neg_r = host.pack("nodes.regions.nodes").RegionControlStrength().apply(pos_c, neg_c, regions)
    wrapped = pos_r[0][1]["control"]
    x = torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([1.0, 1.0])
    wrapped.pre_run(model.model, model.model.model_sampling.percent_to_sigma)
    import inspect

    cond = {"c_crossattn": torch.cat([positive[0][0]] * 2)}
    if layout == "sdxl":  # what the host passes an SDXL ControlNet: the model's ADM vector
        cond["y"] = model.model.encode_adm(pooled_output=torch.cat([positive[0][1]["pooled_output"]] * 2), width=64,
                                           height=64)
    args = [x, sigma, cond, 2]
    if "transformer_options" in inspect.signature(wrapped.inner.get_control).parameters:  # newer hosts
        args.append({})
    out = wrapped.get_control(*args)
    residual = next(t for t in out["output"] if t is not None)  # (B, C, h, w)
    half = residual.shape[-1] // 2
    assert torch.count_nonzero(residual[..., :half]) == 0 and torch.count_nonzero(residual[..., half:]) > 0
    latent = cn.EmptyLatentImage().generate(*size, 1)[0]
    samples = cn.common_ksampler(model, 0, 2, 5.0, "euler", "normal", pos_r, neg_r, latent)[0]["samples"]
    plain = cn.common_ksampler(model, 0, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    assert torch.isfinite(samples).all() and not torch.allclose(samples, plain, atol=1e-5)  # the control acts


# As a detector gives them (pixels of a 96x64 image, most confident first): the dog on the right, the cat left.
DETECTED = [[{"x": 48.0, "y": 0.0, "width": 48.0, "height": 64.0, "label": "dog", "score": 0.9},
             {"x": 0.0, "y": 0.0, "width": 48.0, "height": 64.0, "label": "cat", "score": 0.8}]]


def _sample_96x64(host, cn, model, clip, regions):
    encode = host.pack("nodes.concepts.nodes").EDLoRATextEncode()
    latent = cn.EmptyLatentImage().generate(96, 64, 1)[0]
    return host.pack("nodes.regions.nodes").RegionalKSampler().sample(
        model, regions, encode.encode(clip, "two animals")[0], encode.encode(clip, "blurry")[0], latent, 4, 2, 5.0,
        "euler", "normal", 1.0)[0]["samples"]


def test_region_from_a_bounding_box_samples_as_region_prompt_with_its_fractions(host, cn, loaded):
    model, clip = loaded
    region_nodes = host.pack("nodes.regions.nodes")
    from_box = region_nodes.RegionFromBoundingBox()
    image = torch.zeros(1, 64, 96, 3)  # its size wins over the 512 x 512 widgets
    boxed = from_box.add(clip, DETECTED, 0, "left to right", "a <cat1> <cat2>", "ugly cat", 512, 512, 1.0,
                         image=image)[0]
    boxed = from_box.add(clip, DETECTED, 1, "left to right", "a <dog1> <dog2>", "", 96, 64, 2.0, regions=boxed)[0]
    assert [(rc.region.x, rc.region.width) for rc in boxed] == [(0.0, 0.5), (0.5, 0.5)]
    drawn = region_nodes.RegionPrompt().add(clip, "a <cat1> <cat2>", "ugly cat", 0.0, 0.0, 0.5, 1.0, 1.0)[0]
    drawn = region_nodes.RegionPrompt().add(clip, "a <dog1> <dog2>", "", 0.5, 0.0, 0.5, 1.0, 2.0, regions=drawn)[0]
    swapped = from_box.add(clip, DETECTED, 0, "as given", "a <cat1> <cat2>", "ugly cat", 96, 64, 1.0)[0]
    swapped = from_box.add(clip, DETECTED, 1, "as given", "a <dog1> <dog2>", "", 96, 64, 2.0, regions=swapped)[0]
    a, b = _sample_96x64(host, cn, model, clip, boxed), _sample_96x64(host, cn, model, clip, drawn)
    assert torch.equal(a, b)
    assert not torch.allclose(a, _sample_96x64(host, cn, model, clip, swapped), atol=1e-3)  # cat and dog swapped


def test_region_from_a_bounding_box_names_itself_and_the_fix_on_a_bad_index(host, loaded):
    _, clip = loaded
    errors = host.pack("mixofshow_core.errors")
    with pytest.raises(errors.RegionSpecError, match=r"Region From Bounding Box: box index 2 asked, the input holds "
                                                     r"2 box\(es\)"):
        host.pack("nodes.regions.nodes").RegionFromBoundingBox().add(
            clip, DETECTED, 2, "left to right", "a <cat1> <cat2>", "", 96, 64, 1.0)


def test_a_bounding_box_primitive_feeds_a_region_in_the_executor(host):
    """Hosts with BOUNDING_BOX nodes (ComfyUI 0.2x): core's Bounding Box primitive -> region -> sampler."""
    import nodes

    import comfy_host

    if "PrimitiveBoundingBox" not in nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no BOUNDING_BOX nodes (added in 2026); check one with COMFYUI_PATH")
    prompt = {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "PrimitiveBoundingBox", "inputs": {"x": 0, "y": 0, "width": 48, "height": 64}},
        "3": {"class_type": "RegionFromBoundingBox", "inputs": {
            "clip": ["1", 1], "bboxes": ["2", 0], "index": 0, "order": "left to right", "prompt": "a red square",
            "negative": "", "image_width": 96, "image_height": 64, "weight": 1.0}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "two things"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}},
        "7": {"class_type": "RegionalKSampler", "inputs": {
            "model": ["1", 0], "regions": ["3", 0], "positive": ["4", 0], "negative": ["5", 0],
            "latent_image": ["6", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bbox_region"}},
    }
    result = comfy_host.run_prompt(prompt)
    assert result.success, result.error
    assert [i["filename"] for out in result.outputs.values() for i in out.get("images", [])]
