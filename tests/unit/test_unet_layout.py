"""Cross-attention order and diffusers <-> LDM names, checked against the official SD1.5 table (spec §0.1)."""
import pytest

from mixofshow_core.errors import KeyMappingError
from mixofshow_core.unet_layout import UNetLayout, map_unet_modules, row_count, sdxl_layout
from support import SD15_TABLE


def sd15_layout():
    # listed scrambled on purpose: order must come from the structure, not the input order
    blocks = [f"output_blocks.{n}.1" for n in range(11, 2, -1)] + ["middle_block.1"]
    blocks += [f"input_blocks.{n}.1" for n in (8, 7, 5, 4, 2, 1)]
    return UNetLayout((2, 2, 2, 2), tuple(f"{b}.transformer_blocks.0" for b in blocks))


def test_sd15_order_and_block_ids_match_the_official_table():
    sites = sd15_layout().sites()
    assert len(sites) == 16
    for site, (diffusers, block) in zip(sites, SD15_TABLE):
        assert site.diffusers_prefix == f"{diffusers}.transformer_blocks.0"
        assert site.block == block and site.depth == 0
    assert [s.index for s in sites] == list(range(16))


def test_deep_transformers_count_every_block_sdxl_style():
    blocks = {"input_blocks.4.1": 2, "input_blocks.5.1": 2, "input_blocks.7.1": 10, "input_blocks.8.1": 10,
              "middle_block.1": 10, **{f"output_blocks.{n}.1": 10 for n in (0, 1, 2)},
              **{f"output_blocks.{n}.1": 2 for n in (3, 4, 5)}}
    paths = tuple(f"{b}.transformer_blocks.{k}" for b, depth in blocks.items() for k in range(depth))
    sites = UNetLayout((2, 2, 2), paths).sites()
    assert len(sites) == 70
    assert sites[0].diffusers_prefix == "down_blocks.1.attentions.0.transformer_blocks.0"
    assert sites[2].ldm_prefix == "input_blocks.5.1.transformer_blocks.0"
    assert sites[24].block == ("middle", 0) and sites[24].depth == 0
    assert sites[-1].diffusers_prefix == "up_blocks.1.attentions.2.transformer_blocks.1"
    assert [s.row for s in sites[:5]] == [0, 0, 1, 1, 2] and sites[24].row == 4 and sites[-1].row == 10
    assert row_count(sites) == 11 and sdxl_layout().sites() == sites  # the pack's SDXL constant is this layout
    assert [s.row for s in sd15_layout().sites()] == list(range(16))  # SD1.x: one transformer per block


def test_module_names_map_both_ways():
    layout = sd15_layout()
    assert layout.diffusers_to_ldm("down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k") == \
        "input_blocks.8.1.transformer_blocks.0.attn2.to_k"
    assert layout.diffusers_to_ldm("mid_block.attentions.0.proj_in") == "middle_block.1.proj_in"
    assert layout.diffusers_to_ldm("up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0") == \
        "output_blocks.11.1.transformer_blocks.0.attn1.to_out.0"


def test_unmappable_modules_are_all_listed():
    with pytest.raises(KeyMappingError) as err:
        map_unet_modules(sd15_layout(), ["down_blocks.0.resnets.0.conv1", "up_blocks.0.attentions.0.proj_in",
                                         "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"])
    assert "2 UNet LoRA module(s)" in str(err.value)
    assert "down_blocks.0.resnets.0.conv1" in str(err.value) and "up_blocks.0.attentions.0.proj_in" in str(err.value)
