"""Helpers for host tests: concepts fitted to a model, context recording."""
import os

import torch


def random_concept(host, model, clip, words=("<cat1>", "<cat2>"), seed=0, up_std=0.02, distinct_layers=True):
    """A concept fitted to (model, clip) with visible LoRA and different rows per layer."""
    glue = host.pack("nodes.comfy_glue")
    targets = host.pack("nodes.adapt_targets")
    init = host.pack("mixofshow_core.concept_init")
    layers, width = len(glue.cross_attention_sites(model)), glue.clip_text_width(clip)
    g = torch.Generator().manual_seed(seed)
    concept = init.init_concept(list(words), [torch.randn(width, generator=g) for _ in words], layers,
                                targets.text_targets(clip), targets.unet_targets(model), seed=seed, up_std=up_std)
    if distinct_layers:
        for w in words:
            concept.embeddings[w] = concept.embeddings[w] + torch.randn(layers, width, generator=g)
    return concept


def write_concept(host, concept, name):
    path = os.path.join(host.models("edloras"), name)
    host.pack("mixofshow_core.formats").WRITERS["edlora"](concept, path)
    return name


class ContextRecorder:
    """attn2_patch appended after the pack's: records what each cross-attention layer receives."""

    def __init__(self):
        self.calls = []

    def __call__(self, n, context, value, extra):
        block = extra["block"]
        self.calls.append(((block[0], block[1], extra.get("block_index", 0)), list(extra["cond_or_uncond"]),
                           context.detach().clone()))
        return n, context, value


def record_contexts(model):
    recorder = ContextRecorder()
    patched = model.clone()
    patched.set_model_attn2_patch(recorder)
    return patched, recorder


def same_context(seen, expected, atol=1e-5):
    """``seen`` [N, D] equals ``expected`` [T, D], allowing the host's whole-sequence repetition."""
    if seen.shape[0] % expected.shape[0]:
        return False
    reps = seen.shape[0] // expected.shape[0]
    return torch.allclose(seen.float(), expected.float().repeat(reps, 1), atol=atol)
