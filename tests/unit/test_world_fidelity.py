"""Fidelity measures of the world benchmark, checked on ground-truth scenes (no model involved)."""
import numpy as np
import pytest

from testbed.world import concepts, fidelity, recipe, render, scorer

C = concepts.CONCEPTS


def _scene(placed, layout_positions, ground="black", seed=0):
    """A ground-truth render with each concept drawn small at the given world positions."""
    objects = [render.moved(c.look, size="small", position=p) for c, p in zip(placed, layout_positions)]
    image, _ = render.render(objects, ground, seed=seed)
    return image


def test_identity_of_true_renders_is_exact_and_of_look_alikes_is_not():
    for concept in C:
        image, _ = render.render([concept.look], "grey", seed=1)
        got = scorer.recognise(image)
        assert fidelity.identity_score([got], concept) == {"exact": 1.0, "attributes": 1.0}
        assert fidelity.identify(got, C) == concept.name
        for other in concepts.look_alikes(concept):
            near = scorer.recognise(render.render([other], "grey", seed=1)[0])
            assert fidelity.identity_score([near], concept)["exact"] == 0.0
            assert fidelity.identify(near, C, min_match=4) != concept.name
            # the default (nearest concept, 3 of 4 attributes) still calls a near miss by its nearest concept
            assert fidelity.identify(near, C) in (concept.name, None)


def test_nothing_found_scores_zero_and_identifies_nothing():
    image, _ = render.render([], "grey")
    got = scorer.recognise(image)
    assert not got.found and fidelity.attribute_match(got, C[0].look) == 0.0 and fidelity.identify(got, C) is None
    with pytest.raises(ValueError, match="at least one"):
        fidelity.identity_score([], C[0])


def test_binding_counts_right_boxes_and_bleed():
    placed = [C[0], C[1]]
    right_way = [_scene(placed, ["left", "right"], seed=s) for s in range(3)]
    swapped = [_scene(placed, ["right", "left"], seed=s) for s in range(3)]
    boxes = fidelity.LAYOUTS[2]
    for images, want in ((right_way, {"right": 1.0, "bleed": 0.0}), (swapped, {"right": 0.0, "bleed": 1.0})):
        per_box = [[scorer.recognise(image, box) for image in images] for box in boxes]
        got = fidelity.binding(per_box, placed, C)
        assert {k: got[k] for k in want} == want and got["boxes"] == 6.0
    with pytest.raises(ValueError, match="one recognition list per placed concept"):
        fidelity.binding([[]], placed, C)


def test_three_box_layout_reads_each_concept():
    placed = [C[2], C[3], C[4]]
    image, _ = render.render([render.moved(c.look, size="small", position=p)
                              for c, p in zip(placed, ["left", "right", "bottom"])], "grey")
    # left/right objects sit at mid-height, inside the top boxes' lower edge region; use tall boxes to read them
    boxes = [(0.0, 0.0, 0.5, 0.62), (0.5, 0.0, 0.5, 0.62), (0.25, 0.62, 0.5, 0.38)]
    per_box = [[scorer.recognise(image, box)] for box in boxes]
    assert fidelity.binding(per_box, placed, C)["right"] == 1.0


def test_captions_and_table():
    assert fidelity.concept_caption(C[0]) == "<rubo1> <rubo2>, large, black background"
    assert fidelity.scene_caption(C[:2]) == "<rubo1> <rubo2> and <zeta1> <zeta2>, black background"
    table = fidelity.markdown_table(("a", "b"), [("x", 0.5)])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x | 0.50 |"]


def test_colour_binding_of_plain_objects():
    objects = [render.Obj("circle", "red", "plain", render.SHADE, "small", "left"),
               render.Obj("square", "blue", "plain", render.SHADE, "small", "right")]
    image, _ = render.render(objects, "black")
    boxes = fidelity.LAYOUTS[2]
    per_box = [[scorer.recognise(image, box)] for box in boxes]
    assert fidelity.colour_binding(per_box, ["red", "blue"]) == {"right": 1.0, "bleed": 0.0, "empty": 0.0,
                                                                 "boxes": 2.0}
    assert fidelity.colour_binding(per_box, ["blue", "red"])["bleed"] == 1.0
    with pytest.raises(ValueError, match="one recognition list per box colour"):
        fidelity.colour_binding(per_box, ["red"])


@pytest.mark.parametrize("count", [2, 3])
def test_box_scene_puts_each_concept_in_its_own_box(count):
    boxes = fidelity.LAYOUTS[count]
    for start in range(0, len(C) - count + 1, count):
        placed = list(C[start: start + count])
        image = fidelity.box_scene(placed, boxes, seed=start)
        got = fidelity.binding([[scorer.recognise(image, box)] for box in boxes], placed, C)
        assert got["right"] == 1.0, (count, [c.name for c in placed], got)
        swapped = fidelity.box_scene(placed[::-1], boxes, seed=start)
        assert fidelity.binding([[scorer.recognise(swapped, box)] for box in boxes], placed, C)["right"] < 1.0
    with pytest.raises(ValueError, match="one box per concept"):
        fidelity.box_scene(C[:2], boxes[:1])


@pytest.mark.parametrize("count", [2, 3])
def test_box_scene_on_the_box_canvas_draws_each_box_like_a_photo(count):
    boxes, (width, height) = fidelity.LAYOUTS[count], recipe.BOX_CANVAS[count]
    placed = list(C[count: 2 * count])
    image = fidelity.box_scene(placed, boxes, size="large", canvas=(width, height))
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    for concept, (x, y, w, h) in zip(placed, boxes):  # each box holds exactly the concept's own 64-px render
        left, top = round(x * width), round(y * height)
        alone = render.render([render.moved(concept.look, size="large", centre=(0.5, 0.5))], "black", 0)[0]
        assert np.array_equal(image[top: top + 64, left: left + 64], alone)
    got = fidelity.binding([[scorer.recognise(image, box)] for box in boxes], placed, C)
    assert got["right"] == 1.0, ([c.name for c in placed], got)
    with pytest.raises(ValueError, match=r"every box to be 64x64 px; .* is 32x64 px"):
        fidelity.box_scene(placed, boxes, canvas=(width // 2, height))
