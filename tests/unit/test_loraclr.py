"""LoRACLR's contrastive per-layer merge: its loss as defined, its fit against averaging, and what the margin does."""
import pytest
import torch

from loraclr import ContrastiveProblem, loraclr_fuse
from mixofshow_core.fusion import GramStats, ScaledLoRA, average_deltas, objective, relative_output_error
from mixofshow_core.lora import LoRAPair

CONVERGED = {"lr": 2e-2, "iters": 800, "schedule": "cosine"}  # Adam run to a settled optimum, not the paper's


@pytest.fixture(autouse=True)
def _one_thread():
    """Thousands of Adam steps on tiny matrices: with several threads each step waits on the pool (16x slower
    on a busy 2-core host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _problem(n_concepts=3, rows=(200, 150, 180, 120), d_in=24, d_out=16, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    mix = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    feats = [torch.randn(rows[i % len(rows)], d_in, generator=g, dtype=torch.float64) @ mix for i in range(n_concepts)]
    deltas = [ScaledLoRA(LoRAPair(torch.randn(rank, d_in, generator=g, dtype=torch.float64) * 0.3,
                                  torch.randn(d_out, rank, generator=g, dtype=torch.float64) * 0.3), alpha=0.7)
              for _ in range(n_concepts)]
    return w0, feats, deltas


def _naive_terms(w, w0, feats, deltas, margin, negatives):
    """The loss straight from the features, as the authors' script writes it (rows stacked, hardest negative)."""
    own = [w0 + d.dense() for d in deltas]
    preds = [x @ w.T for x in feats]
    positive = torch.stack([((p - x @ o.T) ** 2).sum() for p, x, o in zip(preds, feats, own)])
    common = min(x.shape[0] for x in feats)
    nearest = []
    for i, (p, x) in enumerate(zip(preds, feats)):
        if negatives == "paper":  # concept j's outputs on its own inputs, row by row
            dists = [torch.linalg.norm(p[:common] - feats[j][:common] @ own[j].T) for j in range(len(feats)) if j != i]
        else:  # concept j's layer on concept i's inputs
            dists = [torch.linalg.norm(p - x @ own[j].T) for j in range(len(feats)) if j != i]
        nearest.append(min(dists) if dists else torch.tensor(float("inf"), dtype=w.dtype))
    hinge = torch.clamp(margin - torch.stack(nearest), min=0) ** 2
    elements = w.shape[0] * sum(x.shape[0] for x in feats)
    return {"positive": positive, "negative": torch.stack(nearest), "con": (positive + hinge).mean(),
            "mse": positive.sum() / elements, "reg": torch.linalg.norm(w - w0)}


@pytest.mark.parametrize("negatives", ["paper", "same_inputs"])
@pytest.mark.parametrize("margin", [0.5, 1e5])  # inactive (distances >> 0.5) and active on every concept
def test_terms_match_the_loss_computed_from_the_features(negatives, margin):
    w0, feats, deltas = _problem(n_concepts=3)  # unequal row counts: paper negatives use the first 150 rows
    offset = 0.05 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    problem = ContrastiveProblem(w0, feats, deltas, margin=margin, negatives=negatives)
    got = problem.terms(offset.clone().requires_grad_(True))
    want = _naive_terms(w0 + offset, w0, feats, deltas, margin, negatives)
    for key in want:
        assert torch.allclose(got[key].detach(), want[key], rtol=1e-9, atol=1e-9), key
    assert (got["hinge"] > 0).all() == (margin > 1), "the margin should bind exactly in the large-margin case"
    # the gradient too (what Adam sees)
    a = offset.clone().requires_grad_(True)
    problem.loss(a, 1.0, 0.1, 1e-3).backward()
    b = (w0 + offset).clone().requires_grad_(True)
    t = _naive_terms(b, w0, feats, deltas, margin, negatives)
    (t["con"] + 0.1 * t["mse"] + 1e-3 * t["reg"]).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-8 * b.grad.abs().max())


