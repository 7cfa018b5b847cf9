"""Training speed and memory: ED-LoRA Train against ComfyUI's own Train LoRA node, same model, rank, batch.

Each trainer runs in its own subprocess (so peak memory is its own), one after the other in this run,
and the table prints both plus their ratio. What each trains per step:
* ED-LoRA Train (this pack): word embeddings, rank-r LoRA on text-encoder and UNet attention; the
  prompt is encoded per cross-attention layer every step (L text-encoder passes per image), masked
  loss; attention regularisation off for a like-for-like step.
* Train LoRA (ComfyUI >= 0.3.6x, comfy_extras/nodes_train.py): rank-r LoRA on the UNet only, with
  the prompt encoded once beforehand (frozen conditioning). Absent on older hosts: then only ours runs.
Peak memory: CUDA max allocated on a GPU, else the rise of the process's peak RSS during training.

    python benchmarks/bench_training.py [--model testbed|sd15|testbed-sdxl|sdxl] [--resolution 64] [--steps 20]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(REPO, "scripts"), os.path.join(REPO, "tests")]
import checkpoints  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(host, kind: str):
    import torch

    with torch.inference_mode():
        if kind.startswith("testbed"):
            module = "testbed.model_sdxl" if kind == "testbed-sdxl" else "testbed.model"
            return host.pack(module).build_testbed(0, std=None)
        return checkpoints.load(host, kind)


def _lora_algorithm() -> str:
    """The host's name for plain LoRA among its training adapters."""
    from comfy.weight_adapter import adapter_maps

    return next(k for k in adapter_maps if k.lower() == "lora")


def _child(args) -> dict:
    import torch

    import comfy_host

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-train-"))
    model, clip, vae = _load(host, args.model)
    gpu = torch.cuda.is_available()
    images = torch.rand(4, args.resolution, args.resolution, 3, generator=torch.Generator().manual_seed(0))
    prompt = "<TOK>, a photo"
    with torch.inference_mode():
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated() / 2**20 if gpu else _peak_mb()
        start = time.perf_counter()
        if args.trainer == "edlora":
            tn = host.pack("nodes.training.nodes")
            data = tn.EDLoRADataset().build(images, prompt)[0]
            tn.EDLoRATrain().train(model, clip, vae, data, "bench", "<b1> <b2>", "<rand-0.013> man", args.steps, 1, 2,
                                   args.resolution, 0, False, attn_reg_weight=0.0, save_every=0, rank=args.rank,
                                   precision="fp32" if not gpu else "auto")
        else:
            from comfy_extras.nodes_train import TrainLoraNode

            # one LATENT per image: 0.3.75's single-LATENT path fails (UnboundLocalError: multi_res)
            latents = [{"samples": vae.encode(image[None])} for image in images]
            positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt.replace("<TOK>", "b1 b2")))
            dtype = "fp32" if not gpu else "bf16"
            options = dict(
                model=[model], latents=latents, positive=[positive], batch_size=[2], steps=[args.steps],
                grad_accumulation_steps=[1], learning_rate=[1e-4], rank=[args.rank], optimizer=["AdamW"],
                loss_function=["MSE"], seed=[0], training_dtype=[dtype], lora_dtype=[dtype],
                algorithm=[_lora_algorithm()],
                gradient_checkpointing=[False], existing_lora=["[None]"], bucket_mode=[False])
            accepted = inspect.signature(TrainLoraNode.execute).parameters  # bucket_mode: newer hosts only
            TrainLoraNode.execute(**{k: v for k, v in options.items() if k in accepted})
        seconds = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() / 2**20) if gpu else _peak_mb()
    return {"steps_per_s": args.steps / seconds, "peak_mb": peak - (0 if gpu else base),
            "device": "cuda" if gpu else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["testbed", "testbed-sdxl", *checkpoints.FAMILIES], default="testbed")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--trainer", choices=["edlora", "comfy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trainer:
        print("RESULT " + json.dumps(_child(args)))
        return
    results = {}
    for trainer in ("edlora", "comfy"):
        cmd = [sys.executable, __file__, "--trainer", trainer, "--model", args.model, "--resolution",
               str(args.resolution), "--steps", str(args.steps), "--rank", str(args.rank)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            missing = "No module named 'comfy_extras.nodes_train'" in out.stderr
            print(f"{trainer}: not available on this ComfyUI (it has no Train LoRA node)" if missing
                  else f"{trainer}: failed\n{out.stderr[-1500:]}")
            continue
        results[trainer] = json.loads(line[len("RESULT "):])
    print(f"\nmodel {args.model}, {args.resolution}px, batch 2, rank {args.rank}, {args.steps} steps")
    print(f"{'trainer':<34}{'steps/s':>10}{'peak MB':>12}")
    names = {"edlora": "ED-LoRA Train (this pack)", "comfy": "ComfyUI Train LoRA (UNet only)"}
    for key, r in results.items():
        print(f"{names[key] + ' [' + r['device'] + ']':<34}{r['steps_per_s']:>10.2f}{r['peak_mb']:>12.0f}")
    if len(results) == 2:
        ours, theirs = results["edlora"], results["comfy"]
        print(f"{'ratio ours/comfy':<34}{ours['steps_per_s'] / theirs['steps_per_s']:>10.2f}"
              f"{ours['peak_mb'] / max(theirs['peak_mb'], 1e-9):>12.2f}")


if __name__ == "__main__":
    main()
