"""Write the UI-format example workflows in example_workflows/ from compact descriptions.

Run after changing a node's widgets: `python scripts/build_example_workflows.py`. The files are what
the frontend saves (nodes with widgets_values, links table, version 0.4), so they load by drag and drop.
"""
from __future__ import annotations

import json
import os
import runpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "example_workflows")
WORLD = runpy.run_path(os.path.join(REPO, "mixofshow_core", "world", "recipe.py"))  # plain data, no torch needed
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
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")]),
    "ControlNetApplyAdvanced": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                 ("control_net", "CONTROL_NET"), ("image", "IMAGE")],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "EDLoRADatasetFromFolder": ([], [("dataset", "MOS_DATASET"), ("preview", "IMAGE")]),
    "EDLoRATrain": ([("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE"), ("dataset", "MOS_DATASET")],
                    [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("concept_file", "STRING"), ("loss_plot", "IMAGE"),
                     ("validation", "IMAGE"), ("report", "STRING")]),
    "PreviewImage": ([("images", "IMAGE")], []),
    "TestbedCheckpointLoader": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "EDLoRAConceptList": ([("concepts", "MOS_CONCEPTS")], [("concepts", "MOS_CONCEPTS")]),
    "RegionBoxes": ([("clip", "CLIP"), ("image", "IMAGE"), ("regions", "MOS_REGIONS")], [("regions", "MOS_REGIONS")]),
    "RegionalKSampler": ([("model", "MODEL"), ("regions", "MOS_REGIONS"), ("positive", "CONDITIONING"),
                          ("negative", "CONDITIONING"), ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
}


def build(nodes: list[dict], title: str) -> dict:
    """nodes: {id, type, pos, widgets, links: {input_name: (from_id, from_slot)}}."""
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
                links.append([link_id, src[0], src[1], n["id"], len(inputs), kind])
                out_links.setdefault(src, []).append(link_id)
            inputs.append({"name": name, "type": kind, "link": link_id})
        ui_nodes.append({"id": n["id"], "type": n["type"], "pos": n["pos"], "size": n.get("size", [320, 120]),
                         "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
                         "properties": {"Node name for S&R": n["type"]}, "widgets_values": n.get("widgets", [])})
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
    return build(nodes, "ED-LoRA: one concept")


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
    return build(nodes, "ED-LoRA: two concepts chained")


def fuse_three():
    nodes = [{"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120],
              "widgets": ["v1-5-pruned-emaonly.safetensors"]}]
    for i, name in enumerate(("potter", "hermione", "thanos")):
        prev = (1, 0) if i == 0 else (2 + i - 1, 0)
        prev_clip = (1, 1) if i == 0 else (2 + i - 1, 1)
        nodes.append({"id": 2 + i, "type": "EDLoRALoader", "pos": [420, 40 + 170 * i], "size": [380, 130],
                      "widgets": [f"{name}.safetensors", 1.0, 1.0], "links": {"model": prev, "clip": prev_clip}})
    nodes.append({"id": 5, "type": "GradientFusion", "pos": [840, 120], "size": [340, 320],
                  "widgets": ["closed_form", 20, 512, 0, "fixed", 1e-4, 500, 500, 50, True, ""],
                  "links": {"model": (4, 0), "clip": (4, 1)}})
    nodes.append({"id": 6, "type": "EDLoRASaveBundle", "pos": [1220, 420], "widgets": ["fused_potter_hermione_thanos"],
                  "links": {"clip": (5, 1)}})
    nodes.append({"id": 7, "type": "CheckpointSave", "pos": [1220, 580],
                  "widgets": ["checkpoints/fused_potter_hermione_thanos"],
                  "links": {"model": (5, 0), "clip": (5, 1), "vae": (1, 2)}})
    nodes += sampling_tail((5, 0), (5, 1), "a <potter1> <potter2>, a <hermione1> <hermione2> and a <thanos1> "
                           "<thanos2> standing in a castle hall", 768, 512, 8)
    for n in nodes[-6:]:
        n["pos"] = [n["pos"][0] + 340, n["pos"][1]]
    return build(nodes, "Gradient fusion: three concepts, save, sample")


def regional_pose():
    boxes = {"version": 1, "regions": [
        {"x": 0.02, "y": 0.05, "width": 0.46, "height": 0.93, "prompt": "a <potter1> <potter2>, standing",
         "negative": NEGATIVE, "weight": 1.0},
        {"x": 0.52, "y": 0.05, "width": 0.46, "height": 0.93, "prompt": "a <hermione1> <hermione2>, standing",
         "negative": NEGATIVE, "weight": 1.0}]}
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [20, 100], "widgets": ["v1-5-pruned-emaonly.safetensors"]},
        {"id": 2, "type": "EDLoRALoader", "pos": [380, 20], "size": [360, 130],
         "widgets": ["potter.safetensors", 0.7, 0.7], "links": {"model": (1, 0), "clip": (1, 1)}},
        {"id": 3, "type": "EDLoRALoader", "pos": [380, 180], "size": [360, 130],
         "widgets": ["hermione.safetensors", 0.7, 0.7], "links": {"model": (2, 0), "clip": (2, 1)}},
        {"id": 4, "type": "LoadImage", "pos": [20, 360], "size": [320, 340], "widgets": ["pose.png", "image"]},
        {"id": 5, "type": "ControlNetLoader", "pos": [20, 740],
         "widgets": ["control_v11p_sd15_openpose_fp16.safetensors"]},
        {"id": 6, "type": "EDLoRATextEncode", "pos": [780, 20], "size": [380, 140],
         "widgets": ["two people standing side by side in a library, best quality"], "links": {"clip": (3, 1)}},
        {"id": 7, "type": "EDLoRATextEncode", "pos": [780, 190], "size": [380, 140], "widgets": [NEGATIVE],
         "links": {"clip": (3, 1)}},
        {"id": 8, "type": "ControlNetApplyAdvanced", "pos": [1200, 20], "widgets": [1.0, 0.0, 1.0],
         "links": {"positive": (6, 0), "negative": (7, 0), "control_net": (5, 0), "image": (4, 0)}},
        {"id": 9, "type": "RegionBoxes", "pos": [780, 360], "size": [400, 620], "widgets": [json.dumps(boxes)],
         "links": {"clip": (3, 1), "image": (4, 0)}},
        {"id": 10, "type": "EmptyLatentImage", "pos": [1200, 260], "widgets": [768, 512, 1]},
        {"id": 11, "type": "RegionalKSampler", "pos": [1560, 20], "size": [340, 300],
         "widgets": [0, "fixed", 30, 7.5, "dpmpp_2m", "karras", 1.0],
         "links": {"model": (3, 0), "regions": (9, 0), "positive": (8, 0), "negative": (8, 1),
                   "latent_image": (10, 0)}},
        {"id": 12, "type": "VAEDecode", "pos": [1940, 20], "links": {"samples": (11, 0), "vae": (1, 2)}},
        {"id": 13, "type": "SaveImage", "pos": [2180, 20], "size": [320, 340], "widgets": ["mixofshow_regions"],
         "links": {"images": (12, 0)}},
    ]
    return build(nodes, "Regions: two concepts in two boxes with a pose ControlNet")


