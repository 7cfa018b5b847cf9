"""Write the UI-format example workflows (example_workflows/, and the testbed's in testbed/workflows/) from
compact descriptions.

Run after changing a node's widgets: `python scripts/build_example_workflows.py`. The files are what
the frontend saves (nodes with widgets_values, links table, version 0.4), so they load by drag and drop
and from the frontend's template browser. Each runs as opened on a fresh ComfyUI: it reads no input
files (pose and training photos are made in the graph), and its Note says what it shows, which model
files it needs and where they come from, and what to change first.
"""
from __future__ import annotations

import json
import os
import runpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "example_workflows")
TESTBED_OUT = os.path.join(REPO, "testbed", "workflows")
WORLD = runpy.run_path(os.path.join(REPO, "testbed", "world", "recipe.py"))  # plain data, no torch needed
DEFAULT_FUSE = runpy.run_path(os.path.join(REPO, "mixofshow_core", "config.py"))["FusionConfig"]()  # node defaults
NEGATIVE = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
            "worst quality, low quality")  # the official Mix-of-Show negative prompt

# type -> (inputs [(name, type)], outputs [(name, type)])
SLOTS = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "EDLoRALoader": ([("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")]),
    "EDLoRATextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "GradientFusion": ([("model", "MODEL"), ("clip", "CLIP"), ("concepts", "MOS_CONCEPTS")],
                       [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("report", "STRING")]),
    "EDLoRASaveBundle": ([("clip", "CLIP")], [("path", "STRING")]),
    "CheckpointSave": ([("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE")], []),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")]),
    "ControlNetApplyAdvanced": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                 ("control_net", "CONTROL_NET"), ("image", "IMAGE")],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "TestbedConceptDataset": ([], [("dataset", "MOS_DATASET"), ("photos", "IMAGE")]),
    "EDLoRATrain": ([("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE"), ("dataset", "MOS_DATASET")],
                    [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("concept_file", "STRING"), ("loss_plot", "IMAGE"),
                     ("validation", "IMAGE"), ("report", "STRING")]),
    "PreviewImage": ([("images", "IMAGE")], []),
    "TestbedCheckpointLoader": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "EDLoRAConceptList": ([("concepts", "MOS_CONCEPTS")], [("concepts", "MOS_CONCEPTS")]),
    "RegionBoxes": ([("clip", "CLIP"), ("image", "IMAGE"), ("regions", "MOS_REGIONS")], [("regions", "MOS_REGIONS")]),
    "RegionalKSampler": ([("model", "MODEL"), ("regions", "MOS_REGIONS"), ("positive", "CONDITIONING"),
                          ("negative", "CONDITIONING"), ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "RegionPoseSkeleton": ([("regions", "MOS_REGIONS")], [("pose", "IMAGE")]),
    "LoRAAsConcept": ([("concepts", "MOS_CONCEPTS")], [("concepts", "MOS_CONCEPTS"), ("found", "STRING")]),
    "PreviewAny": ([("source", "*")], []),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "LoraLoader": ([("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")]),
    "CreateHookLora": ([("prev_hooks", "HOOKS")], [("HOOKS", "HOOKS")]),
    "SetClipHooks": ([("clip", "CLIP"), ("hooks", "HOOKS")], [("CLIP", "CLIP")]),
    "SolidMask": ([], [("MASK", "MASK")]),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], [("MASK", "MASK")]),
    "PairConditioningSetPropertiesAndCombine": (
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("positive_NEW", "CONDITIONING"),
         ("negative_NEW", "CONDITIONING"), ("mask", "MASK"), ("hooks", "HOOKS"), ("timesteps", "TIMESTEPS_RANGE")],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "Note": ([], []),
}
NOTE_WIDTH = 500  # the Note sits left of the graph, which moves right by this much and a gap
NOTE_STYLE = {"color": "#432", "bgcolor": "#653"}  # the frontend's own Note colours

# What each workflow needs besides the pack: model files only, each named with where it comes from.
SD15 = ("- models/checkpoints/v1-5-pruned-emaonly.safetensors: Stable Diffusion 1.5, from the Hugging Face repo "
        "runwayml/stable-diffusion-v1-5 (now stable-diffusion-v1-5/stable-diffusion-v1-5). Another SD1.x "
        "checkpoint works too: pick it in Load Checkpoint.")
OPENPOSE = ("- models/controlnet/control_v11p_sd15_openpose_fp16.safetensors: the SD1.5 openpose ControlNet, from "
            "the Hugging Face repo comfyanonymous/ControlNet-v1-1_fp16_safetensors.")
SDXL = ("- models/checkpoints/Illustrious-XL-v0.1.safetensors: Illustrious XL, from the Hugging Face repo "
        "OnomaAIResearch/Illustrious-xl-early-release-v0. Any SDXL-family checkpoint works (SDXL base, NoobAI, Pony, "
        "their fine-tunes): pick it in Load Checkpoint.")
OPENPOSE_XL = ("- models/controlnet/OpenPoseXL2.safetensors: an SDXL openpose ControlNet, from the Hugging Face repo "
               "thibaud/controlnet-openpose-sdxl-1.0.")
