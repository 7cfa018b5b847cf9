"""Layer-wise conditioning (spec §1.2) in ComfyUI: concept words on the CLIP, per-layer contexts in the UNet.

* ``register_words`` puts each concept's words and per-layer embeddings on the CLIP (inside
  ``clip.patcher.model_options``, so CLIP clones made by other nodes keep them).
* ``encode_layerwise`` encodes a prompt once per layer row (attention block) in one text-encoder batch,
  each time with that row in place of every concept word (with SDXL's two encoders, each reads its own
  part of the row), and packs the L contexts into one CONDITIONING tensor (layout in
  ``mixofshow_core.layer_context``). It rides through ComfyUI's cond batching (cond + uncond, several
  conds, areas, masks, batch > 1). SDXL's pooled text (its ADM input, global to every block) is encoded
  once more with each word's mean row.
* ``LayerwiseContextPatch`` (one ``attn2_patch`` on the MODEL, so other patches still apply) hands every
  cross-attention layer of attention block l its own context ``packed[l::L]``; plain conditioning passes
  through unchanged. ControlNets get the layer mean via ``cross_attn_controlnet``.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from ...mixofshow_core import layer_context
from ...mixofshow_core.concept import Concept
from ...mixofshow_core.errors import ConceptWordError
from ...mixofshow_core.unet_layout import CrossAttnSite, row_count
from ...mixofshow_core.words import find_words, substitute, unknown_angle_words
from ..model_layout import clip_encoders, cross_attention_sites

REGISTRY_KEY = "mixofshow.concepts"  # on CLIP: word -> embedding rows and origin
# Candidate stand-in words for concept words during tokenization; each must be one CLIP token.
_SENTINELS = ("qqq", "zzz", "xxx", "vvv", "jjj", "kkk", "ppp", "www", "yyy", "bbb", "fff", "hhh")


class LayerwiseContextPatch:
    """attn2_patch: give the cross-attention layers of attention block l its own context from packed
    conditioning."""

    mixofshow_layerwise = True

    def __init__(self, sites: list[CrossAttnSite]):
        self.layers = row_count(sites)
        self.table = {(s.block[0], s.block[1], s.depth): s.row for s in sites}

    def layer_for(self, extra_options: dict[str, Any]) -> int | None:
        block = extra_options.get("block")
        if block is None:
            return None
        return self.table.get((block[0], block[1], extra_options.get("block_index", 0)))

    def __call__(self, n, context, value, extra_options):
        layer = self.layer_for(extra_options)
        if layer is None or context is None:
            return n, context, value
        picked = layer_context.select_layer(context, layer, self.layers)
        if value is None or value is context:
            return n, picked, picked
        return n, picked, layer_context.select_layer(value, layer, self.layers)


def has_layer_patch(model: Any) -> bool:
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    return any(getattr(p, "mixofshow_layerwise", False) for p in patches.get("attn2_patch", []))


def with_layer_patch(model: Any) -> Any:
    """Clone of ``model`` carrying the layer-wise context patch exactly once."""
    model = model.clone()
    if not has_layer_patch(model):
        model.set_model_attn2_patch(LayerwiseContextPatch(cross_attention_sites(model)))
    return model


def concept_registry(clip: Any) -> dict[str, dict[str, Any]]:
    """word -> {"embedding": [L, D], "concept", "source", "group": words of its concept, "text_encoders",
    "base_family"} on ``clip``."""
    return dict(clip.patcher.model_options.get(REGISTRY_KEY, {}))


def register_words(clip: Any, concept: Concept, layers: int, source: str) -> None:
    """Add the concept's words to ``clip`` (a fresh clone); refuse words already taken."""
    registry = concept_registry(clip)
    taken = {w: registry[w]["concept"] for w in concept.words if w in registry}
    if taken:
        raise ConceptWordError(
            f"Concept {source} uses word(s) {sorted(taken)} already used by loaded concept(s) "
            f"{sorted(set(taken.values()))}. Two concepts cannot share a word: give one of them new words with "
            "'ED-LoRA Export' (format 'ED-LoRA safetensors', words input) and load the renamed file."
        )
    for word in concept.words:
        rows = concept.embeddings[word].float()
        if rows.shape[0] == 1:  # vanilla-LoRA checkpoints: one row used by every layer
            rows = rows.expand(layers, -1).clone()
        group = next((g for g in concept.word_groups if word in g), concept.words)
        registry[word] = {"embedding": rows, "concept": concept.name, "source": source, "group": list(group),
                          "text_encoders": list(concept.text_encoders), "base_family": concept.base_family}
    clip.patcher.model_options[REGISTRY_KEY] = registry


