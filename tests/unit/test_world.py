"""The synthetic world of the testbed: deterministic renders, captions, and a scorer checked on ground truth."""
import itertools

import numpy as np
import pytest

from testbed.world import concepts, render, scorer


def _grid():
    """Every shape × colour × pattern × accent (shade, or each other hue for patterns) at both sizes."""
    rng = np.random.default_rng(0)
    for shape, colour, pattern in itertools.product(render.SHAPES, render.COLOURS, render.PATTERNS):
        accents = [render.SHADE] + ([a for a in render.COLOURS if a != colour] if pattern != "plain" else [])
        for accent, size in itertools.product(accents, render.SIZES):
            position = list(render.POSITIONS)[int(rng.integers(5))]
            ground = render.BACKGROUNDS[int(rng.integers(3))]
            yield render.Obj(shape, colour, pattern, accent, size, position), ground, int(rng.integers(1000))


def test_renders_and_datasets_are_deterministic():
    a, _ = render.render([render.Obj("circle", "red", "striped")], "texture", seed=3)
    b, _ = render.render([render.Obj("circle", "red", "striped")], "texture", seed=3)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    images1, captions1 = concepts.base_dataset(20, seed=5)
    images2, captions2 = concepts.base_dataset(20, seed=5)
    assert np.array_equal(images1, images2) and captions1 == captions2
    assert not np.array_equal(images1, concepts.base_dataset(20, seed=6)[0])


def test_autoencoder_images_include_two_hue_objects_and_are_deterministic():
    """The autoencoder sees second hues (as SD's VAE has seen everything); the UNet's captions never do."""
    images = concepts.autoencoder_dataset(60, seed=2)
    assert images.shape == (60, 64, 64, 3) and np.array_equal(images, concepts.autoencoder_dataset(60, seed=2))
    accents = {scorer.recognise(image).accent for image in images}
    assert accents - {"", render.SHADE}, accents  # some object carries another palette hue


def test_captions_name_what_is_drawn():
    objs = [render.Obj("triangle", "blue", "dotted", size="small", position="left"),
            render.Obj("square", "yellow", "plain", size="small", position="right")]
    assert render.caption(objs, "grey") == ("a small blue dotted triangle on the left and a small yellow square on the "
                                            "right, grey background")
    novel = render.Obj("circle", "red", "dotted", "yellow")
    assert novel.phrase() == "a large red circle with yellow dots"


def test_base_world_never_shows_a_novel_concept():
    _, captions = concepts.base_dataset(300, seed=0)
    assert not any(" with " in c for c in captions)  # novel accents are only in concept photos


def test_scorer_accuracy_on_ground_truth():
    """Measured over the full attribute grid (624 renders); reported in the README."""
    fields = ("shape", "colour", "pattern", "accent", "size", "position")
    right = dict.fromkeys(fields, 0)
    total = 0
    for obj, ground, seed in _grid():
        image, _ = render.render([obj], ground, seed=seed)
        got = scorer.recognise(image)
        want = {**obj.__dict__, "accent": obj.accent if obj.pattern != "plain" else ""}
        for f in fields:
            right[f] += getattr(got, f) == want[f]
        total += 1
    accuracy = {f: right[f] / total for f in fields}
    assert total == 624
    assert min(accuracy.values()) >= 0.985, accuracy
    assert accuracy["shape"] == accuracy["pattern"] == accuracy["size"] == accuracy["position"] == 1.0


@pytest.mark.parametrize("concept", concepts.CONCEPTS, ids=lambda c: c.name)
def test_each_concept_is_recognised_and_its_look_alikes_are_not(concept):
    images, captions, masks = concepts.concept_photos(concept, 12, seed=1)
    assert images.shape == (12, 64, 64, 3) and masks.shape == (12, 64, 64)
    assert all(c.startswith("<TOK>, ") for c in captions)
    assert all(scorer.matches(scorer.recognise(image), concept.look) for image in images)
    for other in concepts.look_alikes(concept):
        for position in render.POSITIONS:
            image, _ = render.render([render.moved(other, position=position)], "grey", seed=2)
            assert not scorer.matches(scorer.recognise(image), concept.look), (concept.name, other)


def test_scorer_reads_each_box_of_a_two_object_scene():
    left = render.Obj("circle", "red", "dotted", "yellow", "small", "left")
    right = render.Obj("square", "blue", "striped", "orange", "small", "right")
    image, _ = render.render([left, right], "texture", seed=1)
    assert scorer.matches(scorer.recognise(image, box=(0.0, 0.25, 0.5, 0.5)), left)
    assert scorer.matches(scorer.recognise(image, box=(0.5, 0.25, 0.5, 0.5)), right)
    assert not scorer.recognise(image, box=(0.3, 0.0, 0.4, 0.12)).found  # empty ground
