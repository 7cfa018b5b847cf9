"""The pack's main job, headless: run example workflows end to end and print where the images are.

    python scripts/demo.py [--checkpoint SD15.safetensors] [--concept FILE ...] [--workflow JSON] [--out DIR]
    python scripts/demo.py --workflow example_workflows/sdxl_regional_two_characters_pose.json [--checkpoint SDXL]

With neither --checkpoint nor --workflow (the default), the world demo runs on the built-in
world-trained testbed: it trains three novel concepts from photos made in the graph (Testbed Concept
Dataset; testbed/workflows/world_1_train_concepts.json), fuses them and samples them in three boxes, with
regions and with the global prompt only (world_2_fuse_and_regions.json), then scores every box with the
world's recogniser and writes report.md next to the images.

With --checkpoint or --workflow, that workflow runs; a missing checkpoint is replaced by the tiny
random testbed of its family (SD1 or SDXL) at 64x64, a missing ControlNet by the testbed's, concept files
not given with --concept are made up (random concepts with the words the prompts use) and so are LoRA files
missing from models/loras (random kohya LoRAs): they prove the pipeline runs, not identity. Use scripts/demo.sh
to provision the host first.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_host  # noqa: E402

WORKFLOWS = os.path.join(comfy_host.REPO, "example_workflows")
WORLD_WORKFLOWS = os.path.join(comfy_host.REPO, "testbed", "workflows")
DEFAULT_WORKFLOW = os.path.join(WORKFLOWS, "edlora_single_concept.json")


def _link(src: str, folder: str) -> str:
    dst = os.path.join(folder, os.path.basename(src))
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(os.path.abspath(src), dst)
    return os.path.basename(src)


def prepare(prompt: dict, host, checkpoint: str | None, concepts: list[str], steps: int | None,
            size: int | None) -> list[str]:
    """Rewrite an API prompt for this run; returns notes on what was substituted."""
    import torch

    notes = []
    loaders = [k for k, n in prompt.items() if n["class_type"] == "EDLoRALoader"]
    texts = " ".join(v for n in prompt.values() for v in n["inputs"].values() if isinstance(v, str))  # box JSON too
    import folder_paths

    import test_assets

    sdxl = any(n["class_type"] == "CheckpointLoaderSimple" and n["inputs"]["ckpt_name"] in test_assets.SDXL_CHECKPOINTS
               for n in prompt.values())
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            if checkpoint:
                node["inputs"]["ckpt_name"] = _link(checkpoint, host.models("checkpoints"))
            else:
                node["class_type"] = "TestbedCheckpointLoader"
                node["inputs"] = {"variant": "tiny-random-sdxl" if sdxl else "tiny-random-sd1", "seed": 0}
                size = size or 64
                notes.append(f"checkpoint: built-in {'SDXL ' if sdxl else ''}testbed model (tiny, random weights)")
        if node["class_type"] == "ControlNetLoader" and (
                not checkpoint or folder_paths.get_full_path("controlnet", node["inputs"]["control_net_name"]) is None):
            node["class_type"] = "TestbedControlNet"
            node["inputs"] = {"seed": 0, "layout": "sdxl" if sdxl else "sd1"}
            notes.append("controlnet: the testbed's (random weights)")
        if node["class_type"] == "EmptyLatentImage" and size:
            node["inputs"].update(width=size, height=size)
        if node["class_type"] in ("KSampler", "RegionalKSampler") and steps:
            node["inputs"]["steps"] = steps
        if node["class_type"] == "GradientFusion" and size:  # features at the sampling size
            node["inputs"]["resolution"] = max(64, size)
    given = list(concepts)
    for key in loaders:
        node = prompt[key]["inputs"]
        if given:
            node["concept_name"] = _link(given.pop(0), host.models("edloras"))
            continue
        stem = os.path.splitext(node["concept_name"])[0]
        words = sorted(set(re.findall(rf"<{re.escape(stem)}[^<>\s]*>", texts)))
        if not words:
            raise SystemExit(f"no prompt word starts with <{stem}; give the concept file with --concept")
        node["concept_name"] = f"demo_{stem}.safetensors"
        notes.append(f"concept {stem}: random demo concept with words {' '.join(words)}")
        prompt[key]["_demo_words"] = words
    if any("_demo_words" in prompt[k] for k in loaders):
        _make_demo_concepts(prompt, loaders, host, torch)
    missing = sorted({n["inputs"]["lora_name"] for n in prompt.values() if n["class_type"] in LORA_LOADERS
                      and folder_paths.get_full_path("loras", n["inputs"]["lora_name"]) is None})
    if missing:
        _make_demo_loras(prompt, missing, host, torch, sdxl)
        notes += [f"lora {name}: random demo LoRA (kohya layout)" for name in missing]
    return notes


LORA_LOADERS = ("LoRAAsConcept", "LoraLoader", "CreateHookLora")  # nodes that read a file from models/loras


def _base_model(prompt: dict, host, torch):
    """(MODEL, CLIP) of the prompt's checkpoint loader, built here to size demo files."""
    import nodes

    kinds = ("TestbedCheckpointLoader", "CheckpointLoaderSimple")
    loader = next(n for n in prompt.values() if n["class_type"] in kinds)
    with torch.inference_mode():
        if loader["class_type"] == "TestbedCheckpointLoader":
            bed = "testbed.model_sdxl" if loader["inputs"]["variant"] == "tiny-random-sdxl" else "testbed.model"
            return host.pack(bed).build_testbed(loader["inputs"]["seed"])[:2]
        return nodes.CheckpointLoaderSimple().load_checkpoint(loader["inputs"]["ckpt_name"])[:2]