CHECKPOINT = {"sd1": "v1-5-pruned-emaonly.safetensors", "sdxl": "Illustrious-XL-v0.1.safetensors"}


def concepts_line(names, family: str = "sd1") -> str:
    files = ", ".join(f"{n}.safetensors" for n in names)
    if family == "sdxl":
        return (f"- models/edloras/{files}: ED-LoRA concept files made for this SDXL-family checkpoint, trained with "
                "sdxl_train_one_concept.json. Pick yours in the loader and write its words in the prompts.")
    return (f"- models/edloras/{files}: ED-LoRA concept files, e.g. from the Mix-of-Show release "
            "(github.com/TencentARC/Mix-of-Show; its .pth files load as they are) or trained with "
            "train_one_concept.json. Pick yours in the loader and write its words in the prompts.")


def note(title: str, shows: str, models: list[str], change: str) -> str:
    return "\n\n".join([title, "What it shows: " + shows,
                        "Models you place (nothing else is needed):\n" + "\n".join(models),
                        "Change first: " + change])


def build(nodes: list[dict], title: str, text: str) -> dict:
    """nodes: {id, type, pos, widgets, links: {input_name: (from_id, from_slot)}}; ``text``: the Note, placed
    left of the graph (id one above the others, so the other ids stay as the demo and tests know them)."""
    nodes = [{**n, "pos": [n["pos"][0] + NOTE_WIDTH + 40, n["pos"][1]]} for n in nodes]
    nodes.append({"id": max(n["id"] for n in nodes) + 1, "type": "Note", "pos": [20, 20], "size": [NOTE_WIDTH, 560],
                  "widgets": [text], "style": NOTE_STYLE})
    links, by_id = [], {n["id"]: n for n in nodes}
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes = []
    for n in nodes:
        inputs = []
        for name, kind in SLOTS[n["type"]][0]:
            src = n.get("links", {}).get(name)
            link_id = None
            if src is not None:
                link_id = len(links) + 1
                source_type = SLOTS[by_id[src[0]]["type"]][1][src[1]][1]  # a "*" input takes any type
                links.append([link_id, src[0], src[1], n["id"], len(inputs), source_type])
                out_links.setdefault(src, []).append(link_id)
            inputs.append({"name": name, "type": kind, "link": link_id})
        ui_nodes.append({"id": n["id"], "type": n["type"], "pos": n["pos"], "size": n.get("size", [320, 120]),
                         "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
                         "properties": {"Node name for S&R": n["type"]}, "widgets_values": n.get("widgets", []),
                         **n.get("style", {})})
    for u in ui_nodes:
        u["outputs"] = [{"name": name, "type": kind, "links": out_links.get((u["id"], slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(SLOTS[u["type"]][1])]
    order = {nid: i for i, nid in enumerate(_topological(nodes, by_id))}
    for u in ui_nodes:
        u["order"] = order[u["id"]]
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"title": title}, "version": 0.4}


def _topological(nodes, by_id):
    done, seen = [], set()

    def visit(nid):
        if nid in seen:
            return
        seen.add(nid)
        for src in by_id[nid].get("links", {}).values():
            visit(src[0])
        done.append(nid)

    for n in nodes:
        visit(n["id"])
    return done


def sampling_tail(model_src, clip_src, positive_text, width, height, first_id):
    i = first_id
    return [
        {"id": i, "type": "EDLoRATextEncode", "pos": [900, 80], "size": [400, 160], "widgets": [positive_text],
         "links": {"clip": clip_src}},
        {"id": i + 1, "type": "EDLoRATextEncode", "pos": [900, 280], "size": [400, 160], "widgets": [NEGATIVE],
         "links": {"clip": clip_src}},
        {"id": i + 2, "type": "EmptyLatentImage", "pos": [900, 480], "widgets": [width, height, 1]},
        {"id": i + 3, "type": "KSampler", "pos": [1340, 80], "size": [320, 262],
         "widgets": [0, "fixed", 30, 7.5, "dpmpp_2m", "karras", 1.0],
         "links": {"model": model_src, "positive": (i, 0), "negative": (i + 1, 0), "latent_image": (i + 2, 0)}},
        {"id": i + 4, "type": "VAEDecode", "pos": [1700, 80], "links": {"samples": (i + 3, 0), "vae": (1, 2)}},
        {"id": i + 5, "type": "SaveImage", "pos": [1940, 80], "size": [320, 340], "widgets": ["mixofshow"],
         "links": {"images": (i + 4, 0)}},
    ]


def single_concept():
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": ["v1-5-pruned-emaonly.safetensors"]},
        {"id": 2, "type": "EDLoRALoader", "pos": [440, 120], "size": [380, 130],
         "widgets": ["potter.safetensors", 0.7, 0.7], "links": {"model": (1, 0), "clip": (1, 1)}},
    ]
    nodes += sampling_tail((2, 0), (2, 1), "a <potter1> <potter2> in a forest, walking, best quality", 512, 768, 3)
    return build(nodes, "ED-LoRA: one concept", note(
        "ED-LoRA: one concept",
        "an ED-LoRA concept (Mix-of-Show) loaded onto SD1.5 and sampled. ED-LoRA Loader adds the concept's LoRA "
        "and its words; ED-LoRA Text Encode gives each cross-attention layer of the UNet its own embedding of "
        "<potter1> <potter2>, as the paper does.",
        [SD15, concepts_line(["potter"])],
        "the concept file in ED-LoRA Loader, then its words (<potter1> <potter2>) in the prompt: write the words "
        "your concept was trained with."))


