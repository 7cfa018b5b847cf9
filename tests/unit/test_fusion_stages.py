"""The fusion stage pipeline (mixofshow_core.fusion_stages) over a host-free feed: the same answers as the
per-layer solvers, streaming one concept at a time, and a report that adds up."""
import pytest
import torch

from mixofshow_core.config import FusionConfig
from mixofshow_core.errors import ConceptWordError
from mixofshow_core.fusion import GramStats, ScaledLoRA, average_deltas, lbfgs_fuse
from mixofshow_core.fusion_stages import FusionItem, FusionReport, Stage, check_unique_words, run_stage
from mixofshow_core.lora import LoRAPair
from support import make_concept

D_IN, RANK = 12, 2
SHAPES = {"blk.to_q": (8, D_IN), "blk.to_k": (8, D_IN), "blk.to_out": (10, D_IN)}  # module -> (out, in)


def _group(module: str) -> str:
    return "blk.qk" if module in ("blk.to_q", "blk.to_k") else module


def _setup(concepts=3, rows=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, rows // 2, D_IN, generator=g) for _ in range(concepts)]  # (B, T, in) per concept
    deltas = [{m: ScaledLoRA(LoRAPair(torch.randn(RANK, i, generator=g), torch.randn(o, RANK, generator=g)), 0.5)
               for m, (o, i) in SHAPES.items() if not (c == 1 and m == "blk.to_out")}  # concept 1 lacks to_out
              for c in range(concepts)]
    fed: list[int] = []

    def feed(i, add):
        fed.append(i)
        for group in ("blk.qk", "blk.to_out"):
            add(group, features[i])

    return features, deltas, feed, fed


def _reference(module, features, deltas, ridge):
    stats = GramStats(D_IN, {module: SHAPES[module][0]})
    for x, d in zip(features, deltas):
        stats.add(x.reshape(-1, D_IN), {module: d.get(module)})
    return stats.solve(ridge=ridge)[module]


def test_closed_form_stage_equals_each_layers_own_solve_and_streams_each_concept_once():
    features, deltas, feed, fed = _setup()
    report = FusionReport(["a", "b", "c"])
    progress = []
    stage = Stage("unet", SHAPES, _group, ridge=1e-3, iters=0)
    out = run_stage(stage, deltas, feed, FusionConfig(), report, device=torch.device("cpu"),
                    progress=lambda *a: progress.append(a))
    assert fed == [0, 1, 2]
    assert set(out) == set(SHAPES)
    for module in SHAPES:
        assert out[module].shape == SHAPES[module]
        assert torch.allclose(out[module], _reference(module, features, deltas, 1e-3), atol=1e-6)
    assert report.rows["unet"] == 2 * 3 * 40  # two groups, every row of every concept
    assert report.layers["unet"] == 3 and 0 <= report.residual["unet"] < 1
    assert report.growth["unet"][1] in SHAPES
    assert report.seconds["unet"] >= report.statistics_s["unet"] + report.solve_s["unet"]
    assert progress[-1] == ("unet", 3 + 2, 3 + 2)  # concepts, then groups
    assert "unet: 3 layers, 240 feature rows" in report.text()


def test_average_mode_needs_no_features():
    _, deltas, feed, fed = _setup()
    report = FusionReport(["a", "b", "c"])
    stage = Stage("text", SHAPES, _group, ridge=1e-3, iters=0)
    out = run_stage(stage, deltas, feed, FusionConfig(mode="average"), report, device=torch.device("cpu"))
    assert fed == []
    for module, (o, i) in SHAPES.items():
        assert torch.equal(out[module], average_deltas([d.get(module) for d in deltas], o, i))


def test_lbfgs_mode_runs_the_papers_optimiser_from_the_hosts_weights():
    features, deltas, feed, _ = _setup(concepts=2)
    w0 = {m: torch.randn(o, i, generator=torch.Generator().manual_seed(7)) for m, (o, i) in SHAPES.items()}
    report = FusionReport(["a", "b"])
    stage = Stage("kv", SHAPES, _group, ridge=0.0, iters=30)
    out = run_stage(stage, deltas, feed, FusionConfig(mode="lbfgs"), report, device=torch.device("cpu"),
                    weight=lambda m: w0[m])
    flat = [x.reshape(-1, D_IN) for x in features]
    for module in SHAPES:
        expected = lbfgs_fuse(w0[module], flat, [d.get(module) for d in deltas], 30) - w0[module]
        assert torch.allclose(out[module], expected, atol=1e-5)


def test_colliding_words_are_refused_with_both_concepts_named():
    one, two = make_concept(words=("<a1>", "<a2>")), make_concept(words=("<a2>", "<b2>"), seed=1)
    one.name, two.name = "first", "second"
    check_unique_words([FusionItem(one)])
    with pytest.raises(ConceptWordError, match="'first' and 'second' both use the word <a2>"):
        check_unique_words([FusionItem(one), FusionItem(two)])


def test_statistics_are_float32_by_default_but_float64_where_the_ridge_is_small():
    """float32 statistics match float64 at ridges >= 1e-4 (bench_fusion_safety --fp32) and fail below, so a stage
    with a small ridge accumulates in float64 whatever the setting."""
    from mixofshow_core.fusion_stages import _Accumulator

    def dtype(ridge, fp64):
        stage = Stage("s", SHAPES, _group, ridge=ridge, iters=0)
        acc = _Accumulator(stage, FusionConfig(accumulate_fp64=fp64), torch.device("cpu"), None)
        return {s.dtype for s in acc.stats.values()}

    assert dtype(1e-3, False) == {torch.float32} and dtype(1e-4, False) == {torch.float32}
    assert dtype(1e-6, False) == {torch.float64} and dtype(0.0, False) == {torch.float64}
    assert dtype(1e-3, True) == {torch.float64}
    features, deltas, feed, _ = _setup()
    out = run_stage(Stage("unet", SHAPES, _group, ridge=1e-3, iters=0), deltas, feed, FusionConfig(),
                    FusionReport(["a", "b", "c"]), device=torch.device("cpu"))
    for module in SHAPES:  # float32 statistics, the float64 answer to float32 precision
        ref = _reference(module, features, deltas, 1e-3)
        assert torch.allclose(out[module], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