def test_reproduces_a_single_concept():
    w0, feats, deltas = _problem(n_concepts=1)
    fused = loraclr_fuse(w0, feats, deltas, lambda_reg=0.0, weight_decay=0.0, **CONVERGED)
    assert relative_output_error(w0, fused - w0, feats[0], deltas[0]) < 1e-3  # Adam: to 5e-4 here


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_concepts", [2, 4])
def test_positive_term_never_ends_worse_than_averaging(seed, n_concepts):
    """With the paper's loss and margin (inactive here: the concepts' outputs are far apart) and an optimiser run
    to convergence, LoRACLR is the least-squares merge: its fit is at most averaging's and near the closed form's."""
    w0, feats, deltas = _problem(n_concepts=n_concepts, seed=seed)
    fused = loraclr_fuse(w0, feats, deltas, **CONVERGED) - w0
    averaged = average_deltas(deltas, *w0.shape).double()
    stats = GramStats(w0.shape[1], {"w": w0.shape[0]})
    for x, d in zip(feats, deltas):
        stats.add(x, {"w": d})
    exact = stats.solve(out_dtype=torch.float64)["w"]
    fit, avg, best = (objective(d, feats, deltas) for d in (fused, averaged, exact))
    assert fit <= avg
    assert fit <= best * 1.02 + 1e-9 * avg


def test_the_papers_budget_caps_every_weight_change():
    """Adam's step is at most lr (1 − β1)/√(1 − β2) ≈ 3.16 lr per element: 50 steps at 1e-4 cap every change at
    ~0.016, whatever the concepts ask for. On changes of order 0.1 the merge stays near W₀, worse than averaging."""
    w0, feats, deltas = _problem(n_concepts=2)
    fused = loraclr_fuse(w0, feats, deltas)  # the paper's defaults
    assert (fused - w0).abs().max() <= 3.17 * 50 * 1e-4
    averaged = average_deltas(deltas, *w0.shape).double()
    assert objective(fused - w0, feats, deltas) > objective(averaged, feats, deltas)


def test_margin_pushes_the_output_away_from_both_concepts_when_they_are_closer_than_it():
    """Two concepts read the same inputs X and their outputs are D apart. The merged output P is shared. Without a
    binding margin the best P is their midpoint (D/2 from each). The hinge max(0, m − d)² with m > D moves P off the
    line between them until d_1 = d_2 = m/2 (the minimum of 2d² + 2(m − d)²): it trades each concept's own
    fidelity for distance from the other. With D/2 < m < D the midpoint stays optimal."""
    g = torch.Generator().manual_seed(3)
    d_in, d_out, rows = 8, 5, 6  # rows < inputs: P = X Wᵀ can be any [rows, out] matrix
    w0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    x = torch.randn(rows, d_in, generator=g, dtype=torch.float64)
    deltas = [0.02 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(2)]
    gap = float(torch.linalg.norm(x @ (deltas[0] - deltas[1]).T))  # D
    pure = {"lambda_mse": 0.0, "lambda_reg": 0.0, "weight_decay": 0.0, "lr": 2e-3, "iters": 2000,
            "schedule": "cosine"}

    def distances(margin):
        w = loraclr_fuse(w0, [x, x], deltas, margin=margin, **pure)
        return [float(torch.linalg.norm(x @ (w - w0 - d).T)) for d in deltas]

    for margin in (0.0, 0.7 * gap):  # not binding at the optimum
        assert distances(margin) == pytest.approx([gap / 2, gap / 2], rel=2e-3)
    margin = 3 * gap
    assert distances(margin) == pytest.approx([margin / 2, margin / 2], rel=2e-3)


def test_rejects_mismatched_inputs():
    w0, feats, deltas = _problem(n_concepts=2)
    with pytest.raises(ValueError, match="one delta per concept"):
        loraclr_fuse(w0, feats, deltas[:1])
    with pytest.raises(ValueError, match="negatives"):
        loraclr_fuse(w0, feats, deltas, negatives="others")