def two_concepts():
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": ["v1-5-pruned-emaonly.safetensors"]},
        {"id": 2, "type": "EDLoRALoader", "pos": [440, 40], "size": [380, 130],
         "widgets": ["potter.safetensors", 0.7, 0.7], "links": {"model": (1, 0), "clip": (1, 1)}},
        {"id": 3, "type": "EDLoRALoader", "pos": [440, 220], "size": [380, 130],
         "widgets": ["hermione.safetensors", 0.7, 0.7], "links": {"model": (2, 0), "clip": (2, 1)}},
    ]
    nodes += sampling_tail((3, 0), (3, 1), "a <potter1> <potter2> and a <hermione1> <hermione2>, in a library",
                           768, 512, 4)
    return build(nodes, "ED-LoRA: two concepts chained", note(
        "ED-LoRA: two concepts chained",
        "two ED-LoRA Loaders in a chain and both concepts' words in one prompt. Chained, the two LoRAs simply add "
        "up; fuse_three_concepts.json merges concepts with Gradient Fusion, and regional_two_concepts_pose.json "
        "puts each concept in its own box.",
        [SD15, concepts_line(["potter", "hermione"])],
        "the two concept files, then their words in the prompt."))


def fuse_three(family: str = "sd1", names=("potter", "hermione", "thanos")):
    nodes = [{"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": [CHECKPOINT[family]]}]
    resolution = 1024 if family == "sdxl" else DEFAULT_FUSE.resolution
    for i, name in enumerate(names):
        prev = (1, 0) if i == 0 else (2 + i - 1, 0)
        prev_clip = (1, 1) if i == 0 else (2 + i - 1, 1)
        nodes.append({"id": 2 + i, "type": "EDLoRALoader", "pos": [420, 40 + 170 * i], "size": [380, 130],
                      "widgets": [f"{name}.safetensors", 1.0, 1.0], "links": {"model": prev, "clip": prev_clip}})
    nodes.append({"id": 5, "type": "GradientFusion", "pos": [840, 120], "size": [340, 320],
                  "widgets": ["closed_form", DEFAULT_FUSE.steps, resolution, 0, "fixed", DEFAULT_FUSE.ridge, 500, 500,
                              50, DEFAULT_FUSE.accumulate_fp64, "", DEFAULT_FUSE.anchor, DEFAULT_FUSE.spatial_ridge,
                              DEFAULT_FUSE.text_inputs, DEFAULT_FUSE.kv_targets],
                  "links": {"model": (1 + len(names), 0), "clip": (1 + len(names), 1)}})
    fused = "fused_" + "_".join(names)
    nodes.append({"id": 6, "type": "EDLoRASaveBundle", "pos": [1220, 420], "widgets": [fused],
                  "links": {"clip": (5, 1)}})
    nodes.append({"id": 7, "type": "CheckpointSave", "pos": [1220, 580], "widgets": [f"checkpoints/{fused}"],
                  "links": {"model": (5, 0), "clip": (5, 1), "vae": (1, 2)}})
    people = [f"a <{n}1> <{n}2>" for n in names]
    size = (1216, 832) if family == "sdxl" else (768, 512)
    nodes += sampling_tail((5, 0), (5, 1), ", ".join(people[:-1]) + f" and {people[-1]} standing in a castle hall",
                           *size, 8)
    for n in nodes[-6:]:
        n["pos"] = [n["pos"][0] + 340, n["pos"][1]]
    count = {2: "two", 3: "three"}.get(len(names), str(len(names)))
    title = f"Gradient fusion{' on SDXL' if family == 'sdxl' else ''}: {count} concepts, save, sample"
    extra = (" On SDXL both text encoders are fused, and features are collected at 1024 px (the node's resolution)."
             if family == "sdxl" else "")
    return build(nodes, title, note(
        title,
        f"Gradient Fusion merges the concepts of the chained ED-LoRA Loaders into one model, so that all "
        f"{count} can appear in one picture. The fused words are saved as a bundle (ED-LoRA Save Bundle, "
        f"models/edloras) and the fused model as a checkpoint (output/checkpoints), then one image is sampled."
        + extra,
        [SDXL if family == "sdxl" else SD15, concepts_line(names, family)],
        f"the {count} concept files, then their words in the prompt; the names the two save nodes write."))


