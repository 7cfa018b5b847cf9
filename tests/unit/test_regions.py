"""Region specs (shared fixtures with the JS validator), official import, rasterisation at every level."""
import json
import pathlib

import pytest
import torch

from mixofshow_core.errors import RegionSpecError
from mixofshow_core.regions import Region, attention_grid, from_official, parse_spec, rasterize, to_spec

FIXTURES = sorted((pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "region_spec").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_shared_fixtures(path):
    case = json.loads(path.read_text())
    if case["expect"] == "valid":
        regions = parse_spec(case["text"])
        assert parse_spec(to_spec(regions)) == regions  # round trip
    else:
        with pytest.raises(RegionSpecError) as err:
            parse_spec(case["text"])
        assert err.value.code == case["expect"]
        assert len(str(err.value)) > 20


def test_official_boxes_are_y_first_pixels():
    rewrite = "[a <cat1> <cat2>]-*-[blurry]-*-[0, 0, 512, 384]|[a <dog1> <dog2>]-*-[]-*-[128, 384, 512, 768]"
    cat, dog = from_official(rewrite, image_height=512, image_width=768)
    assert (cat.x, cat.y, cat.width, cat.height) == (0.0, 0.0, 0.5, 1.0)
    assert cat.prompt == "a <cat1> <cat2>" and cat.negative == "blurry"
    assert (dog.x, dog.y, dog.width, dog.height) == (0.5, 0.25, 0.5, 0.75)
    with pytest.raises(RegionSpecError):
        from_official("[a]-*-[b]-*-[0, 0, 10]", 64, 64)


def test_attention_grids_for_non_square_and_non_multiple_of_64_sizes():
    # 72 x 104 pixels -> latent 9 x 13 -> 5 x 7 -> 3 x 4 -> 2 x 2
    assert [attention_grid(9, 13, n) for n in (117, 35, 12, 4)] == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert attention_grid(96, 64, 96 * 64 // 4) == (48, 32)
    with pytest.raises(RegionSpecError):
        attention_grid(9, 13, 50)


def test_boxes_shrink_to_whole_cells_and_tiny_ones_are_rescued_visibly():
    box = Region(0.25, 0.0, 0.5, 1.0)
    cells, rescued = rasterize(box, 4, 8)
    assert not rescued and cells.sum() == 16 and cells[:, 2:6].all()
    cells, rescued = rasterize(Region(0.3, 0.3, 0.2, 0.2), 8, 8)  # [2.4, 4.0) -> rows/cols 3
    assert cells.sum() == 1 and cells[3, 3] and not rescued
    tiny = Region(0.41, 0.41, 0.1, 0.1)
    cells, rescued = rasterize(tiny, 4, 4)
    assert rescued and cells.sum() == 1 and cells[1, 1]


def test_masks_area_average_and_are_rescued_too():
    mask = torch.zeros(64, 64)
    mask[:32, :] = 1
    region = Region(0, 0, 1, 1, mask=mask)
    cells, rescued = rasterize(region, 8, 8)
    assert not rescued and cells[:4].all() and not cells[4:].any()
    dot = torch.zeros(64, 64)
    dot[10, 10] = 1
    cells, rescued = rasterize(Region(0, 0, 1, 1, mask=dot), 4, 4)
    assert rescued and cells.sum() == 1 and cells[0, 0]
