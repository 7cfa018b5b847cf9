"""End-to-end fidelity on the world testbed: identity before/after fusion, and region binding (one run).

Trains every novel concept of the synthetic world twice on the world-trained testbed model (ED-LoRA, and
Orthogonal Adaptation with its own slot), then prints, measured with the world scorer:
1. single-concept identity: each ED-LoRA alone, its embedding only (LoRA off), and the base model given
   the look in words (it never saw such a concept);
2. after fusing 2, 4, 8 concepts: gradient fusion (at the world recipe's ridge 0.3, and at each ridge of
   --ridges, by default 1e-2 and the node's 1e-4) vs weight averaging vs Orthogonal Adaptation sum, the
   identity score and its drop from single-concept (the paper's Table 2 analogue); for the largest count,
   gradient fusion and averaging again with only the UNet fused (each concept's own text encoder) and only
   the text encoder fused (its own UNet), which shows where identity is lost;
3. region binding with 2 and 3 concepts in boxes (fused by gradient fusion): fraction of boxes showing
   the right concept, and bleed (another concept of the scene in the box), with and without regional
   attention; and the base model alone on the same layouts, given objects in words: plain base-world
   objects of the concepts' colours and shapes (right = the box's recognised colour is its own: the
   regional machinery), and each concept's whole look (scored like the concepts: what this model can
   draw in a box when told every attribute); and all of these again on a canvas where each box is 64 px
   (128x64 for 2 boxes, 128x128 for 3), the size the model was trained at, drawn as large as in their photos;
   on that canvas also one sampler per box (each box's prompt sampled alone as a 64-px image, nothing shared
   between boxes), with the group's fused model (the most any one-pass method using it could reach) and with
   each concept's own ED-LoRA (today's workaround: a sampler and a LoRA per region, N passes), and each
   concept's box alone on that canvas (one regional pass with no other box, the fused model): what the
   canvas costs before any neighbour does.
Single-concept identity also lists the concepts' own photos after an autoencoder round trip, and region
binding the ideal picture after the same round trip (each concept drawn small at its box's centre on the
64-px canvas; on the box-sized canvas each box a 64-px picture of its concept, drawn large): the most any
sample of this model can score on that canvas.
Identity = fraction of images whose recognised shape, colour, pattern and accent are all the concept's
('exact'), and the mean fraction of those 4 attributes ('attr', the smoother measure). Each drop ratio
(gradient fusion over averaging) gets a 90 % paired-bootstrap interval and each box share a 90 % Wilson
interval (testbed/world/intervals.py); the JSON keeps the per-image scores behind them.

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON testbed/bench_fidelity.py [--images 8] [--concepts 8] [--weights FILE] [--ridges 1e-2,1e-4]
                                             [--cfg 2] [--train lr_unet=4e-3 ...] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "scripts"), os.path.join(REPO, "testbed", "scripts")]
FUSED_COUNTS = (2, 4, 8)
CEILING = "ideal scene through the autoencoder (ceiling)"
RIDGES = (1e-2, 1e-4)  # GradientFusion ridges compared with the recipe's by default (1e-4: the node's default)
STAGE_METHODS = ("gradient", "average")  # measured with only the UNet, or only the text encoder, fused
WORDS_PLAIN = "base-world words"  # plain objects of the concepts' colours and shapes; right = own colour
WORDS_LOOK = "look in words"  # each concept's whole look in words, scored like the concepts themselves
BOX_SIZED = ", each box 64 px"  # row-label suffix on recipe.BOX_CANVAS: a box as large as the images the model learnt
SEPARATE = "one sampler per box, "  # row-label prefix: each box's prompt sampled alone, nothing shared
ALONE = "its box alone on the canvas, "  # row-label prefix: one regional pass with only this box, global ground


def methods(ridges: Sequence[float], fusion_options: Sequence[dict] = ()) -> dict[str, tuple[str, float | None, dict]]:
    """name: (combining method, GradientFusion ridge; None = recipe.FUSE's 0.3, other GradientFusion inputs). The
    recipe's ridge is 'gradient'; every other ridge in ``ridges`` adds a row 'gradient ridge <value>', every dict
    of ``fusion_options`` a row 'gradient <key>=<value>' at the recipe's ridge."""
    out: dict[str, tuple[str, float | None, dict]] = {"gradient": ("gradient", None, {})}
    out.update({f"gradient ridge {r:g}": ("gradient", r, {}) for r in ridges})
    out.update({"gradient " + " ".join(f"{k}={v}" for k, v in o.items()): ("gradient", None, dict(o))
                for o in fusion_options})
    return {**out, "average": ("average", None, {}), "orthogonal": ("orthogonal", None, {})}


def _identity(pipe, fidelity, model, clip, concept, images: int, seed: int) -> dict:
    """identity_score of ``images`` samples, plus 'per_image': each image's attribute score (for intervals)."""
    recognitions = pipe.recognise(pipe.sample(model, clip, fidelity.concept_caption(concept), images, seed))
    return {**fidelity.identity_score(recognitions, concept),
            "per_image": [fidelity.attribute_match(r, concept.look) for r in recognitions]}


def _mean(scores: list[dict]) -> dict[str, float]:
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0] if k != "per_image"}


