"""Gradient fusion as a pipeline of stages over a host's feature streams (spec §2).

A stage fuses one family of layers (text encoder, cross-attention K/V, other UNet attention). The host
supplies a *feed*: ``feed(i, add)`` runs concept i's forward passes and calls ``add(group, x)`` with every
input ``x [..., in]`` its hooks see. The stage folds those rows into Gram statistics as they stream past
(nothing is kept per concept but its LoRA factors), then solves each layer in closed form, or by the paper's
L-BFGS on stored features (reference mode), or averages the deltas without any features.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .concept import Concept
from .config import FP32_MIN_RIDGE, FusionConfig
from .errors import ConceptWordError
from .fusion import Delta, GramStats, ScaledLoRA, average_deltas, delta_growth, lbfgs_fuse
from .lora import LayerDelta, LoRAPair

logger = logging.getLogger(__name__)
GROWTH_WARNING = 2.0  # delta_growth above this: the fused change extrapolates beyond the concepts' own

Feed = Callable[[int, Callable[[str, torch.Tensor], None]], None]  # feed(concept index, add(group, x))
Progress = Callable[[str, int, int], None]  # (stage name, done, total)


@dataclass
class FusionItem:
    """One concept to fuse, with the scales of its deltas (official unet_alpha / text_encoder_alpha)."""

    concept: Concept
    unet_alpha: float = 1.0
    text_alpha: float = 1.0


@dataclass(frozen=True)
class Stage:
    """One family of layers: module -> (out, in) and which modules read the same input (one Gram matrix)."""

    name: str
    shapes: dict[str, tuple[int, int]]
    group_of: Callable[[str], str]
    ridge: float
    iters: int  # L-BFGS iterations in the reference mode
    ticks_per_concept: int = 1  # progress units a concept's feed takes (sampling steps)

    def groups(self) -> dict[str, dict[str, int]]:
        """group -> {module: out_features}."""
        out: dict[str, dict[str, int]] = {}
        for name, (features_out, _) in sorted(self.shapes.items()):
            out.setdefault(self.group_of(name), {})[name] = features_out
        return out


@dataclass
class FusionReport:
    """Per stage: layers solved, feature rows seen, seconds, the worst relative residual of the objective
    over its layers (0 = every concept reproduced exactly on its features), and the largest growth of a
    layer's fused change over the concepts' own (``delta_growth``) with that layer's name."""

    concepts: list[str]
    layers: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    residual: dict[str, float] = field(default_factory=dict)
    growth: dict[str, tuple[float, str]] = field(default_factory=dict)
    statistics_s: dict[str, float] = field(default_factory=dict)  # folding features into Gram statistics
    solve_s: dict[str, float] = field(default_factory=dict)  # the per-layer solves
    end_to_end: dict[str, float] = field(default_factory=dict)  # concept -> K/V error against its own model
    held_out: float | None = None  # K/V move on prompts without concept words / the strongest concept's own

    def text(self) -> str:
        parts = [f"fused {len(self.concepts)} concept(s): {', '.join(self.concepts)}"]
        for stage in self.layers:
            line = (f"{stage}: {self.layers[stage]} layers, {self.rows.get(stage, 0)} feature rows, "
                    f"{self.seconds.get(stage, 0.0):.2f} s")
            if stage in self.residual:
                line += f", max relative residual {self.residual[stage]:.2e}"
            if stage in self.growth:
                line += f", largest change {self.growth[stage][0]:.2f}x the concepts' own ({self.growth[stage][1]})"
            if stage in self.solve_s:
                features = self.seconds.get(stage, 0.0) - self.statistics_s[stage] - self.solve_s[stage]
                line += (f"; time: features {features:.2f} s, statistics {self.statistics_s[stage]:.2f} s, "
                         f"solve {self.solve_s[stage]:.2f} s")
            parts.append(line)
        if self.end_to_end:
            parts.append("end to end, keys/values at each concept's tokens against its own model (relative): "
                         + ", ".join(f"{name} {value:.2e}" for name, value in self.end_to_end.items()))
        if self.held_out is not None:
            parts.append(f"held out, prompts without concept words: the fused keys/values move {self.held_out:.2f}x as "
                         "far from the base model as the strongest concept alone moves them (above 1: raise ridge)")
        return "\n".join(parts)


def check_unique_words(items: list[FusionItem]) -> None:
    """Refuse two concepts that share a word or a trigger phrase: one prompt cannot mean both after fusion."""
    owner: dict[str, FusionItem] = {}
    for item in items:
        for word in item.concept.words + [t.lower() for t in item.concept.triggers]:
            if word in owner:
                what = f"the word {word}" if word in item.concept.words else f"the trigger {word!r}"
                raise ConceptWordError(f"Concepts '{owner[word].concept.name}' and '{item.concept.name}' both use "
                                       f"{what}; fused concepts need their own words. {_rename_hint(owner[word])}")
            owner[word] = item


