"""Closed-form gradient fusion: optimality, agreement with the paper's L-BFGS, exactness, invariances."""
import pytest
import torch

from mixofshow_core.fusion import (
    GramStats,
    ScaledLoRA,
    average_deltas,
    delta_growth,
    lbfgs_fuse,
    objective,
    relative_output_error,
)
from mixofshow_core.lora import LoRAPair


def _problem(n_concepts=3, rows=200, d_in=24, d_out=16, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    feats = [torch.randn(rows, d_in, generator=g, dtype=torch.float64) @ torch.randn(d_in, d_in, generator=g,
                                                                                     dtype=torch.float64)
             for _ in range(n_concepts)]
    deltas = [ScaledLoRA(LoRAPair(torch.randn(rank, d_in, generator=g, dtype=torch.float64),
                                  torch.randn(d_out, rank, generator=g, dtype=torch.float64)), alpha=0.7)
              for _ in range(n_concepts)]
    return w0, feats, deltas


def _closed_form(feats, deltas, d_in=24, d_out=16, ridge=0.0):
    stats = GramStats(d_in, {"w": d_out})
    for x, d in zip(feats, deltas):
        stats.add(x, {"w": d})
    return stats.solve(ridge=ridge, out_dtype=torch.float64)["w"]


def test_closed_form_is_a_stationary_point_of_the_objective():
    w0, feats, deltas = _problem()
    fused = _closed_form(feats, deltas).requires_grad_(True)
    loss = sum(((x @ (fused - d.dense()).T) ** 2).sum() for x, d in zip(feats, deltas))
    loss.backward()
    scale = sum((x.T @ x).norm() for x in feats) * fused.detach().norm()
    assert fused.grad.norm() / scale < 1e-6
    for eps in (1e-3, -1e-3):  # any perturbation is worse
        bumped = fused.detach() + eps * torch.randn_like(fused)
        assert objective(bumped, feats, deltas) > objective(fused.detach(), feats, deltas)


@pytest.mark.parametrize("rows", [200, 5])  # overdetermined, and underdetermined (3*5 rows < 24 inputs)
def test_matches_the_papers_lbfgs(rows):
    w0, feats, deltas = _problem(rows=rows)
    fused = _closed_form(feats, deltas)
    reference = lbfgs_fuse(w0.float(), [f.float() for f in feats], deltas, iters=500) - w0.float()
    assert torch.allclose(fused.float(), reference, atol=2e-3 * fused.abs().max())
    assert objective(fused, feats, deltas) <= objective(reference.double(), feats, deltas) * (1 + 1e-6)


def test_kv_rows_are_reproduced_exactly_when_rows_fit_the_input_width():
    w0, feats, deltas = _problem(n_concepts=4, rows=6, d_in=32)
    fused = _closed_form(feats, deltas, d_in=32)
    for x, d in zip(feats, deltas):
        assert relative_output_error(w0, fused, x, d) < 1e-9
    # minimum change: the fused delta lives in the span of the features
    span = torch.cat(feats)  # (24, 32)
    projector = span.T @ torch.linalg.pinv(span.T)
    assert torch.allclose(fused @ projector, fused, atol=1e-8)


def test_one_concept_fuses_to_itself_and_order_does_not_matter():
    w0, feats, deltas = _problem()
    assert torch.allclose(_closed_form(feats[:1], deltas[:1]), deltas[0].dense(), atol=1e-9)
    forward = _closed_form(feats, deltas)
    backward = _closed_form(feats[::-1], deltas[::-1])
    assert torch.allclose(forward, backward, atol=1e-10)


def test_fusion_beats_weight_averaging_on_every_concept():
    w0, feats, deltas = _problem(n_concepts=5)
    fused = _closed_form(feats, deltas)
    averaged = average_deltas(deltas, 16, 24).double()
    for x, d in zip(feats, deltas):
        assert relative_output_error(w0, fused, x, d) < relative_output_error(w0, averaged, x, d)


def test_ridge_shrinks_toward_the_base_and_missing_deltas_pull_to_it():
    w0, feats, deltas = _problem()
    exact, ridged = _closed_form(feats, deltas), _closed_form(feats, deltas, ridge=1.0)
    assert ridged.norm() < exact.norm()
    stats = GramStats(24, {"w": 16})
    stats.add(feats[0], {"w": deltas[0]})
    stats.add(feats[1], {"w": None})  # a concept without LoRA here wants W0 on its inputs
    half = stats.solve(out_dtype=torch.float64)["w"]
    assert 0 < half.norm() < deltas[0].dense().norm()


def test_shared_inputs_and_streamed_batches_give_the_same_result():
    w0, feats, deltas = _problem()
    one = GramStats(24, {"a": 16, "b": 16})
    many = GramStats(24, {"a": 16, "b": 16})
    for x, d in zip(feats, deltas):
        one.add(x, {"a": d, "b": d.dense()})
        for part in x.split(37):
            many.add(part, {"a": d, "b": d})
    a, b = one.solve(), many.solve()
    assert torch.allclose(a["a"], a["b"], atol=1e-6) and torch.allclose(a["a"], b["a"], atol=1e-6)
    assert one.rows == many.rows == 600


def test_growth_flags_extrapolation_that_a_ridge_pulls_back():
    w0, feats, deltas = _problem(rows=200)
    one = deltas[0].dense()
    assert delta_growth(one, deltas[:1]) == pytest.approx(1.0)
    assert delta_growth(torch.zeros_like(one), [None, None]) == 0.0
    # nearly collinear features: the exact solution blows up along the direction they barely cover
    g = torch.Generator().manual_seed(1)
    base = torch.randn(200, 1, generator=g, dtype=torch.float64) @ torch.randn(1, 24, generator=g, dtype=torch.float64)
    thin = [base + 1e-4 * torch.randn(200, 24, generator=g, dtype=torch.float64) for _ in deltas]
    exact = _closed_form(thin, deltas, ridge=0.0)
    damped = _closed_form(thin, deltas, ridge=0.3)
    assert delta_growth(exact, deltas) > 10 > 1.5 > delta_growth(damped, deltas)


def test_anchored_solve_fits_the_features_and_keeps_the_anchor_where_they_say_nothing():
    """Features spanning only part of the input: the fit is exact there, the anchor (the average) elsewhere."""
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))[0]
    seen, unseen = basis[:, :10], basis[:, 10:]  # (24, 10), (24, 14)
    _, _, deltas = _problem()
    feats = [torch.randn(50, 10, generator=g, dtype=torch.float64) @ seen.T for _ in deltas]  # rank-10 inputs
    stats = GramStats(24, {"w": 16})
    for x, d in zip(feats, deltas):
        stats.add(x, {"w": d})
    average = average_deltas(deltas, 16, 24).double()
    anchored = stats.solve(ridge=0.0, anchor={"w": average}, out_dtype=torch.float64)["w"]
    plain = stats.solve(ridge=0.0, out_dtype=torch.float64)["w"]
    # same optimum on the features, so the same objective ...
    assert objective(anchored, feats, deltas) == pytest.approx(objective(plain, feats, deltas), rel=1e-9)
    # ... but outside their span the anchored change is the average's, the plain one no change at all
    assert torch.allclose(anchored @ unseen, average @ unseen, atol=1e-9)
    assert torch.allclose(plain @ unseen, torch.zeros(16, 14, dtype=torch.float64), atol=1e-9)
    # a large ridge pulls everything toward the anchor
    pulled = stats.solve(ridge=1e6, anchor={"w": average}, out_dtype=torch.float64)["w"]
    assert torch.allclose(pulled, average, atol=1e-4)