def _per_image(scores: list[dict]) -> list[list[float]]:
    return [s["per_image"] for s in scores]


def _canvases(recipe, count: int) -> tuple[tuple[str, tuple[int, int], str], ...]:
    """(row-label suffix, canvas (width, height), object size) of the binding rows: small objects on the
    64-px canvas; objects as large as in the photos on the canvas where each of ``count`` boxes is 64 px."""
    return ("", (64, 64), "small"), (BOX_SIZED, recipe.BOX_CANVAS[count], "large")


def _groups(concepts, count: int) -> list:
    """The binding measures' scenes of ``count`` concepts: consecutive groups, each concept in at most one."""
    return [concepts[i: i + count] for i in range(0, len(concepts) - count + 1, count)]


def _scenes(concepts):
    """(boxes per image, regional or not, the groups of that many concepts) of the binding measures."""
    for count in (2, 3):
        groups = _groups(concepts, count)
        for regional in (True, False) if groups else ():
            yield count, regional, groups


def _in_boxes(pipe, model_clip, prompt: str, boxes, images: int, seed: int, regional: bool,
              canvas: tuple[int, int] = (64, 64)) -> list[list]:
    """Sample one scene (``boxes``: (region prompt, box) pairs) and recognise each box: one list per box."""
    pictures = pipe.sample_regions(*model_clip, prompt, boxes, images, seed, regional=regional, canvas=canvas)
    return [pipe.recognise(pictures, box) for _, box in boxes]