def _make_demo_loras(prompt: dict, names: list[str], host, torch, sdxl: bool) -> None:
    import standard_loras

    model, clip = _base_model(prompt, host, torch)
    for seed, name in enumerate(names):
        standard_loras.write_lora(os.path.join(host.models("loras"), name), model, clip, "kohya", seed=seed, sdxl=sdxl)


def _make_demo_concepts(prompt, loaders, host, torch):
    model, clip = _base_model(prompt, host, torch)
    with torch.inference_mode():
        layout, layerwise = host.pack("nodes.model_layout"), host.pack("nodes.concepts.layerwise")
        targets = host.pack("nodes.training.targets")
        init, formats = host.pack("mixofshow_core.concept_init"), host.pack("mixofshow_core.formats")
        layers = layout.layer_rows(model)
        table = layerwise.embedding_table(clip)
        for seed, key in enumerate(loaders):
            words = prompt[key].pop("_demo_words", None)
            if not words:
                continue
            g = torch.Generator().manual_seed(seed)
            vectors = [table[int(torch.randint(0, 40000, (1,), generator=g))].float() for _ in words]
            concept = init.init_concept(words, vectors, layers, targets.text_targets(clip),
                                        targets.unet_targets(model), seed=seed, up_std=0.01,
                                        text_encoders=layout.clip_encoders(clip),
                                        base_family=layout.concept_family(model))
            name = prompt[key]["inputs"]["concept_name"]
            formats.WRITERS["edlora"](concept, os.path.join(host.models("edloras"), name))


class ProgressPrinter:
    """Terminal progress of a running workflow: each node's progress bar every few seconds and at its end."""

    def __init__(self, prompt: dict, every_s: float = 3.0):
        self.kinds = {key: node["class_type"] for key, node in prompt.items()}
        self.every_s, self.last, self.start = every_s, {}, time.monotonic()

    def __call__(self, node, value, total) -> None:
        now = time.monotonic()
        if value < total and now - self.last.get(node, 0.0) < self.every_s:
            return
        self.last[node] = now
        kind = self.kinds.get(str(node), "?")
        print(f"[demo] {now - self.start:7.1f} s  {kind} (node {node}): {value}/{total}", flush=True)


def _run(prompt: dict) -> dict:
    result = comfy_host.run_prompt(prompt, progress=ProgressPrinter(prompt))
    if not result.success:
        raise SystemExit(f"[demo] workflow failed: {result.error}")
    return result.outputs


def _saved(host, outputs: dict, node: str) -> list[str]:
    return [os.path.join(host.output(), i.get("subfolder", ""), i["filename"]) for i in outputs[node]["images"]]


