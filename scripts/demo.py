"""The pack's main job, headless: run an example workflow end to end and print where the images are.

    python scripts/demo.py [--checkpoint SD15.safetensors] [--concept FILE ...] [--workflow JSON] [--out DIR]

With no --checkpoint the workflow's checkpoint loader is swapped for the pack's built-in testbed
model (tiny SD1 layout, random weights) at 64x64. Concept files not given with --concept are made
up: random concepts fitted to the model, with the words the workflow's prompts use (random weights
prove the pipeline runs, not identity). Use scripts/demo.sh to provision the host first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_host  # noqa: E402

DEFAULT_WORKFLOW = os.path.join(comfy_host.REPO, "example_workflows", "edlora_single_concept.json")


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
    texts = " ".join(n["inputs"].get("text", "") for n in prompt.values() if n["class_type"] == "EDLoRATextEncode")
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            if checkpoint:
                node["inputs"]["ckpt_name"] = _link(checkpoint, host.models("checkpoints"))
            else:
                node["class_type"] = "TestbedCheckpointLoader"
                node["inputs"] = {"variant": "tiny-random-sd1", "seed": 0}
                size = size or 64
                notes.append("checkpoint: built-in testbed model (tiny, random weights)")
        if node["class_type"] == "EmptyLatentImage" and size:
            node["inputs"].update(width=size, height=size)
        if node["class_type"] == "KSampler" and steps:
            node["inputs"]["steps"] = steps
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
    return notes


def _make_demo_concepts(prompt, loaders, host, torch):
    import nodes

    first = prompt[loaders[0]]["inputs"]["model"][0]
    with torch.inference_mode():
        loader = prompt[first]
        if loader["class_type"] == "TestbedCheckpointLoader":
            model, clip, _ = host.pack("nodes.testbed").build_testbed(loader["inputs"]["seed"])
        else:
            model, clip = nodes.CheckpointLoaderSimple().load_checkpoint(loader["inputs"]["ckpt_name"])[:2]
        glue, targets = host.pack("nodes.comfy_glue"), host.pack("nodes.adapt_targets")
        init, formats = host.pack("mixofshow_core.concept_init"), host.pack("mixofshow_core.formats")
        layers, width = len(glue.cross_attention_sites(model)), glue.clip_text_width(clip)
        table = glue.embedding_table(clip)
        for seed, key in enumerate(loaders):
            words = prompt[key].pop("_demo_words", None)
            if not words:
                continue
            g = torch.Generator().manual_seed(seed)
            vectors = [table[int(torch.randint(0, 40000, (1,), generator=g))].float() for _ in words]
            concept = init.init_concept(words, vectors, layers, targets.text_targets(clip),
                                        targets.unet_targets(model), seed=seed, up_std=0.01)
            formats.WRITERS["edlora"](concept, os.path.join(host.models("edloras"), prompt[key]["inputs"]["concept_name"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an SD1.x checkpoint (.safetensors); default: the built-in testbed")
    parser.add_argument("--concept", action="append", default=[], help="concept file for each EDLoRALoader, in order")
    parser.add_argument("--workflow", default=DEFAULT_WORKFLOW, help="UI-format workflow JSON")
    parser.add_argument("--out", default=os.path.join(comfy_host.REPO, "output", "demo"), help="work/output folder")
    parser.add_argument("--steps", type=int, help="override the sampler's steps")
    parser.add_argument("--size", type=int, help="override the image width and height")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    host = comfy_host.boot(os.path.abspath(args.out))
    with open(args.workflow) as f:
        prompt = comfy_host.ui_to_api(json.load(f))
    for note in prepare(prompt, host, args.checkpoint, args.concept, args.steps, args.size):
        print(f"[demo] {note}")
    start = time.time()
    result = comfy_host.run_prompt(prompt)
    if not result.success:
        print(f"[demo] workflow failed: {result.error}", file=sys.stderr)
        return 1
    images = [os.path.join(host.output(), i.get("subfolder", ""), i["filename"])
              for out in result.outputs.values() for i in out.get("images", [])]
    print(f"[demo] {os.path.basename(args.workflow)} ran in {time.time() - start:.1f} s")
    for image in images:
        print(f"[demo] image: {image}")
    shutil.rmtree(os.path.join(host.workdir, "temp"), ignore_errors=True)
    return 0 if images else 1


if __name__ == "__main__":
    sys.exit(main())