def _rename_hint(item: FusionItem) -> str:
    if item.concept.words:
        return "Give the ED-LoRA concept new words with 'ED-LoRA Export' (words input) first."
    return ("A standard LoRA only knows the trigger it was trained on: set another trigger in its 'LoRA as Concept' "
            "node only if the LoRA also learned that one; otherwise fuse one of the two with an ED-LoRA of its own "
            "words.")


def scaled(loras: dict[str, LayerDelta], alpha: float) -> dict[str, Delta]:
    """Each layer's delta at ``alpha``: factored for a LoRA pair, a dense [out, in] matrix for a full change."""
    return {m: ScaledLoRA(p, alpha) if isinstance(p, LoRAPair) else p.delta(alpha) for m, p in loras.items()}


class _Accumulator:
    """Gram statistics per group, fed one concept at a time; stored features only for L-BFGS."""

    def __init__(self, stage: Stage, cfg: FusionConfig, device: torch.device,
                 sink: Callable[[str, int, torch.Tensor], None] | None):
        dtype = torch.float64 if cfg.accumulate_fp64 or stage.ridge < FP32_MIN_RIDGE else torch.float32
        self.stage, self.cfg, self.sink = stage, cfg, sink
        inputs = {m: shape[1] for m, shape in stage.shapes.items()}
        self.stats = {g: GramStats(inputs[next(iter(outs))], outs, dtype=dtype, device=device)
                      for g, outs in stage.groups().items()}
        self.features: dict[str, list[list[torch.Tensor]]] = {g: [] for g in self.stats}  # L-BFGS only
        self.concept, self.deltas, self.seconds = -1, {}, 0.0

    def begin(self, deltas: dict[str, Delta]) -> None:
        self.concept, self.deltas = self.concept + 1, deltas
        for g in self.features:
            self.features[g].append([])

    def add(self, group: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])  # (rows, in)
        if self.sink is not None:
            self.sink(group, self.concept, x)
        start = time.perf_counter()
        if self.cfg.mode == "lbfgs":
            self.features[group][-1].append(x.float().cpu())
        self.stats[group].add(x, {m: self.deltas.get(m) for m in self.stats[group].cross})
        self.seconds += time.perf_counter() - start


def _anchor(cfg: FusionConfig, stats: GramStats, per_concept: list[dict[str, Delta]]) -> dict | None:
    """What the ridge pulls toward: None (W₀) or each module's average change."""
    if cfg.anchor != "average":
        return None
    return {m: average_deltas([d.get(m) for d in per_concept], o, stats.in_features)
            for m, o in stats.out_features.items()}


def _warn_growth(report: FusionReport, stage: Stage) -> None:
    if report.growth[stage.name][0] > GROWTH_WARNING:
        logger.warning("[Mix-of-Show] gradient fusion, %s: the fused change of %s is %.1fx the concepts' own; "
                       "the solution extrapolates where the features barely reach, which can break images with "
                       "regions or unseen prompts. Raise the ridge (spatial_ridge for UNet attention) if it does.",
                       stage.name, report.growth[stage.name][1], report.growth[stage.name][0])


def _solve(acc: _Accumulator, per_concept: list[dict[str, Delta]], weight: Callable[[str], torch.Tensor] | None,
           interrupt: Callable[[], None], tick: Callable[[], None]) -> tuple[dict[str, torch.Tensor], float, tuple]:
    """Every layer of the stage: (deltas, worst relative residual, (largest growth, its module))."""
    out: dict[str, torch.Tensor] = {}
    residual, growth = 0.0, (0.0, "")
    for group, stats in acc.stats.items():
        if acc.cfg.mode == "closed_form":
            out.update(stats.solve(ridge=acc.stage.ridge, anchor=_anchor(acc.cfg, stats, per_concept)))
        else:  # lbfgs: the paper's optimiser on the stored features, from W0
            features = [torch.cat(f) for f in acc.features[group]]
            for module in stats.cross:
                w0 = weight(module).float().cpu()
                out[module] = lbfgs_fuse(w0, features, [d.get(module) for d in per_concept], acc.stage.iters,
                                         on_eval=interrupt) - w0
        for module in stats.cross:
            deltas = [d.get(module) for d in per_concept]
            residual = max(residual, stats.relative_residual(module, out[module]))
            growth = max(growth, (delta_growth(out[module], deltas), module))
        tick()
    return out, residual, growth


