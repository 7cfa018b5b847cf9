"""The fusion report's end-to-end check (each concept's keys/values against its own model) and the text-encoder
scheme that fits each layer on the already-fused layers' outputs (text_inputs="fused"), on the tiny testbed."""
import pytest
import torch
from integration.host_support import random_concept

WORDS = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def items(host, testbed):
    model, clip, _ = testbed
    pipeline = host.pack("nodes.fusion.pipeline")
    with torch.inference_mode():
        return [pipeline.FusionItem(random_concept(host, model, clip, (f"<{w}1>", f"<{w}2>"), seed=70 + k,
                                                   up_std=0.05)) for k, w in enumerate(WORDS)]


def _fuse(host, testbed, items, **cfg):
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=64, steps=1, **cfg)
    model, clip, _ = testbed
    return host.pack("nodes.fusion.pipeline").fuse(model, clip, items, config)[3]


@pytest.mark.parametrize("text_inputs", ["own", "fused"])
def test_one_concept_fuses_to_itself_end_to_end(host, testbed, items, text_inputs):
    report = _fuse(host, testbed, items[:1], ridge=0.0, spatial_ridge=0.0, text_inputs=text_inputs)
    assert report.residual["text encoder"] < 1e-8
    (value,) = report.end_to_end.values()
    assert value < 1e-4
    assert "end to end, keys/values at each concept's tokens against its own model" in report.text()


def test_averaging_one_concept_is_exact_and_averaging_three_is_not(host, testbed, items):
    alone = _fuse(host, testbed, items[:1], mode="average")
    assert max(alone.end_to_end.values()) < 1e-5
    assert abs(alone.held_out - 1) < 1e-5  # the fused model is the concept's own: it moves ordinary prompts as far
    three = _fuse(host, testbed, items, mode="average")
    assert 0 < three.held_out < 1  # each change at a third moves them less than the strongest concept alone
    assert "held out, prompts without concept words" in three.text()
    errors = three.end_to_end
    assert sorted(errors) == sorted(i.concept.name for i in items)
    assert min(errors.values()) > 1e-2  # each concept's change diluted to a third: the check sees it


def test_both_text_schemes_fuse_three_concepts(host, testbed, items):
    own = _fuse(host, testbed, items, text_inputs="own")
    fused = _fuse(host, testbed, items, text_inputs="fused")
    assert own.layers["text encoder"] == fused.layers["text encoder"] == 8  # q, k, v, out of the tiny CLIP's 2 layers
    # round by round (q/k/v, then out_proj, of each layer) the same feature rows stream past as all at once
    assert fused.rows["text encoder"] == own.rows["text encoder"]
    for report in (own, fused):
        assert len(report.end_to_end) == 3 and all(0 < v < 1 for v in report.end_to_end.values())


@pytest.mark.parametrize("text_inputs", ["own", "fused"])
def test_kv_fitted_to_each_concepts_own_model_reproduce_it_end_to_end(host, testbed, items, text_inputs):
    """18 token rows (3 concepts x 2 prompts x 3 tokens) against 64 context dimensions: K/V can give every concept
    its own model's keys/values exactly, whatever the fused text encoder gets wrong."""
    official = _fuse(host, testbed, items, ridge=0.0, text_inputs=text_inputs, kv_targets="official")
    own_model = _fuse(host, testbed, items, ridge=0.0, text_inputs=text_inputs, kv_targets="own_model")
    assert max(own_model.end_to_end.values()) < 1e-6 < min(official.end_to_end.values())
    assert own_model.residual["cross-attention K/V"] < 1e-8