def _train_widgets(name: str, words: str, init: str, options: dict, slot: int = 0,
                   validation: tuple = ("", 0, 20, 7.5)) -> list:
    """EDLoRATrain widget values in input order (required, then optional): the paper's recipe with
    ``options`` (input names) overriding; ``validation`` = (prompts, every, steps, cfg)."""
    o = {"steps": 0, "batch_size": 2, "resolution": 512, "lr_embedding": 1e-3, "lr_text": 1e-5, "lr_unet": 1e-4,
         "emb_norm_threshold": 0.55, "attn_reg_weight": 0.01, "crop": "paper", "templates": "human", **options}
    return [name, words, init, o["steps"], 500, o["batch_size"], o["resolution"], 0, "fixed", True,
            "edlora", slot, o["lr_embedding"], o["lr_text"], o["lr_unet"], 4, 1.0, 0.01, True, 0.01, True, False,
            o["attn_reg_weight"], False, o["emb_norm_threshold"], o["crop"], o["templates"], True, "auto", False, 100,
            *validation]


def train_one():
    """Train a concept from a folder of images (paper defaults), then sample it with the returned MODEL/CLIP."""
    train_widgets = _train_widgets("my_concept", "<mychar1> <mychar2>", "<rand-0.013> man", {}, validation=(
        "a photo of <mychar1> <mychar2>\n<mychar1> <mychar2> on the beach", 500, 30, 7.5))
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": ["v1-5-pruned-emaonly.safetensors"]},
        {"id": 2, "type": "EDLoRADatasetFromFolder", "pos": [40, 300], "size": [360, 110],
         "widgets": ["training/my_concept", "<TOK>"]},
        {"id": 3, "type": "EDLoRATrain", "pos": [440, 60], "size": [400, 900], "widgets": train_widgets,
         "links": {"model": (1, 0), "clip": (1, 1), "vae": (1, 2), "dataset": (2, 0)}},
        {"id": 4, "type": "PreviewImage", "pos": [440, 1000], "size": [400, 300], "links": {"images": (3, 3)}},
    ]
    nodes += sampling_tail((3, 0), (3, 1), "a <mychar1> <mychar2> in a garden, best quality", 512, 512, 5)
    return build(nodes, "Train one ED-LoRA concept, then sample it")


