"""Regional attention against a direct dense computation (spec §3.3)."""
import torch

from mixofshow_core.regional_attention import regional_output


def attend(q, k, v):
    return torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v


def test_inside_outside_overlap_cond_and_uncond_rows_batch_two():
    g = torch.Generator().manual_seed(0)
    batch, tokens, width = 4, 16, 8  # rows: cond, cond, uncond, uncond
    q = torch.randn(batch, tokens, width, generator=g)
    glob = torch.randn(batch, 5, width, generator=g)
    prompt = [torch.randn(1, 5, width, generator=g) for _ in range(2)]
    negative = [torch.randn(1, 5, width, generator=g) for _ in range(2)]
    kinds = [0, 0, 1, 1]
    ctx = [torch.cat([negative[r] if k else prompt[r] for k in kinds]) for r in range(2)]
    masks = torch.zeros(2, tokens, dtype=torch.bool)
    masks[0, :10] = True
    masks[1, 6:12] = True  # overlap on 6..9
    project = torch.nn.Linear(width, width, bias=False)
    base = project(attend(q, glob, glob))
    with torch.no_grad():
        out = regional_output(q, base, [(c, c) for c in ctx], masks, [1.0, 3.0], attend, project, (glob, glob))
        plain = regional_output(q, base, [(c, c) for c in ctx], masks, [1.0, 3.0], attend, project)
        a0, a1 = attend(q, ctx[0], ctx[0]), attend(q, ctx[1], ctx[1])
        expected = base.clone()
        expected[:, :6] = project(a0[:, :6])
        expected[:, 6:10] = project((1 * a0[:, 6:10] + 3 * a1[:, 6:10]) / 4)
        expected[:, 10:12] = project(a1[:, 10:12])
    assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(plain, expected, atol=1e-5)
    assert torch.equal(out[:, 12:], base[:, 12:])
    # uncond rows really used the negatives: swapping them changes only those rows
    swapped = [torch.cat([prompt[r] for _ in kinds]) for r in range(2)]
    with torch.no_grad():
        other = regional_output(q, base, [(c, c) for c in swapped], masks, [1.0, 3.0], attend, project, (glob, glob))
    assert torch.allclose(other[:2], out[:2], atol=1e-6) and not torch.allclose(other[2:], out[2:], atol=1e-3)


def test_delta_form_keeps_what_other_patches_added():
    g = torch.Generator().manual_seed(1)
    q, glob, ctx = (torch.randn(1, 8, 4, generator=g) for _ in range(3))
    masks = torch.zeros(1, 8, dtype=torch.bool)
    masks[0, :4] = True
    extra = torch.randn(1, 8, 4, generator=g)  # e.g. an image-prompt patch's contribution
    base = attend(q, glob, glob) + extra
    out = regional_output(q, base, [(ctx, ctx)], masks, [1.0], attend, global_kv=(glob, glob))
    assert torch.allclose(out[:, :4], attend(q, ctx, ctx)[:, :4] + extra[:, :4], atol=1e-6)
    assert torch.equal(out[:, 4:], base[:, 4:])


def test_regions_with_different_context_lengths_take_the_per_region_path():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 12, 4, generator=g)
    base = torch.randn(2, 12, 4, generator=g)
    short, long = torch.randn(2, 3, 4, generator=g), torch.randn(2, 7, 4, generator=g)
    masks = torch.zeros(2, 12, dtype=torch.bool)
    masks[0, :5] = True
    masks[1, 8:] = True
    out = regional_output(q, base, [(short, short), (long, long)], masks, [1.0, 1.0], attend)
    assert torch.allclose(out[:, :5], attend(q, short, short)[:, :5], atol=1e-6)
    assert torch.allclose(out[:, 8:], attend(q, long, long)[:, 8:], atol=1e-6)
    assert torch.equal(out[:, 5:8], base[:, 5:8])
