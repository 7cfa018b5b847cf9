"""Concept model and LoRA scale semantics."""
import pytest
import torch

from mixofshow_core import Concept, ConceptFileError, ConceptWordError, LoRAPair
from support import make_concept


def test_lora_delta_uses_alpha_not_alpha_over_rank():
    down, up = torch.randn(4, 6), torch.randn(5, 4)
    pair = LoRAPair(down=down, up=up)
    assert torch.allclose(pair.delta(0.7), 0.7 * up @ down)
    assert pair.rank == 4 and pair.in_features == 6 and pair.out_features == 5


def test_concept_discovers_layers_width_rank_and_family():
    c = make_concept(layers=16, width=8)
    assert (c.layer_count, c.text_width, c.rank) == (16, 8, 4)
    assert c.embedding_stack().shape == (2, 16, 8)
    wide = Concept(words=["<x>"], embeddings={"<x>": torch.zeros(16, 768)})
    assert wide.base_family == "sd1" and wide.name == "<x>"
    assert Concept(words=["<x>"], embeddings={"<x>": torch.zeros(16, 1024)}).base_family == "sd2"


@pytest.mark.parametrize("words", [["<a b>"], [""], ["<a>", "<a>"]])
def test_bad_words_are_rejected(words):
    with pytest.raises(ConceptWordError):
        Concept(words=words, embeddings={w: torch.zeros(2, 4) for w in words})


def test_embeddings_must_share_one_shape():
    with pytest.raises(ConceptFileError, match="shared shape"):
        Concept(words=["<a>", "<b>"], embeddings={"<a>": torch.zeros(2, 4), "<b>": torch.zeros(3, 4)})


def test_mismatched_lora_halves_are_rejected():
    with pytest.raises(ValueError, match="same rank"):
        Concept(words=["<a>"], embeddings={"<a>": torch.zeros(2, 4)},
                unet_lora={"m": LoRAPair(down=torch.zeros(4, 3), up=torch.zeros(3, 2))})


def test_rename_words_keeps_rows_and_lora():
    from mixofshow_core.concept import rename_words

    c = make_concept()
    renamed = rename_words(c, ["<dog1>", "<dog2>"])
    assert renamed.words == ["<dog1>", "<dog2>"] and renamed.word_groups == [["<dog1>", "<dog2>"]]
    assert torch.equal(renamed.embeddings["<dog2>"], c.embeddings["<cat2>"]) and renamed.unet_lora is c.unet_lora
    with pytest.raises(ConceptWordError, match="exactly that many"):
        rename_words(c, ["<only>"])
