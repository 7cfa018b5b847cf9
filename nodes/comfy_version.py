"""What depends on the ComfyUI version: read this file first when a new ComfyUI release changes something.

Checked on ComfyUI 2024-03 (a28a9dc8, opt-in test host) and 0.3.75 (default host; also 0.8.0 and 0.26.0 by hand).

The pack otherwise uses the host's public mechanisms: ``ModelPatcher.clone``/``add_patches`` and the LoRA
loader for weights, ``set_model_attn2_patch``/``set_model_attn2_output_patch`` and the model wrapper below for
attention, ``folder_paths.add_model_folder_path`` for its folder, ``nodes.common_ksampler`` for sampling. The
host internals it still relies on, each commented where it is used (same versions checked):
* the ldm UNet's module tree (``input_blocks.N.1.transformer_blocks.M.attn2``) and the ``block``/``block_index``
  keys of attention patches' ``extra_options`` (``nodes/model_layout.py``, ``concepts/layerwise.py``);
* the CLIP's ``clip_l`` encoder, its tokenizer's ``end_token`` and token lists that carry embedding vectors,
  the host's textual-inversion path (``concepts/layerwise.py``, ``training/train_host.py``);
* ``comfy.lora.model_lora_keys_unet``/``model_lora_keys_clip`` to check a concept's keys before loading it;
* a ControlNet/T2I-Adapter object wrapped so ``get_control`` scales its residuals per region: the host has no
  spatial strength of its own (``regions/attention_patch.py``, ``RegionScaledControl``);
* training: forward pre-hooks copy the input of CLIP layers' norms (the host adds residuals in place), and
  gradient checkpointing replaces UNet blocks' ``forward`` on the instance while training runs
  (``training/train_host.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

MIN_TRAINING_HOST = "0.3.41"  # first release whose transformer blocks back-propagate (no in-place residuals)


def host_version() -> str:
    try:
        import comfyui_version

        return str(comfyui_version.__version__)
    except ImportError:
        return "unknown (older than 0.3.x)"


def add_call_options(model: Any, key: str, options_of: Callable[[Any], dict]) -> None:
    """Per model call, add ``options_of(base_model)`` to the transformer options its patches see as ``extra``.

    The host hands the running BaseModel to the wrapper at call time, so a patch can use the model as it is
    then (weights patched by any later node) without holding it: nothing is stored in ``model_options``.
    """
    if hasattr(model, "add_wrapper_with_key"):  # ComfyUI 0.3.x: patcher_extension wrappers, any number of them
        import comfy.patcher_extension

        def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
            options = {**(transformer_options or {}), **options_of(executor.class_obj)}
            return executor(x, t, c_concat, c_crossattn, control, options, **kw)

        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, wrapper)
        return
    # ComfyUI 2024-03: the single unet-function wrapper slot, chained with the one already there
    previous = model.model_options.get("model_function_wrapper")

    def unet_wrapper(apply_model, args):
        c = dict(args["c"])
        c["transformer_options"] = {**c.get("transformer_options", {}), **options_of(apply_model.__self__)}
        if previous is not None:
            return previous(apply_model, {**args, "c": c})
        return apply_model(args["input"], args["timestep"], **c)

    model.set_model_unet_function_wrapper(unet_wrapper)
