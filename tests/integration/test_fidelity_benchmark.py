"""testbed/bench_fidelity.py runs end to end on the world testbed (3 concepts, 2 training steps, 1 image
per measurement) and reports every row the README's tables are built from."""
import json
import os
import subprocess
import sys

import pytest

import comfy_host


def test_fidelity_benchmark_reports_every_measure(host, tmp_path, trains):
    if not os.path.isfile(host.pack("testbed.nodes").WORLD_WEIGHTS):
        pytest.skip("the world testbed weights are not in this checkout")
    out = tmp_path / "fidelity.json"
    run = subprocess.run([sys.executable, os.path.join(comfy_host.REPO, "testbed", "bench_fidelity.py"),
                          "--concepts", "3", "--images", "1", "--steps", "2", "--ridges", "1e-2",
                          "--train", "lr_unet=4e-3", "--fusion", "kv_targets=own_model", "--json", str(out)],
                         capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["setup"]["train"]["lr_unet"] == 4e-3 and result["setup"]["train"]["steps"] == 2

    assert set(result["single"]) == {"ED-LoRA", "embedding only", "orthogonal (alone)", "base model, look in words",
                                     "its photos through the autoencoder (ceiling)"}
    # 3 concepts: only the 2-concept fusion, by every method, and its half-by-half split
    methods = ("gradient", "gradient ridge 0.01", "gradient kv_targets=own_model", "average", "orthogonal")
    assert set(result["fused"]) == {f"2/{m}" for m in methods}
    assert set(result["stages"]) == {f"2/{m}/{p}" for m in ("gradient", "average") for p in ("UNet", "text encoder")}
    for row in [*result["single"].values(), *result["fused"].values(), *result["stages"].values()]:
        assert 0.0 <= row["exact"] <= row["attributes"] <= 1.0
    # drops are measured from the same single-concept scores (the first 2 ED-LoRAs) for every ED-LoRA method
    alone = {row["attributes"] + row["drop_attr"] for key, row in result["fused"].items() if "orthogonal" not in key}
    assert len(alone) == 1 or max(alone) - min(alone) < 1e-9
    assert 0.0 <= alone.pop() <= 1.0
    # per-image scores behind the bootstrap interval of the drop ratio: [concepts][images], means as reported
    assert set(result["per_image"]) == {"single/ED-LoRA"} | {f"fused/{k}" for k in result["fused"]}
    for key, grid in result["per_image"].items():
        assert len(grid) == (3 if key.startswith("single") else 2) and all(len(images) == 1 for images in grid)
    for key, row in result["fused"].items():
        assert sum(g[0] for g in result["per_image"][f"fused/{key}"]) / 2 == pytest.approx(row["attributes"])
    ratios = result["drop_ratios"]
    assert [(r["concepts"], r["fusion"]) for r in ratios] == [(2, m) for m in methods if m.startswith("gradient")]
    assert all(r["low"] <= r["high"] and 0.0 <= r["meets"] <= 1.0 for r in ratios)
    assert "90 % interval" in run.stdout and "right, 90 %" in run.stdout

    # region rows: both layouts; the base model in words (plain and whole look) and the concepts, each on
    # the 64-px canvas and on the box-sized one; the ceiling on each canvas; and one sampler per box on the
    # box-sized canvas, with the fused model and with each concept's own ED-LoRA; each box alone on that canvas
    sampled = {f"{n}/{prompts}{where}/{how}" for n in (2, 3) for how in ("regional", "global only")
               for prompts in ("base-world words", "look in words", "concepts") for where in ("", ", each box 64 px")}
    ceiling = {f"{n}/{prompts}/ideal scene through the autoencoder (ceiling)" for n in (2, 3)
               for prompts in ("concepts", "concepts, each box 64 px")}
    separate = {f"{n}/concepts, each box 64 px/one sampler per box, {model}" for n in (2, 3)
                for model in ("fused model", "own ED-LoRA")}
    separate |= {f"{n}/concepts, each box 64 px/its box alone on the canvas, fused model" for n in (2, 3)}
    assert set(result["regions"]) == sampled | ceiling | separate
    for key, row in result["regions"].items():
        n = int(key.split("/")[0])
        assert row["boxes"] == (3 * n if key in ceiling else n)  # 3 rotations of the concepts; else 1 group
        assert row["right"] + row["bleed"] + row["empty"] <= 1.0 + 1e-9
    assert "Region binding" in run.stdout and "look in words" in run.stdout and "one sampler per box" in run.stdout


def test_fidelity_benchmark_rejects_an_unknown_training_input(host):
    run = subprocess.run([sys.executable, os.path.join(comfy_host.REPO, "testbed", "bench_fidelity.py"),
                          "--concepts", "2", "--train", "lr_unte=4e-3"],
                         capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert run.returncode != 0
    assert "--train expects KEY=VALUE with KEY one of" in run.stderr and "'lr_unte=4e-3'" in run.stderr