def world_train():
    """Demo, part 1: train the world's demo concepts from their photos on the built-in world model."""
    nodes = [{"id": 1, "type": "TestbedCheckpointLoader", "pos": [40, 120], "widgets": ["world-tiny-sd1", 0, "fixed"]}]
    for i, name in enumerate(WORLD["DEMO_CONCEPTS"]):
        y = 40 + 420 * i
        nodes.append({"id": 2 + 3 * i, "type": "EDLoRADatasetFromFolder", "pos": [40, 300 + y], "size": [360, 110],
                      "widgets": [f"training/{name}", "<TOK>"]})
        nodes.append({"id": 3 + 3 * i, "type": "EDLoRATrain", "pos": [440, y], "size": [400, 380],
                      "widgets": _train_widgets(name, f"<{name}1> <{name}2>", "<rand-0.013> toy", WORLD["TRAIN"]),
                      "links": {"model": (1, 0), "clip": (1, 1), "vae": (1, 2), "dataset": (2 + 3 * i, 0)}})
        nodes.append({"id": 4 + 3 * i, "type": "PreviewImage", "pos": [880, y], "size": [300, 300],
                      "links": {"images": (3 + 3 * i, 3)}})
    return build(nodes, "World demo 1: train three concepts on the built-in world model")


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
                     50, True, ""],
         "links": {"model": (1, 0), "clip": (1, 1), "concepts": (4, 0)}},
        {"id": 6, "type": "EDLoRATextEncode", "pos": [800, 40], "size": [380, 120], "widgets": [scene],
         "links": {"clip": (5, 1)}},
        {"id": 7, "type": "EDLoRATextEncode", "pos": [800, 190], "size": [380, 120], "widgets": [""],
         "links": {"clip": (5, 1)}},
        {"id": 8, "type": "RegionBoxes", "pos": [800, 340], "size": [400, 520], "widgets": [json.dumps(boxes)],
         "links": {"clip": (5, 1)}},
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
    return build(nodes, "World demo 2: fuse three concepts, then place them in three boxes")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, workflow in (("edlora_single_concept", single_concept()), ("edlora_two_concepts", two_concepts()),
                           ("fuse_three_concepts", fuse_three()), ("regional_two_concepts_pose", regional_pose()),
                           ("train_one_concept", train_one()), ("world_1_train_concepts", world_train()),
                           ("world_2_fuse_and_regions", world_regions())):
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(workflow, f, indent=2)
            f.write("\n")