def regional_pose(family: str = "sd1", names=("potter", "hermione")):
    """Two concepts in two boxes; Region Pose Skeleton draws the pose from the boxes (no pose file). The boxes
    leave the right third of the canvas free, so a drag there draws a third box instead of moving one."""
    boxes = {"version": 1, "regions": [
        {"x": 0.06, "y": 0.05, "width": 0.3, "height": 0.9, "prompt": f"a <{names[0]}1> <{names[0]}2>, standing",
         "negative": NEGATIVE, "weight": 1.0},
        {"x": 0.38, "y": 0.05, "width": 0.3, "height": 0.9, "prompt": f"a <{names[1]}1> <{names[1]}2>, standing",
         "negative": NEGATIVE, "weight": 1.0}]}
    width, height = (1216, 832) if family == "sdxl" else (768, 512)
    controlnet = "OpenPoseXL2.safetensors" if family == "sdxl" else "control_v11p_sd15_openpose_fp16.safetensors"
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [20, 100], "widgets": [CHECKPOINT[family]]},
        {"id": 2, "type": "EDLoRALoader", "pos": [380, 20], "size": [360, 130],
         "widgets": [f"{names[0]}.safetensors", 0.7, 0.7], "links": {"model": (1, 0), "clip": (1, 1)}},
        {"id": 3, "type": "EDLoRALoader", "pos": [380, 180], "size": [360, 130],
         "widgets": [f"{names[1]}.safetensors", 0.7, 0.7], "links": {"model": (2, 0), "clip": (2, 1)}},
        {"id": 4, "type": "RegionPoseSkeleton", "pos": [1220, 400], "size": [320, 110], "widgets": [width, height],
         "links": {"regions": (9, 0)}},
        {"id": 5, "type": "ControlNetLoader", "pos": [20, 360], "widgets": [controlnet]},
        {"id": 6, "type": "EDLoRATextEncode", "pos": [780, 20], "size": [380, 140],
         "widgets": ["two people standing side by side in a library, best quality"], "links": {"clip": (3, 1)}},
        {"id": 7, "type": "EDLoRATextEncode", "pos": [780, 190], "size": [380, 140], "widgets": [NEGATIVE],
         "links": {"clip": (3, 1)}},
        {"id": 8, "type": "ControlNetApplyAdvanced", "pos": [1220, 20], "widgets": [1.0, 0.0, 1.0],
         "links": {"positive": (6, 0), "negative": (7, 0), "control_net": (5, 0), "image": (4, 0)}},
        {"id": 9, "type": "RegionBoxes", "pos": [780, 360], "size": [400, 620],
         "widgets": [json.dumps(boxes), width, height], "links": {"clip": (3, 1)}},
        {"id": 10, "type": "EmptyLatentImage", "pos": [1220, 240], "widgets": [width, height, 1]},
        {"id": 11, "type": "RegionalKSampler", "pos": [1580, 20], "size": [340, 300],
         "widgets": [0, "fixed", 30, 7.5, "dpmpp_2m", "karras", 1.0],
         "links": {"model": (3, 0), "regions": (9, 0), "positive": (8, 0), "negative": (8, 1),
                   "latent_image": (10, 0)}},
        {"id": 12, "type": "VAEDecode", "pos": [1960, 20], "links": {"samples": (11, 0), "vae": (1, 2)}},
        {"id": 13, "type": "SaveImage", "pos": [2200, 20], "size": [320, 340], "widgets": ["mixofshow_regions"],
         "links": {"images": (12, 0)}},
        {"id": 14, "type": "PreviewImage", "pos": [1220, 550], "size": [320, 260], "links": {"images": (4, 0)}},
    ]
    sdxl = family == "sdxl"
    title = f"Regions{' on SDXL' if sdxl else ''}: two concepts in two boxes with a pose ControlNet"
    return build(nodes, title, note(
        f"Regions{' on SDXL' if sdxl else ''}: two concepts in two boxes with an openpose ControlNet",
        "Region Boxes gives each concept its own box and prompt; Region Pose Skeleton draws a standing OpenPose "
        "figure in every box (the pose shows in the preview after a run), which the openpose ControlNet follows; "
        "Regional KSampler samples all boxes in one pass." + (
            " On SDXL, at 1216 x 832 (one of its trained sizes): the concepts were trained, or fused, on this "
            "SDXL-family checkpoint." if sdxl else ""),
        [SDXL if sdxl else SD15, OPENPOSE_XL if sdxl else OPENPOSE, concepts_line(names, family)],
        "the two concept files, then the words in the box prompts (click a box in Region Boxes to edit its "
        "prompt). To add a person, drag on the free right part of the Region Boxes editor to draw a third box and "
        "give it a prompt: a third figure appears in the pose. Keep Empty Latent Image, Region Boxes "
        f"(image_width, image_height) and Region Pose Skeleton at the same size ({width} x {height}). For a pose "
        "image of your own, connect a Load Image to Apply ControlNet's image instead (and to Region Boxes' image "
        "to see it behind the boxes)."))


