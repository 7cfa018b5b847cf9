"""Bleed of ordinary LoRAs on the world testbed: stacked, weight-averaged and gradient-fused (issue 35).

Trains two ordinary LoRAs with ComfyUI's own Train LoRA node (comfy_extras.nodes_train.TrainLoraNode: the UNet
only, no new tokens, no layer-wise embeddings) on two of the world's novel concepts, each captioned with a
plain-text trigger phrase of its own ('zorbl creature', 'quenta creature': 3 tokens each, 'creature' shared),
saves each with ComfyUI's Save LoRA node and moves the file into models/loras. Then samples the same two-box
scenes (each concept once in the left box and once in the right, on the 128x64 canvas where each box is 64 px;
each box prompt is its concept's trigger phrase; the same seeds for every row) through RegionPrompt +
RegionalKSampler with the two LoRAs combined by:
* stacked: both applied with the stock LoraLoader at strength 1 (what users do today);
* averaged: 'LoRA as Concept' (LoRAAsConcept) for each file into Gradient Fusion, mode average;
* fused: the same in closed form at the node's ridges (FusionConfig: ridge 1e-3, spatial_ridge 0.1), and at the
  world recipe's ridge (recipe.FUSE: 0.3 for every stage). Feature collection at recipe.FUSE's 20 steps, 64 px
  and seed 0 (the world's image size; the node's 512 px would be 64x the features of a 64-px model);
each combined model also on each one-concept prompt (does it keep either identity at all?); and reference rows:
each LoRA alone (LoraLoader) in the same scenes, only its own box counted (the other box's
prompt is the other trigger phrase with no LoRA behind it), and each LoRA alone on a one-concept prompt
(identity, 64-px canvas), with the base model on the same prompts as a control.
Every box is scored with the world scorer (testbed/world/scorer.py; identified among all the world's concepts as
testbed/world/fidelity.py does): right = the box shows its concept, bleed = it shows the scene's other concept,
empty = no concept identified; each share with a 90 % Wilson interval (testbed/world/intervals.py), and each row's
sampling seconds per image (plus the seconds to build its model). For the 'alone' rows, 'other box' is the share
of the neighbouring boxes where the lone LoRA's concept shows anyway.
If Gradient Fusion fails on a row, the exact error is printed and kept in the JSON and the other rows go on.
``--weights-only``: every row uses copies of the files without their bias and norm changes (keys '.diff_b' and 1-D
'.diff'), to see what those changes carry.

Training: 12 photos per concept (concept_photos, seed = the concept's index), captions '<trigger>, <size>[, on the
<position>], <ground> background'; Train LoRA at rank 8, batch 4, AdamW, MSE, fp32, 100 steps, lr 5e-3, torch
seeded first (the node draws its batches and noise levels from torch's global generator). On this model, in
scratch runs on one concept: lr 1e-2 diverges within 150 steps, 5e-3 over 200 steps degrades again (loss back up,
images break), 2e-3 learns too little in 100. Prompts name a texture background: Train LoRA has no masks, so the
LoRAs learn their photos' grounds (mostly texture or grey), and on 'black background' prompts they drew their
concept far less (attr 0.16 against 0.56 on a texture-ground caption, 100 steps at 5e-3).

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON testbed/bench_lora_bleed.py [--images 8] [--steps 100] [--lr 5e-3] [--rank 8] [--photos 12]
                                            [--concepts rubo,zeta] [--triggers "zorbl creature,quenta creature"]
                                            [--canvas box|64] [--ground texture|black|grey] [--weights-only]
                                            [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "scripts"), os.path.join(REPO, "testbed", "scripts")]
TRIGGERS = ("zorbl creature", "quenta creature")
CONCEPT_NAMES = ("rubo", "zeta")
TRAIN = {"steps": 100, "learning_rate": 5e-3, "rank": 8, "batch_size": 4, "photos": 12, "optimizer": "AdamW",
         "loss_function": "MSE", "dtype": "fp32"}
GROUND = "texture"  # the background every prompt names (--ground); see the docstring


# --- training ---------------------------------------------------------------------------------------------
def train_lora(pipe, concept, trigger: str, seed: int, options: dict) -> tuple[str, dict]:
    """Train an ordinary LoRA on ``concept``'s photos, captioned with ``trigger`` in place of <TOK>, with
    TrainLoraNode; save it with SaveLoRA into models/loras (standard_loras.train_comfy_lora). Returns (file name,
    info)."""
    import standard_loras
    import torch

    host = pipe.host
    images, captions, _ = host.pack("testbed.world.concepts").concept_photos(concept, options["photos"], seed)
    pixels = torch.from_numpy(images).float() / 255.0
    captions = [c.replace("<TOK>", trigger) for c in captions]
    start = time.monotonic()
    name, lora, loss = standard_loras.train_comfy_lora(
        pipe.model, pipe.clip, pipe.vae, pixels, captions, host.output(), host.models("loras"),
        f"{concept.name}_lora", seed=seed, steps=options["steps"], learning_rate=options["learning_rate"],
        rank=options["rank"], batch_size=options["batch_size"], dtype=options["dtype"])
    seconds = time.monotonic() - start
    kinds: dict[str, int] = {}
    for key in lora:
        kind = "alpha" if key.endswith(".alpha") else key.rsplit(".", 2)[-2] if key.endswith(".weight") \
            else key.rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return name, {"file": name, "captions": captions, "seconds": round(seconds, 1), "keys": len(lora),
                  "key_kinds": kinds, "loss_first_10": float(np.mean(loss[:10])),
                  "loss_last_10": float(np.mean(loss[-10:]))}


def weights_only(host, name: str) -> str:
    """A copy of the LoRA file ``name`` without its bias ('.diff_b') and 1-D weight ('.diff': norms) changes."""
    import safetensors.torch

    state = safetensors.torch.load_file(os.path.join(host.models("loras"), name))
    kept = {k: v for k, v in state.items() if not k.endswith(".diff_b") and not (k.endswith(".diff") and v.dim() < 2)}
    target = os.path.splitext(name)[0] + "_weights_only.safetensors"
    safetensors.torch.save_file(kept, os.path.join(host.models("loras"), target))
    return target


# --- combining ------------------------------------------------------------------------------------------------
def stacked(pipe, files: list[str]):
    """(MODEL, CLIP) with every file applied by the stock LoraLoader at strength 1."""
    import nodes as cn
    import torch

    model, clip = pipe.model, pipe.clip
    with torch.inference_mode():
        for name in files:
            model, clip = cn.LoraLoader().load_lora(model, clip, name, 1.0, 1.0)
    return model, clip


def fused(pipe, files: list[str], triggers: list[str], mode: str, ridge: float | None, spatial_ridge: float | None):
    """(MODEL, CLIP, report, found) from LoRAAsConcept per file into GradientFusion (base model and clip).
    ``ridge``/``spatial_ridge`` None: the node's defaults; else with recipe.FUSE's K/V targets too. Steps,
    resolution, seed: recipe.FUSE."""
    import torch

    fusion = pipe.host.pack("nodes.fusion.nodes")
    f = pipe.host.pack("testbed.world.recipe").FUSE
    concepts, found = None, []
    with torch.inference_mode():
        for name, trigger in zip(files, triggers):
            concepts, said = fusion.LoRAAsConcept().append(name, trigger, 1.0, 1.0, concepts)
            found.append(said)
        extra = {} if spatial_ridge is None else {"spatial_ridge": spatial_ridge, "kv_targets": f["kv_targets"]}
        model, clip, report = fusion.GradientFusion().fuse(
            pipe.model, pipe.clip, mode, f["steps"], f["resolution"], f["seed"],
            fusion.DEFAULTS.ridge if ridge is None else ridge, concepts=concepts, **extra)
    return model, clip, report, found


# --- sampling and scoring ----------------------------------------------------------------------------------
def _identified(fidelity, candidates, recognitions) -> list[str | None]:
    return [fidelity.identify(r, candidates) for r in recognitions]


def scenes(concepts, triggers, size: str, layouts, ground: str) -> list[tuple[str, list, list]]:
    """The two-box scenes: (global prompt, [(box prompt, box)], [concept per box]), each concept once per side
    (``layouts``: recipe.LAYOUTS)."""
    out = []
    for order in ((0, 1), (1, 0)):
        words = [triggers[i] for i in order]
        boxes = [(f"{w}, {size}, {ground} background", box) for w, box in zip(words, layouts[2])]
        out.append((" and ".join(words) + f", {ground} background", boxes, [concepts[i] for i in order]))
    return out


def sample_scenes(pipe, model, clip, layouts, images: int, canvas) -> tuple[list[list[list]], float]:
    """Each scene sampled once (seed = its index): per scene, per box, the recognitions; and the seconds taken."""
    out, start = [], time.monotonic()
    for seed, (prompt, boxes, _) in enumerate(layouts):
        pictures = pipe.sample_regions(model, clip, prompt, boxes, images, seed, regional=True, canvas=canvas)
        out.append([pipe.recognise(pictures, box) for _, box in boxes])
    return out, time.monotonic() - start


def tally(got_want_other: list[tuple[str | None, str, str]], intervals) -> dict:
    """Shares of boxes: right (got == want), bleed (got the scene's other concept), empty (none identified),
    with 90 % Wilson intervals of right and bleed."""
    n = len(got_want_other)
    right = sum(g == w for g, w, _ in got_want_other)
    bleed = sum(g == o for g, _, o in got_want_other)
    empty = sum(g is None for g, _, _ in got_want_other)
    return {"right": right / n, "right_90": list(intervals.wilson(right, n)), "bleed": bleed / n,
            "bleed_90": list(intervals.wilson(bleed, n)), "empty": empty / n, "boxes": n}


def run(pipe, concepts, triggers, images: int, canvas_kind: str, train: dict, log,
        ground: str = GROUND, strip: bool = False) -> dict:
    host = pipe.host
    fidelity = host.pack("testbed.world.fidelity")
    intervals = host.pack("testbed.world.intervals")
    recipe = host.pack("testbed.world.recipe")
    candidates = list(host.pack("testbed.world.concepts").CONCEPTS)
    canvas, size = (recipe.BOX_CANVAS[2], "large") if canvas_kind == "box" else ((64, 64), "small")
    layouts = scenes(concepts, triggers, size, recipe.LAYOUTS, ground)
    names = [c.name for c in concepts]
    other = {names[0]: names[1], names[1]: names[0]}
    result: dict = {"rows": {}, "identity": {}, "training": {}, "fusion": {}, "errors": {}}

    files = []
    for i, (concept, trigger) in enumerate(zip(concepts, triggers)):
        name, info = train_lora(pipe, concept, trigger, i, train)
        files.append(name)
        result["training"][concept.name] = info
        log(f"trained {name} ({info['keys']} keys {info['key_kinds']}) in {info['seconds']} s, loss "
            f"{info['loss_first_10']:.3f} -> {info['loss_last_10']:.3f}")
    if strip:
        files = [weights_only(host, f) for f in files]
        log(f"every row uses weights-only copies: {files}")

    def identity_rows(label: str, models: list) -> None:
        """Each concept alone on a one-concept prompt, 64-px canvas, seed = its index; row '<label>: <name>'."""
        for i, (concept, (model, clip)) in enumerate(zip(concepts, models)):
            start = time.monotonic()
            pictures = pipe.sample(model, clip, f"{triggers[i]}, large, {ground} background", images, i)
            seconds = time.monotonic() - start
            recognitions = pipe.recognise(pictures)
            got = _identified(fidelity, candidates, recognitions)
            row = f"{label}: {concept.name}"
            result["rows"][row] = {**tally([(g, concept.name, other[concept.name]) for g in got], intervals),
                                   "seconds_per_image": seconds / images, "build_seconds": 0.0, "identified": got}
            result["identity"][row] = fidelity.identity_score(recognitions, concept)

    def scene_row(label: str, model, clip, build_seconds: float, only: str | None = None) -> None:
        """Sample every scene; score every box (or, with ``only``, the boxes of that concept, and the share of
        the other boxes where it shows)."""
        per_scene, seconds = sample_scenes(pipe, model, clip, layouts, images, canvas)
        got, leak = [], []
        for (_, _, placed), per_box in zip(layouts, per_scene):
            for concept, recognitions in zip(placed, per_box):
                ids = _identified(fidelity, candidates, recognitions)
                if only is None or concept.name == only:
                    got += [(g, concept.name, other[concept.name]) for g in ids]
                else:
                    leak += [g == only for g in ids]
        row = {**tally(got, intervals), "seconds_per_image": seconds / (images * len(layouts)),
               "build_seconds": round(build_seconds, 1), "identified": [g for g, _, _ in got]}
        if only is not None:
            row["other_box"] = sum(leak) / len(leak)
            row["other_box_90"] = list(intervals.wilson(sum(leak), len(leak)))
        result["rows"][label] = row
        log(f"{label}: right {row['right']:.2f} bleed {row['bleed']:.2f} ({row['seconds_per_image']:.2f} s/image)")

    def loaded(names: list[str]):  # (MODEL, CLIP, seconds to build)
        start = time.monotonic()
        return (*stacked(pipe, names), time.monotonic() - start)

    base = (pipe.model, pipe.clip)
    pipe.sample(*base, "warm-up", 1, 0)  # one-time costs (model loading, first kernels) kept out of the timings
    sample_scenes(pipe, *base, layouts[:1], 1, canvas)
    identity_rows("base model (no LoRA), trigger prompt of", [base, base])
    identity_rows("LoRA alone, one-concept prompt", [stacked(pipe, [f]) for f in files])
    for name, concept in zip(files, concepts):
        scene_row(f"LoRA alone in the scene (own box only): {concept.name}", *loaded([name]), only=concept.name)
    both = loaded(files)
    scene_row("stacked (LoraLoader x2, strength 1)", *both)
    identity_rows("stacked, one-concept prompt", [both[:2], both[:2]])

    defaults, ridge = host.pack("nodes.fusion.nodes").DEFAULTS, recipe.FUSE["ridge"]
    fuse_rows = [("averaged (Gradient Fusion, average)", "average", None, None),
                 (f"fused (closed form, node ridges {defaults.ridge:g} / spatial {defaults.spatial_ridge:g})",
                  "closed_form", None, None)]
    if (ridge, ridge) != (defaults.ridge, defaults.spatial_ridge):
        fuse_rows.append((f"fused (closed form, recipe ridge {ridge:g} every stage)", "closed_form", ridge, ridge))
    for label, mode, r, s in fuse_rows:
        start = time.monotonic()
        try:
            model, clip, said, found = fused(pipe, files, triggers, mode, r, s)
        except Exception as error:  # noqa: BLE001 (a finding of this benchmark: recorded, the other rows go on)
            result["errors"][label] = {"type": type(error).__name__, "message": str(error),
                                       "traceback": traceback.format_exc()}
            log(f"{label} failed: {type(error).__name__}: {error}")
            continue
        seconds = time.monotonic() - start
        result["fusion"][label] = {"report": said, "found": found, "seconds": round(seconds, 1)}
        log(f"{label}: built in {seconds:.0f} s")
        scene_row(label, model, clip, seconds)
        identity_rows(f"{label}, one-concept prompt", [(model, clip), (model, clip)])
        del model, clip
    result["files"] = files
    return result


def report(result: dict, fidelity) -> str:
    def share(row: dict, key: str) -> str:
        return "{:.2f} .. {:.2f}".format(*row[key])

    rows = []
    for label, row in result["rows"].items():
        leak = f"{row['other_box']:.2f} ({share(row, 'other_box_90')})" if "other_box" in row else ""
        rows.append((label, row["right"], share(row, "right_90"), row["bleed"], share(row, "bleed_90"), row["empty"],
                     row["boxes"], leak, f"{row['seconds_per_image']:.2f}", f"{row['build_seconds']:.0f}"))
    parts = [fidelity.markdown_table(("method", "right", "right, 90 %", "bleed", "bleed, 90 %", "empty", "boxes",
                                      "other box (alone rows)", "s / image", "build s"), rows),
             "(right: the box shows its concept; bleed: it shows the scene's other concept; empty: no concept "
             "identified; 90 %: Wilson intervals, each box one trial. Identity rows: one image = one box.)",
             "", "Identity on one-concept prompts (64 px): exact = all 4 attributes, attr = mean fraction",
             fidelity.markdown_table(("row", "exact", "attr"), [(k, v["exact"], v["attributes"])
                                                                for k, v in result["identity"].items()])]
    said: dict[str, list[str]] = {}  # each distinct error once, with the rows it stopped
    for label, error in result["errors"].items():
        said.setdefault(f"{error['type']}: {error['message']}", []).append(label)
    for message, labels in said.items():
        parts += ["", f"ERROR in {'; '.join(labels)}:", message]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per scene (2 scenes) and per identity prompt")
    parser.add_argument("--steps", type=int, default=TRAIN["steps"], help="Train LoRA steps per concept")
    parser.add_argument("--lr", type=float, default=TRAIN["learning_rate"], help="Train LoRA learning rate")
    parser.add_argument("--rank", type=int, default=TRAIN["rank"], help="LoRA rank")
    parser.add_argument("--concepts", default=",".join(CONCEPT_NAMES), help="two world concepts, comma-separated")
    parser.add_argument("--triggers", default=",".join(TRIGGERS), help="their trigger phrases, comma-separated")
    parser.add_argument("--canvas", choices=("box", "64"), default="box", help="box: 128x64, each box 64 px and "
                        "the concept drawn large (recipe.BOX_CANVAS); 64: the 64-px canvas, drawn small")
    parser.add_argument("--photos", type=int, default=TRAIN["photos"], help="training photos per concept")
    parser.add_argument("--ground", choices=("black", "grey", "texture"), default=GROUND,
                        help="the background every prompt names")
    parser.add_argument("--weights-only", action="store_true", help="drop the files' bias and norm changes")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    import comfy_host
    import world_pipeline

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-lora-bleed-"))
    pipe = world_pipeline.WorldPipeline.load(host)
    by_name = host.pack("testbed.world.training_set").by_name
    concepts = [by_name(n.strip()) for n in args.concepts.split(",")]
    triggers = [t.strip() for t in args.triggers.split(",")]
    if len(concepts) != 2 or len(triggers) != 2 or len(set(triggers)) != 2:
        raise SystemExit("--concepts and --triggers each take two comma-separated entries (distinct triggers)")
    train = {**TRAIN, "steps": args.steps, "learning_rate": args.lr, "rank": args.rank, "photos": args.photos}
    end = [t[0] for t in pipe.clip.tokenize("")["l"][0]][1]
    tokens = {}
    for trigger in triggers:
        ids = [t[0] for t in pipe.clip.tokenize(trigger)["l"][0]]
        tokens[trigger] = ids[1: ids.index(end, 1)]
    started = time.monotonic()
    result = run(pipe, concepts, triggers, args.images, args.canvas, train,
                 lambda s: print(f"[{time.monotonic() - started:6.0f}s] {s}", flush=True), args.ground,
                 args.weights_only)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    recipe = host.pack("testbed.world.recipe")
    result["setup"] = {
        "images": args.images, "ground": args.ground, "concepts": [c.name for c in concepts], "triggers": triggers,
        "trigger_tokens": tokens, "train": train, "sample": pipe.sample_options,
        "canvas": recipe.BOX_CANVAS[2] if args.canvas == "box" else (64, 64), "layouts": recipe.LAYOUTS[2],
        "fusion": {**recipe.FUSE, "node_ridge": host.pack("nodes.fusion.nodes").DEFAULTS.ridge,
                   "node_spatial_ridge": host.pack("nodes.fusion.nodes").DEFAULTS.spatial_ridge},
        "scenes": [{"seed": i, "prompt": p, "boxes": b} for i, (p, b, _) in enumerate(
            scenes(concepts, triggers, "large" if args.canvas == "box" else "small", recipe.LAYOUTS, args.ground))],
        "identity_prompts": [f"{t}, large, {args.ground} background" for t in triggers]}
    print(report(result, host.pack("testbed.world.fidelity")))
    print("\nSettings: " + json.dumps(result["setup"]))
    print(f"total {result['total_seconds']} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