def world_demo(host, out: str, steps: int | None) -> int:
    """Train the demo concepts, fuse them, sample them in boxes, score the boxes (see the module doc)."""
    import numpy as np
    from PIL import Image

    recipe = host.pack("testbed.world.recipe")
    world, fidelity = host.pack("testbed.world.concepts"), host.pack("testbed.world.fidelity")
    scorer, intervals = host.pack("testbed.world.scorer"), host.pack("testbed.world.intervals")
    concepts = [c for name in recipe.DEMO_CONCEPTS for c in world.CONCEPTS if c.name == name]
    for concept in concepts:
        print(f"[demo] {concept.name} ({concept.look.phrase()[2:]}): 6 photos from Testbed Concept Dataset")
    start = time.time()
    with open(os.path.join(WORLD_WORKFLOWS, "world_1_train_concepts.json")) as f:
        train = comfy_host.ui_to_api(json.load(f))
    for node in train.values():
        if node["class_type"] == "EDLoRATrain":
            node["inputs"]["resume"] = False  # a fresh run each time
            if steps:
                node["inputs"]["steps"] = steps
    _run(train)
    print(f"[demo] trained {len(concepts)} concepts in {time.time() - start:.1f} s")
    start = time.time()
    with open(os.path.join(WORLD_WORKFLOWS, "world_2_fuse_and_regions.json")) as f:
        outputs = _run(comfy_host.ui_to_api(json.load(f)))
    print(f"[demo] fused them and sampled with and without regions in {time.time() - start:.1f} s")
    boxes = recipe.LAYOUTS[len(concepts)]
    rows, images = [], {}
    for label, node in (("regional (RegionalKSampler)", "12"), ("global prompt only (KSampler)", "15")):
        files = _saved(host, outputs, node)
        pictures = [np.asarray(Image.open(p).convert("RGB")) for p in files]
        per_box = [[scorer.recognise(p, box) for p in pictures] for box in boxes]
        score = fidelity.binding(per_box, concepts, world.CONCEPTS)
        colour = fidelity.colour_binding(per_box, [c.look.colour for c in concepts])["right"]
        low, high = intervals.binding_interval(score)
        rows.append((label, score["right"], f"{low:.2f} – {high:.2f}", score["bleed"], score["empty"], colour,
                     int(score["boxes"])))
        images[label] = files
    report = "\n".join([
        "# Mix-of-Show world demo", "",
        "Concepts: " + ", ".join(f"{c.name} = {c.look.phrase()[2:]}" for c in concepts), "",
        "Each box should show its own concept (boxes: " + "; ".join(
            f"{c.name} at x={b[0]}, y={b[1]}, w={b[2]}, h={b[3]}" for c, b in zip(concepts, boxes)) + ").", "",
        fidelity.markdown_table(("sampling", "right concept", "right, 90 %", "bleed", "none found", "own body colour",
                                 "boxes"), rows), "",
        "Right concept: the box's object recognised as its concept (at least 3 of shape, colour, pattern, accent); "
        "right, 90 %: its Wilson interval over the boxes (each box one trial; with 24 boxes a few boxes either "
        "way is noise); own body colour: the box's object has its concept's body colour (the layout is kept).", "",
        *[f"- {label}: " + ", ".join(os.path.relpath(p, out) for p in files) for label, files in images.items()],
    ])
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write(report + "\n")
    print(report)
    for files in images.values():
        for image in files:
            print(f"[demo] image: {image}")
    print(f"[demo] report: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an SD1.x or SDXL checkpoint (.safetensors) for the workflow; default: "
                        "the built-in testbed of the workflow's family")
    parser.add_argument("--concept", action="append", default=[], help="concept file for each EDLoRALoader, in order")
    parser.add_argument("--workflow", help="UI-format workflow JSON (default: the world demo, or "
                        "edlora_single_concept.json with --checkpoint)")
    parser.add_argument("--out", default=os.path.join(comfy_host.REPO, "output", "demo"), help="work/output folder")
    parser.add_argument("--steps", type=int, help="override the sampler's steps (world demo: the training steps)")
    parser.add_argument("--size", type=int, help="override the image width and height")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    host = comfy_host.boot(os.path.abspath(args.out))
    logging.getLogger(host.pack_name).setLevel(logging.INFO)  # the pack's stage and training lines
    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)  # the samplers' tqdm bars; ProgressPrinter reports those steps
    try:
        return _main(args, host)
    finally:
        print(f"[demo] total time {time.time() - started:.1f} s", flush=True)


def _main(args, host) -> int:
    world_weights = host.pack("testbed.nodes").WORLD_WEIGHTS
    if not args.checkpoint and not args.workflow:
        if os.path.isfile(world_weights):
            return world_demo(host, os.path.abspath(args.out), args.steps)
        print(f"[demo] {world_weights} is missing, so the world demo cannot run; running "
              f"{os.path.basename(DEFAULT_WORKFLOW)} on random weights instead")
    args.workflow = args.workflow or DEFAULT_WORKFLOW
    with open(args.workflow) as f:
        prompt = comfy_host.ui_to_api(json.load(f))
    for note in prepare(prompt, host, args.checkpoint, args.concept, args.steps, args.size):
        print(f"[demo] {note}")
    start = time.time()
    result = comfy_host.run_prompt(prompt, progress=ProgressPrinter(prompt))
    if not result.success:
        print(f"[demo] workflow failed: {result.error}", file=sys.stderr)
        return 1
    images = [os.path.join(host.output(), i.get("subfolder", ""), i["filename"])  # saved, not previews (temp)
              for out in result.outputs.values() for i in out.get("images", []) if i.get("type") == "output"]
    print(f"[demo] {os.path.basename(args.workflow)} ran in {time.time() - start:.1f} s")
    for image in images:
        print(f"[demo] image: {image}")
    shutil.rmtree(os.path.join(host.workdir, "temp"), ignore_errors=True)
    return 0 if images else 1


if __name__ == "__main__":
    sys.exit(main())