def lora_characters(names=("miku", "rin"), triggers=("hatsune miku", "kagamine rin")):
    """Two standard LoRAs fused and placed in boxes (top row), against both LoRAs stacked with one prompt (middle)
    and ComfyUI's hook LoRAs on each box's mask (bottom): the same seed, three saved images."""
    width, height = 1216, 832
    boxes = [{"x": 0.04, "y": 0.05, "width": 0.34, "height": 0.9}, {"x": 0.4, "y": 0.05, "width": 0.34, "height": 0.9}]
    prompts = [f"{triggers[0]}, standing, smiling", f"{triggers[1]}, standing, waving"]
    spec = {"version": 1, "regions": [dict(b, prompt=p, negative=NEGATIVE, weight=1.0) for b, p in zip(boxes, prompts)]}
    scene = "two girls standing side by side on a concert stage, best quality"
    sample = [0, "fixed", 30, 7.0, "dpmpp_2m", "karras", 1.0]
    files = [f"{n}.safetensors" for n in names]

    def tail(i, y, sampler, links, prefix):
        return [{"id": i, "type": sampler, "pos": [2160, y], "size": [320, 290], "widgets": list(sample),
                 "links": {**links, "latent_image": (9, 0)}},
                {"id": i + 1, "type": "VAEDecode", "pos": [2520, y], "links": {"samples": (i, 0), "vae": (1, 2)}},
                {"id": i + 2, "type": "SaveImage", "pos": [2760, y], "size": [320, 340], "widgets": [prefix],
                 "links": {"images": (i + 1, 0)}}]

    fusion = DEFAULT_FUSE
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [20, 40], "widgets": [CHECKPOINT["sdxl"]]},
        {"id": 2, "type": "LoRAAsConcept", "pos": [380, 40], "size": [360, 150],
         "widgets": [files[0], triggers[0], 1.0, 1.0]},
        {"id": 3, "type": "LoRAAsConcept", "pos": [380, 230], "size": [360, 150],
         "widgets": [files[1], triggers[1], 1.0, 1.0], "links": {"concepts": (2, 0)}},
        {"id": 4, "type": "GradientFusion", "pos": [780, 40], "size": [340, 330],
         "widgets": ["closed_form", fusion.steps, 1024, 0, "fixed", fusion.ridge, 500, 500, 50,
                     fusion.accumulate_fp64, "", fusion.anchor, fusion.spatial_ridge, fusion.text_inputs,
                     fusion.kv_targets],
         "links": {"model": (1, 0), "clip": (1, 1), "concepts": (3, 0)}},
        {"id": 5, "type": "PreviewAny", "pos": [780, 410], "size": [340, 220], "links": {"source": (4, 2)}},
        {"id": 6, "type": "RegionBoxes", "pos": [1160, 40], "size": [400, 560],
         "widgets": [json.dumps(spec), width, height], "links": {"clip": (4, 1)}},
        {"id": 7, "type": "CLIPTextEncode", "pos": [1600, 40], "size": [380, 140], "widgets": [scene],
         "links": {"clip": (4, 1)}},
        {"id": 8, "type": "CLIPTextEncode", "pos": [1600, 220], "size": [380, 140], "widgets": [NEGATIVE],
         "links": {"clip": (4, 1)}},
        {"id": 9, "type": "EmptyLatentImage", "pos": [20, 220], "widgets": [width, height, 1]},
        {"id": 13, "type": "PreviewAny", "pos": [380, 420], "size": [360, 160], "links": {"source": (3, 1)}},
    ]
    nodes += tail(10, 40, "RegionalKSampler", {"model": (4, 0), "regions": (6, 0), "positive": (7, 0),
                                               "negative": (8, 0)}, "lora_characters_fused")
    # baseline 1: both LoRAs stacked, one prompt naming both
    y = 700
    nodes += [
        {"id": 20, "type": "LoraLoader", "pos": [380, y], "size": [360, 130], "widgets": [files[0], 1.0, 1.0],
         "links": {"model": (1, 0), "clip": (1, 1)}},
        {"id": 21, "type": "LoraLoader", "pos": [780, y], "size": [340, 130], "widgets": [files[1], 1.0, 1.0],
         "links": {"model": (20, 0), "clip": (20, 1)}},
        {"id": 22, "type": "CLIPTextEncode", "pos": [1600, y], "size": [380, 140],
         "widgets": [f"{triggers[0]} and {triggers[1]} standing side by side on a concert stage, best quality"],
         "links": {"clip": (21, 1)}},
        {"id": 23, "type": "CLIPTextEncode", "pos": [1600, y + 180], "size": [380, 140], "widgets": [NEGATIVE],
         "links": {"clip": (21, 1)}},
    ]
    nodes += tail(24, y, "KSampler", {"model": (21, 0), "positive": (22, 0), "negative": (23, 0)},
                  "lora_characters_stacked")
    # baseline 2: ComfyUI's hook LoRAs, each on its box's mask (the sampler runs once per hooked group)
    y = 1120
    nodes += [{"id": 30, "type": "SolidMask", "pos": [20, y + 400], "widgets": [0.0, width, height]}]
    combined = ((31, 0), (32, 0))  # the scene prompt; each box's pair is combined onto it
    for k, (box, prompt) in enumerate(zip(boxes, prompts)):
        i, row = 40 + 10 * k, y + 300 * k
        x0, y0 = round(box["x"] * width), round(box["y"] * height)
        w, h = round(box["width"] * width), round(box["height"] * height)
        nodes += [
            {"id": i, "type": "CreateHookLora", "pos": [380, row], "size": [360, 110], "widgets": [files[k], 1.0, 1.0]},
            {"id": i + 1, "type": "SetClipHooks", "pos": [780, row], "size": [340, 110], "widgets": [True, False],
             "links": {"clip": (1, 1), "hooks": (i, 0)}},
            {"id": i + 2, "type": "CLIPTextEncode", "pos": [1160, row], "size": [400, 110], "widgets": [prompt],
             "links": {"clip": (i + 1, 0)}},
            {"id": i + 3, "type": "CLIPTextEncode", "pos": [1160, row + 140], "size": [400, 110],
             "widgets": [NEGATIVE], "links": {"clip": (i + 1, 0)}},
            {"id": i + 4, "type": "SolidMask", "pos": [380, y + 620 + 160 * k], "widgets": [1.0, w, h]},
            {"id": i + 5, "type": "MaskComposite", "pos": [780, y + 620 + 160 * k], "widgets": [x0, y0, "add"],
             "links": {"destination": (30, 0), "source": (i + 4, 0)}},
            {"id": i + 6, "type": "PairConditioningSetPropertiesAndCombine", "pos": [1600, row], "size": [380, 230],
             "widgets": [1.0, "default"], "links": {"positive": combined[0], "negative": combined[1],
                                                    "positive_NEW": (i + 2, 0), "negative_NEW": (i + 3, 0),
                                                    "mask": (i + 5, 0)}},
        ]
        combined = ((i + 6, 0), (i + 6, 1))
    nodes += [
        {"id": 31, "type": "CLIPTextEncode", "pos": [1160, y + 620], "size": [400, 110], "widgets": [scene],
         "links": {"clip": (1, 1)}},
        {"id": 32, "type": "CLIPTextEncode", "pos": [1160, y + 760], "size": [400, 110], "widgets": [NEGATIVE],
         "links": {"clip": (1, 1)}},
    ]
    nodes += tail(60, y, "KSampler", {"model": (1, 0), "positive": combined[0], "negative": combined[1]},
                  "lora_characters_hooks")
    title = "Two LoRA characters side by side on SDXL: fused and in boxes, against stacked LoRAs and hook LoRAs"
    return build(nodes, title, note(
        title,
        "two ordinary character LoRAs (kohya, LyCORIS or diffusers files in models/loras) become concepts with "
        "LoRA as Concept; Gradient Fusion merges them into one model in which each answers to its own trigger; "
        "Region Boxes and Regional KSampler place each in its box in one sampling pass (top row). With the same "
        "seed, the two things a user would try instead: both LoRAs stacked with LoraLoader and one prompt (middle "
        "row: the characters tend to share hair, clothes and faces), and ComfyUI's hook LoRAs on each box's mask "
        "(bottom row: the sampler runs once per hooked group). Each row saves its own image. The Preview Any nodes "
        "show the fusion report and what the LoRA files say about their triggers.",
        [SDXL, f"- models/loras/{files[0]}, {files[1]}: two character LoRAs made for this SDXL-family checkpoint "
               "(any trainer: kohya, LyCORIS, diffusers)."],
        "the two LoRA files (in LoRA as Concept, LoraLoader and Create Hook LoRA) and their trigger words "
        "(trigger_words; empty reads them from the file), then the same words in the box prompts (click a box in "
        "Region Boxes to edit it) and in the stacked prompt. If you move a box, move its mask in the bottom row too "
        f"(Solid Mask size, Mask Composite x and y, in pixels of the {width} x {height} image)."))