def single_token(clip: Any, word: str) -> int | None:
    chunk = clip.tokenize(word)["l"][0]
    ids = [t[0] for t in chunk]
    end = ids.index(ids[-1]) if ids else 0  # first pad/end token after the word
    inner = ids[1:end]
    return inner[0] if len(inner) == 1 and isinstance(inner[0], int) else None


def pick_stand_ins(clip: Any, text: str, count: int) -> dict[str, int]:
    """``count`` one-token stand-in words (word -> token id) that do not occur in ``text``."""
    present = {t[0] for chunk in clip.tokenize(text)["l"] for t in chunk}
    picked: dict[str, int] = {}
    for word in _SENTINELS:
        if len(picked) == count:
            break
        token = single_token(clip, word)
        if token is not None and token not in present and word not in text:
            picked[word] = token
    if len(picked) < count:
        raise ConceptWordError(
            f"Could not find {count} free stand-in tokens to encode this prompt; use fewer distinct concept words."
        )
    return picked


def _tokenize_with_stand_ins(clip: Any, text: str, registry: dict) -> tuple[dict[str, list], dict[int, str]]:
    """Tokenize ``text`` with each concept word as a one-token stand-in: (tokens as ``clip.tokenize`` gives them,
    {"l": chunks[, "g": chunks]}; stand-in token -> word)."""
    words = list(dict.fromkeys(find_words(text, registry)))
    if not words:
        return clip.tokenize(text), {}
    sentinels = pick_stand_ins(clip, text, len(words))
    tokens = clip.tokenize(substitute(text, dict(zip(words, sentinels))))
    return tokens, {token: word for word, token in zip(words, sentinels.values())}


def _first_end(clip: Any, chunk: list[tuple]) -> int | None:
    """Index of the first end token after BOS in a token chunk."""
    end = clip.tokenizer.clip_l.end_token
    return next((j for j, t in enumerate(chunk) if j > 0 and t[0] == end), None)


def _with_rows(chunks: list[list[tuple]], token_word: dict[int, str], rows: dict[str, torch.Tensor]) -> list:
    """Copies of token chunks with every stand-in token replaced by its word's row ``rows[word]`` [D_e]."""
    return [[(rows[token_word[t[0]]], *t[1:]) if isinstance(t[0], int) and t[0] in token_word else t for t in chunk]
            for chunk in chunks]


def _phrase_positions(clip: Any, chunks: list[list[tuple]], phrases: Sequence[str]) -> list[int]:
    """Positions (in T) of every token of every occurrence of each phrase; a clear error if one is missing."""
    end = clip.tokenizer.clip_l.end_token
    width = len(chunks[0])
    ids = [[t[0] for t in chunk] for chunk in chunks]
    found: list[int] = []
    for phrase in phrases:
        inner = [t[0] for t in clip.tokenize(phrase)["l"][0]][1:]
        inner = inner[:inner.index(end)] if end in inner else inner
        hits = [c * width + j + k for c, row in enumerate(ids) for j in range(len(row) - len(inner) + 1)
                if inner and row[j:j + len(inner)] == inner for k in range(len(inner))]
        if not hits:
            raise ConceptWordError(f"Trigger phrase {phrase!r} does not appear among the prompt's tokens; write it as "
                                   "plain text without weights or line breaks.")
        found += hits
    return sorted(set(found))


