"""BOUNDING_BOX values (pixels) to region boxes (fractions)."""
import pytest

from mixofshow_core.errors import RegionSpecError
from mixofshow_core.pixel_boxes import first_frame, ordered, pick
from mixofshow_core.regions import parse_spec

# As RT-DETR gives them: one list per image, most confident first, floats, with label and score.
DETECTED = [[
    {"x": 300.5, "y": 40.0, "width": 150.0, "height": 400.0, "label": "person", "score": 0.97},
    {"x": 20.0, "y": 100.0, "width": 200.0, "height": 380.0, "label": "person", "score": 0.91},
    {"x": 240.0, "y": 0.0, "width": 40.0, "height": 60.0, "label": "cat", "score": 0.60},
]]


def test_one_box_a_list_and_frames_give_the_same_boxes():
    box = {"x": 10, "y": 20, "width": 30, "height": 40}
    assert first_frame(box) == first_frame([box]) == first_frame([[box], [{**box, "x": 99}]])
    assert first_frame([]) == [] and first_frame([[]]) == []


@pytest.mark.parametrize("order, xs", [
    ("as given", [300.5, 20.0, 240.0]),
    ("left to right", [20.0, 240.0, 300.5]),
    ("top to bottom", [240.0, 300.5, 20.0]),  # centres y 30, 240, 290
    ("largest first", [20.0, 300.5, 240.0]),  # areas 76000, 60000, 2400
])
def test_orders_count_boxes_whatever_order_the_detector_gave(order, xs):
    assert [b.x for b in ordered(first_frame(DETECTED), order)] == xs


def test_pick_gives_fractions_of_the_image_that_a_region_spec_accepts():
    box = pick(DETECTED, 0, "left to right", 512, 512)
    assert box == pytest.approx({"x": 20 / 512, "y": 100 / 512, "width": 200 / 512, "height": 380 / 512})
    region = parse_spec({"version": 1, "regions": [box]})[0]
    assert (region.x, region.width) == pytest.approx((20 / 512, 200 / 512))


def test_a_box_reaching_past_the_image_is_clipped_to_it():
    box = pick({"x": -8, "y": 500, "width": 100, "height": 40}, 0, "as given", 512, 512)
    assert box == pytest.approx({"x": 0.0, "y": 500 / 512, "width": 92 / 512, "height": 12 / 512})
    assert box["y"] + box["height"] <= 1.0


@pytest.mark.parametrize("value, index, size, code, words", [
    ([[]], 0, (512, 512), "no_boxes", "found nothing"),
    (DETECTED, 3, (512, 512), "bad_index", "holds 3 box(es)"),
    ({"x": 600, "y": 0, "width": 50, "height": 50}, 0, (512, 512), "out_of_range", "no area inside the 512 x 512"),
    ({"x": 0, "y": 0, "width": 50}, 0, (512, 512), "bad_box", "x, y, width, height"),
    ({"x": 0, "y": 0, "width": 50, "height": float("nan")}, 0, (512, 512), "bad_box", "finite number"),
    ("0,0,50,50", 0, (512, 512), "bad_box", "found str"),
    ({"x": 0, "y": 0, "width": 50, "height": 50}, 0, (0, 512), "bad_box", "image size must be positive"),
])
def test_bad_boxes_say_what_was_expected_and_found(value, index, size, code, words):
    with pytest.raises(RegionSpecError) as err:
        pick(value, index, "as given", *size)
    assert err.value.code == code and words in str(err.value)


def test_an_unknown_order_is_refused():
    with pytest.raises(RegionSpecError, match="order must be one of"):
        ordered(first_frame(DETECTED), "random")