def _train_widgets(name: str, words: str, init: str, options: dict, slot: int = 0,
                   validation: tuple = ("", 0, 20, 7.5)) -> list:
    """EDLoRATrain widget values in input order (required, then optional): the paper's recipe with
    ``options`` (input names) overriding; ``validation`` = (prompts, every, steps, cfg)."""
    o = {"steps": 0, "batch_size": 2, "resolution": 512, "lr_embedding": 1e-3, "lr_text": 1e-5, "lr_unet": 1e-4,
         "emb_norm_threshold": 0.55, "attn_reg_weight": 0.01, "crop": "paper", "templates": "human",
         "gradient_checkpointing": False, **options}
    return [name, words, init, o["steps"], 500, o["batch_size"], o["resolution"], 0, "fixed", True,
            "edlora", slot, o["lr_embedding"], o["lr_text"], o["lr_unet"], 4, 1.0, 0.01, True, 0.01, True, False,
            o["attn_reg_weight"], False, o["emb_norm_threshold"], o["crop"], o["templates"], True, "auto",
            o["gradient_checkpointing"], 100,
            *validation]


def train_one(family: str = "sd1"):
    """Train a concept (paper defaults), then sample it with the returned MODEL/CLIP. The photos come from the
    testbed world (Testbed Concept Dataset), so the workflow runs as opened; a user swaps in their own."""
    sdxl = family == "sdxl"
    options = {"resolution": 1024, "gradient_checkpointing": True} if sdxl else {}
    train_widgets = _train_widgets("my_concept", "<mychar1> <mychar2>", "<rand-0.013> toy", options, validation=(
        "a photo of <mychar1> <mychar2>\n<mychar1> <mychar2> on the beach", 500, 30, 7.5))
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": [CHECKPOINT[family]]},
        {"id": 2, "type": "TestbedConceptDataset", "pos": [40, 300], "size": [360, 130],
         "widgets": ["rubo", 6, 0]},
        {"id": 3, "type": "EDLoRATrain", "pos": [440, 60], "size": [400, 900], "widgets": train_widgets,
         "links": {"model": (1, 0), "clip": (1, 1), "vae": (1, 2), "dataset": (2, 0)}},
        {"id": 4, "type": "PreviewImage", "pos": [440, 1000], "size": [400, 300], "links": {"images": (3, 3)}},
    ]
    size = 1024 if sdxl else 512
    nodes += sampling_tail((3, 0), (3, 1), "a <mychar1> <mychar2> in a garden, best quality", size, size, 5)
    title = f"Train one ED-LoRA concept{' on SDXL' if sdxl else ''}, then sample it"
    return build(nodes, title, note(
        title,
        "ED-LoRA Train with the paper's recipe (steps 0 = the photos x 500 repeats / batch size) writes "
        "models/edloras/my_concept.safetensors, a loss plot and validation images, and the trained concept is "
        "sampled right away. So that it runs as opened, the photos are samples: Testbed Concept Dataset gives 6 "
        "photos of rubo (a red circle with yellow dots) from the pack's synthetic world, with captions and masks."
        + (" On SDXL both text encoders train, at 1024 px with gradient checkpointing (about 12-14 GB of GPU "
           "memory, estimated)." if sdxl else ""),
        [SDXL if sdxl else SD15],
        "your photos: replace Testbed Concept Dataset by ED-LoRA Dataset From Folder (a folder under "
        "ComfyUI/input, e.g. training/my_concept: name.png with an optional caption name.txt containing <TOK> and "
        "an optional mask masks/name.png) or by ED-LoRA Dataset (an IMAGE batch, e.g. from Load Image). Then in "
        "ED-LoRA Train: concept_name, words, and init's class word (man, woman, dog, ...), and the words in the "
        f"prompts. Training {'SDXL' if sdxl else 'SD1.5'} wants a GPU; on a CPU, try "
        "testbed/workflows/world_1_train_concepts.json (drag it in)."))