def layer_contexts(clip: Any, text: str, layers: int | None = None,
                   phrases: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Encode ``text`` once per layer row: (contexts [L, T, D], pooled [1, P], concept-token positions).

    Positions index T and list every concept-word token (and every token of each trigger phrase in ``phrases``)
    followed by the first end token, as the official K/V fusion uses them (spec §2.1 step 5). ``layers``: L
    when no concept is on ``clip`` (default: the registered words' rows). With two text encoders (SDXL) each
    reads its part of the rows, and the pooled output comes from one more pass with each word's mean row
    (pooled text conditions every block at once).
    """
    registry = concept_registry(clip)
    if registry:
        layers = next(iter(registry.values()))["embedding"].shape[0]
    tokens, token_word = _tokenize_with_stand_ins(clip, text, registry)
    chunks = tokens["l"]
    width = len(chunks[0])
    positions = [c * width + j for c, chunk in enumerate(chunks) for j, t in enumerate(chunk)
                 if isinstance(t[0], int) and t[0] in token_word]
    positions = sorted(positions + _phrase_positions(clip, chunks, phrases))
    eos = _first_end(clip, chunks[-1])
    if eos is not None and positions:
        positions.append((len(chunks) - 1) * width + eos)
    if not token_word:
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        return cond[0].unsqueeze(0).expand(layers or 1, -1, -1), pooled, positions
    names, widths = zip(*clip_encoders(clip))
    spans = dict(zip(names, zip(itertools.accumulate((0,) + widths), widths)))  # encoder -> (start, width) in a row
    pooled_pass = "g" in tokens  # SDXL: pooled text is an input of the UNet
    batch: dict[str, list] = {}
    for key, key_chunks in tokens.items():
        start, span = spans[f"clip_{key}"]
        part = {w: registry[w]["embedding"][:, start:start + span] for w in token_word.values()}  # (L, D_e)
        sections = [{w: rows.mean(0) for w, rows in part.items()}] if pooled_pass else []
        sections += [{w: rows[layer] for w, rows in part.items()} for layer in range(layers)]
        batch[key] = [c for rows in sections for c in _with_rows(key_chunks, token_word, rows)]
    cond, pooled = clip.encode_from_tokens(batch, return_pooled=True)  # (1, (1+)L*T, D); pooled: first section's
    tokens_per_layer = len(chunks) * width
    contexts = cond[:, -layers * tokens_per_layer:].reshape(layers, tokens_per_layer, cond.shape[2])  # (L, T, D)
    return contexts, pooled, positions


def prompt_length(clip: Any, text: str) -> int:
    """Tokens of ``text`` up to and including the first end token (concept words count one each)."""
    chunk = _tokenize_with_stand_ins(clip, text, concept_registry(clip))[0]["l"][0]
    eos = _first_end(clip, chunk)
    return len(chunk) if eos is None else eos + 1


def encode_layerwise(clip: Any, text: str) -> list[list[Any]]:
    """CONDITIONING for ``text`` where every loaded concept word uses its per-layer embedding."""
    registry = concept_registry(clip)
    if not registry:
        cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return [[cond, {"pooled_output": pooled}]]
    contexts, pooled, _ = layer_contexts(clip, text)
    layers = contexts.shape[0]
    packed = layer_context.pack_layers(contexts.unsqueeze(1))  # (1, T*L, D)
    extras = {
        "pooled_output": pooled,
        "cross_attn_controlnet": layer_context.mean_over_layers(packed, layers),  # (1, T, D)
        "mixofshow_layers": layers,
    }
    return [[packed, extras]]


def prompt_warnings(clip: Any, text: str) -> list[str]:
    """Human-readable problems with concept words in ``text`` (unknown <words>, half-used concepts)."""
    registry = concept_registry(clip)
    found = set(find_words(text, registry))
    notes = []
    unknown = unknown_angle_words(text, registry)
    if unknown:
        notes.append(
            f"prompt has {unknown} which no loaded concept defines (loaded words: {sorted(registry) or 'none'}); "
            "they are encoded as plain text. Check the spelling or load the concept with EDLoRALoader."
        )
    groups = {tuple(entry.get("group", [word])) for word, entry in registry.items()}
    for group in sorted(groups):
        used = [w for w in group if w in found]
        if used and len(used) < len(group):
            missing = [w for w in group if w not in found]
            notes.append(f"concept '{' '.join(group)}' is used without {missing}; write all its words.")
    return notes


def embedding_table(clip: Any) -> torch.Tensor:
    """The CLIP's token embeddings [V, D], every text encoder's side by side in row order (SDXL: 768 + 1280), for
    initialising or checking concept words."""
    encoder = clip.cond_stage_model
    tables = [getattr(encoder, name).transformer.get_input_embeddings().weight for name, _ in clip_encoders(clip)]
    return torch.cat(tables, dim=1) if len(tables) > 1 else tables[0]