def run(pipe, concepts, images: int, log, ridges: Sequence[float] = RIDGES,
        fusion_options: Sequence[dict] = ()) -> dict:
    fidelity = pipe.host.pack("testbed.world.fidelity")
    render = pipe.host.pack("testbed.world.render")
    combining = methods(ridges, fusion_options)
    result: dict = {"single": {}, "fused": {}, "stages": {}, "regions": {}, "methods": list(combining),
                    "per_image": {}}  # [concepts][images] attribute scores, paired by seed: single/..., fused/...
    files = {"edlora": [], "orthogonal": []}
    started = time.monotonic()
    for i, concept in enumerate(concepts):
        files["edlora"].append(pipe.train(concept, f"{concept.name}_edlora", seed=i))
        files["orthogonal"].append(pipe.train(concept, f"{concept.name}_ortho", mode="orthogonal", slot=i, seed=i))
    result["train_seconds"] = round(time.monotonic() - started, 1)
    log(f"trained {2 * len(concepts)} concepts in {result['train_seconds']} s")

    rows = {"ED-LoRA": [], "embedding only": [], "orthogonal (alone)": [], "base model, look in words": [],
            "its photos through the autoencoder (ceiling)": []}
    photos = pipe.host.pack("testbed.world.concepts").concept_photos
    own = [pipe.loaded([f]) for f in files["edlora"]]  # (MODEL, CLIP) of each ED-LoRA alone
    for i, concept in enumerate(concepts):
        rows["its photos through the autoencoder (ceiling)"].append(
            fidelity.identity_score(pipe.recognise(pipe.autoencoded(photos(concept, images, i)[0])), concept))
        rows["ED-LoRA"].append(_identity(pipe, fidelity, *own[i], concept, images, i))
        rows["embedding only"].append(
            _identity(pipe, fidelity, *pipe.loaded([files["edlora"][i]], 0.0, 0.0), concept, images, i))
        rows["orthogonal (alone)"].append(
            _identity(pipe, fidelity, *pipe.loaded([files["orthogonal"][i]]), concept, images, i))
        words = render.caption([render.moved(concept.look, size="large")], "black")
        pictures = pipe.sample(pipe.model, pipe.clip, words, images, i)
        rows["base model, look in words"].append(fidelity.identity_score(pipe.recognise(pictures), concept))
    result["single"] = {name: _mean(scores) for name, scores in rows.items()}
    result["per_image"]["single/ED-LoRA"] = _per_image(rows["ED-LoRA"])
    log("single-concept identity measured")

    counts = [c for c in FUSED_COUNTS if c <= len(concepts)]
    split: dict[str, tuple] = {}  # the largest count's fused models, measured half by half below
    for count in counts:
        for method, (how, ridge, options) in combining.items():
            source = files["orthogonal" if method == "orthogonal" else "edlora"][:count]
            start = time.monotonic()
            model, clip = pipe.combined(source, how, ridge, **options)
            seconds = time.monotonic() - start
            if count == counts[-1] and method in STAGE_METHODS:
                split[method] = (model, clip)
            scores = [_identity(pipe, fidelity, model, clip, c, images, i) for i, c in enumerate(concepts[:count])]
            single = rows["orthogonal (alone)" if method == "orthogonal" else "ED-LoRA"][:count]
            fused, alone = _mean(scores), _mean(single)
            result["per_image"][f"fused/{count}/{method}"] = _per_image(scores)
            result["fused"][f"{count}/{method}"] = {**fused, "drop_exact": alone["exact"] - fused["exact"],
                                                    "drop_attr": alone["attributes"] - fused["attributes"],
                                                    "seconds": round(seconds, 1)}
            log(f"fused {count} by {method}: {fused}")
    if split:  # where fusion loses identity: one half fused, the other each concept's own
        count = counts[-1]
        alone = _mean(rows["ED-LoRA"][:count])
        for method, (model, clip) in split.items():
            for part, pick in (("UNet", lambda i: (model, own[i][1])), ("text encoder", lambda i: (own[i][0], clip))):
                fused = _mean([_identity(pipe, fidelity, *pick(i), c, images, i)
                               for i, c in enumerate(concepts[:count])])
                result["stages"][f"{count}/{method}/{part}"] = {**fused,
                                                                "drop_attr": alone["attributes"] - fused["attributes"]}
        log("fusion measured stage by stage")

    sampling = {True: "regional", False: "global only"}
    recipe = pipe.host.pack("testbed.world.recipe")
    for count, regional, groups in _scenes(concepts):  # the base model alone, objects in words
        for where, canvas, size in _canvases(recipe, count):
            for label, changes in ((WORDS_PLAIN, {"pattern": "plain", "accent": render.SHADE}), (WORDS_LOOK, {})):
                plain = label == WORDS_PLAIN
                per_box, placed = [], []
                for g, group in enumerate(groups):
                    objects = [render.moved(c.look, size=size, **changes) for c in group]
                    boxes = [(render.caption([o], "black"), box) for o, box in zip(objects, fidelity.LAYOUTS[count])]
                    per_box += _in_boxes(pipe, (pipe.model, pipe.clip), render.caption(objects, "black", False),
                                         boxes, images, g, regional, canvas)
                    placed += [o.colour for o in objects] if plain else group
                result["regions"][f"{count}/{label}{where}/{sampling[regional]}"] = (
                    fidelity.colour_binding(per_box, placed) if plain else fidelity.binding(per_box, placed, concepts))

    fused: dict[tuple, tuple] = {}  # (MODEL, CLIP) per group of concepts: fused once, sampled with and without regions
    for count, regional, groups in _scenes(concepts):
        for where, canvas, size in _canvases(recipe, count):
            per_box, placed = [], []
            for g, group in enumerate(groups):
                if tuple(group) not in fused:
                    fused[tuple(group)] = pipe.combined([files["edlora"][concepts.index(c)] for c in group], "gradient")
                boxes = [(fidelity.concept_caption(c, size), box) for c, box in zip(group, fidelity.LAYOUTS[count])]
                per_box += _in_boxes(pipe, fused[tuple(group)], fidelity.scene_caption(group), boxes, images, g,
                                     regional, canvas)
                placed += group
            result["regions"][f"{count}/concepts{where}/{sampling[regional]}"] = fidelity.binding(per_box, placed,
                                                                                               concepts)
        log(f"region binding with {count} concepts ({sampling[regional]}) measured")
    models = {"fused model": lambda group, c: fused[tuple(group)],
              "own ED-LoRA": lambda group, c: own[concepts.index(c)]}
    for count in (c for c in (2, 3) if c <= len(concepts)):  # one sampler per box: the boxes cannot interact
        groups = _groups(concepts, count)
        placed = [c for group in groups for c in group]
        for label, pick in models.items():
            # a box of the box-sized canvas is a whole 64-px image: recognising it alone scores it as a box
            per_box = [pipe.recognise(pipe.sample(*pick(group, c), fidelity.concept_caption(c), images, g))
                       for g, group in enumerate(groups) for c in group]
            result["regions"][f"{count}/concepts{BOX_SIZED}/{SEPARATE}{label}"] = fidelity.binding(
                per_box, placed, concepts)
        # the same fused model and box, sampled in one regional pass on the whole canvas with no other box:
        # what the canvas costs before any neighbour does
        per_box = [_in_boxes(pipe, fused[tuple(group)], "black background", [(fidelity.concept_caption(c), box)],
                             images, g, True, recipe.BOX_CANVAS[count])[0]
                   for g, group in enumerate(groups) for c, box in zip(group, fidelity.LAYOUTS[count])]
        result["regions"][f"{count}/concepts{BOX_SIZED}/{ALONE}fused model"] = fidelity.binding(
            per_box, placed, concepts)
    log("one sampler per box measured")
    for count in (c for c in (2, 3) if c <= len(concepts)):  # the ideal scene, every rotation of the concepts
        groups = [[concepts[(k + j) % len(concepts)] for j in range(count)] for k in range(len(concepts))]
        for where, canvas, size in _canvases(recipe, count):
            tiled = None if canvas == (64, 64) else canvas  # one render of all concepts; else a 64-px tile per box
            scenes = [fidelity.box_scene(g, fidelity.LAYOUTS[count], size, canvas=tiled) for g in groups]
            decoded = pipe.autoencoded(np.stack(scenes))
            per_box = [pipe.recognise(image[None], box) for image in decoded for box in fidelity.LAYOUTS[count]]
            result["regions"][f"{count}/concepts{where}/{CEILING}"] = fidelity.binding(
                per_box, [c for g in groups for c in g], concepts)
    intervals = pipe.host.pack("testbed.world.intervals")
    for row in result["regions"].values():
        row["right_90"] = list(intervals.binding_interval(row))
    result["drop_ratios"] = drop_ratios(result, intervals)
    return result