def run_stage(stage: Stage, per_concept: list[dict[str, Delta]], feed: Feed, cfg: FusionConfig,
              report: FusionReport, *, device: torch.device, progress: Progress | None = None,
              interrupt: Callable[[], None] = lambda: None, weight: Callable[[str], torch.Tensor] | None = None,
              sink: Callable[[str, int, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """Fuse one stage's layers: fused change [out, in] per module; fills the stage's line of ``report``.

    ``weight(module)`` gives W0 [out, in] for the L-BFGS mode; ``sink(group, concept, rows)`` sees every batch.
    """
    start = time.perf_counter()
    groups = stage.groups()
    total, done = len(per_concept) * stage.ticks_per_concept + len(groups), 0

    def tick(amount: int = 1) -> None:
        nonlocal done
        done += amount
        if progress is not None:
            progress(stage.name, done, total)

    if cfg.mode == "average":
        out = {m: average_deltas([d.get(m) for d in per_concept], *shape) for m, shape in stage.shapes.items()}
    else:
        acc = _Accumulator(stage, cfg, device, sink)
        for i, deltas in enumerate(per_concept):
            acc.begin(deltas)
            feed(i, acc.add)
            tick(stage.ticks_per_concept)
        report.rows[stage.name] = sum(s.rows for s in acc.stats.values())
        solve_start = time.perf_counter()
        out, report.residual[stage.name], report.growth[stage.name] = _solve(acc, per_concept, weight, interrupt, tick)
        report.statistics_s[stage.name], report.solve_s[stage.name] = acc.seconds, time.perf_counter() - solve_start
        del acc
        _warn_growth(report, stage)
    report.layers[stage.name], report.seconds[stage.name] = len(out), time.perf_counter() - start
    return out


PairFeed = Callable[[int, int, Callable[[str, torch.Tensor, torch.Tensor], None]], None]


def run_paired_stage(stage: Stage, rounds: list[list[str]], per_concept: list[dict[str, Delta]], feed: PairFeed,
                     base: Callable[[str], torch.Tensor], apply: Callable[[dict[str, torch.Tensor]], None],
                     cfg: FusionConfig, report: FusionReport, *, device: torch.device,
                     progress: Progress | None = None, interrupt: Callable[[], None] = lambda: None,
                     sink: Callable[[str, int, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """Fuse a stage's groups round by round, each from the inputs the already-fused earlier rounds produce.

    Where ``run_stage`` fits every layer on the concepts' own inputs (the official scheme), here round r's layers
    see what the fused model computes before them, and are fitted to reproduce each concept's own layer on its
    own inputs, so earlier compromises are corrected instead of compounded (``GramStats.add_pair``).
    ``feed(r, i, add)`` runs concept i through the model as fused so far and calls ``add(group, x, x_own)`` for
    each group of round r with its input and the concept's own model's input for the same tokens;
    ``base(module)`` gives W₀ [out, in]; ``apply(deltas)`` hands the host a round's fused changes before the next.
    """
    start, groups = time.perf_counter(), stage.groups()
    dtype = torch.float64 if cfg.accumulate_fp64 or stage.ridge < FP32_MIN_RIDGE else torch.float32
    inputs = {m: shape[1] for m, shape in stage.shapes.items()}
    out: dict[str, torch.Tensor] = {}
    residual, growth, rows, statistics_s, solve_s = 0.0, (0.0, ""), 0, 0.0, 0.0
    for r, names in enumerate(rounds):
        stats = {g: GramStats(inputs[next(iter(groups[g]))], groups[g], dtype=dtype, device=device) for g in names}
        w0 = {m: base(m) for g in names for m in groups[g]}
        for i, deltas in enumerate(per_concept):
            def add(group: str, x: torch.Tensor, x_own: torch.Tensor, i=i, deltas=deltas) -> None:
                nonlocal statistics_s
                x, x_own = x.reshape(-1, x.shape[-1]), x_own.reshape(-1, x_own.shape[-1])  # (rows, in)
                if sink is not None:
                    sink(group, i, x)
                begin = time.perf_counter()
                stats[group].add_pair(x, x_own, {m: deltas.get(m) for m in stats[group].cross}, w0)
                statistics_s += time.perf_counter() - begin
            feed(r, i, add)
        begin, solved = time.perf_counter(), {}
        for st in stats.values():
            solved.update(st.solve(ridge=stage.ridge, anchor=_anchor(cfg, st, per_concept)))
            for m in st.cross:
                residual = max(residual, st.relative_residual(m, solved[m]))
                growth = max(growth, (delta_growth(solved[m], [d.get(m) for d in per_concept]), m))
            rows += st.rows
        solve_s += time.perf_counter() - begin
        out.update(solved)
        apply(solved)
        interrupt()
        if progress is not None:
            progress(stage.name, r + 1, len(rounds))
    report.rows[stage.name], report.residual[stage.name], report.growth[stage.name] = rows, residual, growth
    report.statistics_s[stage.name], report.solve_s[stage.name] = statistics_s, solve_s
    _warn_growth(report, stage)
    report.layers[stage.name], report.seconds[stage.name] = len(out), time.perf_counter() - start
    return out