def world_train():
    """Demo, part 1: train the world's demo concepts from their photos on the built-in world model."""
    names = WORLD["DEMO_CONCEPTS"]
    nodes = [{"id": 1, "type": "TestbedCheckpointLoader", "pos": [40, 120], "widgets": ["world-tiny-sd1", 0, "fixed"]}]
    for i, name in enumerate(names):
        y = 40 + 420 * i
        nodes.append({"id": 2 + 3 * i, "type": "TestbedConceptDataset", "pos": [40, 300 + y], "size": [360, 130],
                      "widgets": [name, 6, 0]})
        nodes.append({"id": 3 + 3 * i, "type": "EDLoRATrain", "pos": [440, y], "size": [400, 380],
                      "widgets": _train_widgets(name, f"<{name}1> <{name}2>", "<rand-0.013> toy", WORLD["TRAIN"]),
                      "links": {"model": (1, 0), "clip": (1, 1), "vae": (1, 2), "dataset": (2 + 3 * i, 0)}})
        nodes.append({"id": 4 + 3 * i, "type": "PreviewImage", "pos": [880, y], "size": [300, 300],
                      "links": {"images": (3 + 3 * i, 3)}})
    files = ", ".join(f"models/edloras/{n}.safetensors" for n in names)
    return build(nodes, "World demo 1: train three concepts on the built-in world model", note(
        "World demo 1 (run it first): train three concepts on the built-in world model",
        "training on the pack's own tiny SD1-layout model, trained on a synthetic world of coloured shapes: no "
        "downloads, and it runs on a CPU. Testbed Concept Dataset gives each novel concept's photos (64 x 64), "
        f"captions and masks; ED-LoRA Train learns {', '.join(names)} and writes {files}. Then open "
        "world_2_fuse_and_regions.json, which fuses these three files and places them in boxes.",
        ["- none: the world model (Testbed Checkpoint Loader, world-tiny-sd1) ships with the pack."],
        "a concept in a Testbed Concept Dataset (8 to pick from) together with concept_name and words in its "
        "ED-LoRA Train, or steps for a shorter or longer run."))