def drop_ratios(result: dict, intervals) -> list[dict]:
    """Per fused count and gradient ridge: the drop ratio over averaging with its paired-bootstrap interval
    (intervals.drop_ratio_interval on the per-image scores)."""
    out, per_image = [], result["per_image"]
    for count in FUSED_COUNTS:
        avg = per_image.get(f"fused/{count}/average")
        for method in (m for m in result["methods"] if m.startswith("gradient")):
            grad = per_image.get(f"fused/{count}/{method}")
            if grad and avg:
                got = intervals.drop_ratio_interval(per_image["single/ED-LoRA"][:count], grad, avg)
                out.append({"concepts": count, "fusion": method, **got,
                            "drop_gradient": result["fused"][f"{count}/{method}"]["drop_attr"],
                            "drop_average": result["fused"][f"{count}/average"]["drop_attr"]})
    return out


def report(result: dict, fidelity) -> str:
    """The result of ``run`` as Markdown tables (``fidelity``: the pack's world module)."""
    parts = ["Single-concept identity (mean over concepts)",
             fidelity.markdown_table(("model", "exact", "attr"),
                                     [(k, v["exact"], v["attributes"]) for k, v in result["single"].items()]),
             "", "After fusion (drop = single-concept score minus fused score)",
             fidelity.markdown_table(("concepts", "method", "exact", "attr", "drop exact", "drop attr", "fuse s"),
                                     [(*k.split("/"), v["exact"], v["attributes"], v["drop_exact"], v["drop_attr"],
                                       v["seconds"]) for k, v in result["fused"].items()])]
    ratios = [(r["concepts"], r["fusion"], r["drop_gradient"], r["drop_average"], r["ratio"],
               f"{r['low']:.2f} .. {r['high']:.2f}", r["meets"])
              for r in result["drop_ratios"]]
    if ratios:
        parts += ["", "Identity drop (attr), gradient fusion / weight averaging (target at 8: <= 0.33); 90 % "
                      "interval and share of draws <= 0.33 from a paired bootstrap over concepts and images "
                      "(inf: averaging lost nothing in that draw)",
                  fidelity.markdown_table(("concepts", "fusion", "drop grad", "drop avg", "ratio", "90 % interval",
                                           "draws <= 0.33"), ratios)]
    if result.get("stages"):
        parts += ["", "Where fusion loses identity: only one part fused, the other each concept's own",
                  fidelity.markdown_table(("concepts", "method", "part fused", "exact", "attr", "drop attr"),
                                          [(*k.split("/"), v["exact"], v["attributes"], v["drop_attr"])
                                           for k, v in result["stages"].items()])]
    parts += ["", "Region binding (target: 3 concepts, regional, right >= 0.90; "
                  f"{WORDS_PLAIN}: right = the box shows its own colour)",
              fidelity.markdown_table(("boxes per image", "box prompts", "sampling", "right", "right, 90 %",
                                       "bleed", "empty", "boxes"),
                                      [(*k.split("/"), v["right"], "{:.2f} .. {:.2f}".format(*v["right_90"]),
                                        v["bleed"], v["empty"], int(v["boxes"]))
                                       for k, v in result["regions"].items()]),
              "(right, 90 %: Wilson interval, each box counted as one trial)"]
    return "\n".join(parts)


def _train_overrides(pairs: list[str], options: dict) -> dict:
    """KEY=VALUE strings as recipe overrides, each value cast to the type of the recipe's own."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"--train expects KEY=VALUE with KEY one of {sorted(options)}; got {pair!r}")
        try:
            out[key] = type(options[key])(value)
        except ValueError:
            raise SystemExit(f"--train {key}: expected a {type(options[key]).__name__} like "
                             f"{options[key]!r}; got {value!r}") from None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per measurement")
    parser.add_argument("--concepts", type=int, default=8, help="how many of the world's novel concepts (<= 8)")
    parser.add_argument("--weights", help="a world testbed file (default: the shipped one)")
    parser.add_argument("--steps", type=int, help="concept training steps (default: the pipeline's)")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="override one EDLoRATrain input of the recipe, e.g. --train lr_unet=4e-3 (repeatable)")
    parser.add_argument("--cfg", type=float, help="guidance of every sample (default: the world recipe's 2)")
    parser.add_argument("--ridges", default=",".join(f"{r:g}" for r in RIDGES), help="comma-separated "
                        "GradientFusion ridges compared with the recipe's 0.3 (default: 1e-2, and the node's 1e-4)")
    parser.add_argument("--fusion", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="add a gradient row with these GradientFusion inputs, e.g. --fusion kv_targets=own_model "
                        "(repeatable: one row each)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    import comfy_host
    import world_pipeline

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-fidelity-"))
    pipe = world_pipeline.WorldPipeline.load(host, args.weights)
    if args.steps:
        pipe.train_options["steps"] = args.steps
    pipe.train_options.update(_train_overrides(args.train, pipe.train_options))
    if args.cfg:
        pipe.sample_options["cfg"] = args.cfg
    concepts = list(host.pack("testbed.world.concepts").CONCEPTS[: args.concepts])
    started = time.monotonic()
    ridges = tuple(float(r) for r in args.ridges.split(",") if r.strip())
    fusion_options = [dict(kv.split("=", 1) for kv in row.split(",")) for row in args.fusion]
    result = run(pipe, concepts, args.images, lambda s: print(f"[{time.monotonic() - started:6.0f}s] {s}", flush=True),
                 ridges, fusion_options)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    result["setup"] = {"images": args.images, "concepts": len(concepts), "train": pipe.train_options,
                       "sample": pipe.sample_options}
    print(report(result, host.pack("testbed.world.fidelity")))
    print(f"total {result['total_seconds']} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