def world_regions():
    """Demo, part 2: fuse the three trained concepts, then one regional pass and one global-only pass, on the
    canvas where each box is 64 px (the size the model learnt), so each concept is drawn large."""
    names = WORLD["DEMO_CONCEPTS"]
    sample, fuse = WORLD["SAMPLE"], WORLD["FUSE"]
    width, height = WORLD["BOX_CANVAS"][len(names)]
    boxes = {"version": 1, "regions": [
        {"x": x, "y": y, "width": w, "height": h, "prompt": f"<{n}1> <{n}2>, large, black background",
         "negative": "", "weight": 1.0} for n, (x, y, w, h) in zip(names, WORLD["LAYOUTS"][len(names)])]}
    scene = " and ".join(f"<{n}1> <{n}2>" for n in names) + ", black background"
    sampler = [0, "fixed", sample["steps"], sample["cfg"], sample["sampler"], sample["scheduler"], 1.0]
    nodes = [{"id": 1, "type": "TestbedCheckpointLoader", "pos": [40, 120], "widgets": ["world-tiny-sd1", 0, "fixed"]}]
    for i, name in enumerate(names):
        nodes.append({"id": 2 + i, "type": "EDLoRAConceptList", "pos": [40, 320 + 150 * i], "size": [340, 110],
                      "widgets": [f"{name}.safetensors", 1.0, 1.0], "links": {"concepts": (1 + i, 0)} if i else {}})
    nodes += [
        {"id": 5, "type": "GradientFusion", "pos": [420, 120], "size": [340, 320],
         "widgets": ["closed_form", fuse["steps"], fuse["resolution"], fuse["seed"], "fixed", fuse["ridge"], 500, 500,
                     50, DEFAULT_FUSE.accumulate_fp64, "", "base", fuse["ridge"],  # world recipe: one ridge everywhere
                     DEFAULT_FUSE.text_inputs, fuse["kv_targets"]],
         "links": {"model": (1, 0), "clip": (1, 1), "concepts": (4, 0)}},
        {"id": 6, "type": "EDLoRATextEncode", "pos": [800, 40], "size": [380, 120], "widgets": [scene],
         "links": {"clip": (5, 1)}},
        {"id": 7, "type": "EDLoRATextEncode", "pos": [800, 190], "size": [380, 120], "widgets": [""],
         "links": {"clip": (5, 1)}},
        {"id": 8, "type": "RegionBoxes", "pos": [800, 340], "size": [400, 520],
         "widgets": [json.dumps(boxes), width, height], "links": {"clip": (5, 1)}},
        {"id": 9, "type": "EmptyLatentImage", "pos": [800, 900], "widgets": [width, height, 8]},
        {"id": 10, "type": "RegionalKSampler", "pos": [1240, 40], "size": [340, 300], "widgets": sampler,
         "links": {"model": (5, 0), "regions": (8, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (9, 0)}},
        {"id": 11, "type": "VAEDecode", "pos": [1620, 40], "links": {"samples": (10, 0), "vae": (1, 2)}},
        {"id": 12, "type": "SaveImage", "pos": [1860, 40], "size": [320, 340], "widgets": ["world_regions"],
         "links": {"images": (11, 0)}},
        {"id": 13, "type": "KSampler", "pos": [1240, 400], "size": [340, 262], "widgets": sampler,
         "links": {"model": (5, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (9, 0)}},
        {"id": 14, "type": "VAEDecode", "pos": [1620, 400], "links": {"samples": (13, 0), "vae": (1, 2)}},
        {"id": 15, "type": "SaveImage", "pos": [1860, 400], "size": [320, 340], "widgets": ["world_global_only"],
         "links": {"images": (14, 0)}},
    ]
    return build(nodes, "World demo 2: fuse three concepts, then place them in three boxes", note(
        "World demo 2 (run world_1_train_concepts.json first): fuse three concepts, then place them in boxes",
        f"Gradient Fusion merges the three concepts that world_1_train_concepts.json trained ({', '.join(names)}) "
        f"into one model; Regional KSampler draws each in its own box of Region Boxes, and KSampler samples the "
        f"same prompt without regions, for comparison: {sample['steps']} steps, 8 images each, {width} x {height} "
        "(each box 64 px, the size the world model learnt).",
        ["- none: the world model ships with the pack. The concept files models/edloras/"
         + ", ".join(f"{n}.safetensors" for n in names) + " are what world_1_train_concepts.json writes: run it "
         "first (until they exist, the ED-LoRA Concept List nodes report them missing)."],
        "the boxes in Region Boxes (drag a box to move it, its corner to resize it, drag on free canvas to draw "
        "one) and their prompts."))


if __name__ == "__main__":
    for folder, name, workflow in (
            (OUT, "edlora_single_concept", single_concept()), (OUT, "edlora_two_concepts", two_concepts()),
            (OUT, "fuse_three_concepts", fuse_three()), (OUT, "regional_two_concepts_pose", regional_pose()),
            (OUT, "train_one_concept", train_one()), (OUT, "sdxl_train_one_concept", train_one("sdxl")),
            (OUT, "sdxl_fuse_two_characters", fuse_three("sdxl", ("alice", "bob"))),
            (OUT, "sdxl_regional_two_characters_pose", regional_pose("sdxl", ("alice", "bob"))),
            (OUT, "sdxl_two_lora_characters", lora_characters()),
            (TESTBED_OUT, "world_1_train_concepts", world_train()),
            (TESTBED_OUT, "world_2_fuse_and_regions", world_regions())):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            json.dump(workflow, f, indent=2)
            f.write("\n")
