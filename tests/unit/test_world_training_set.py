"""A world concept's photos as a training set in memory: the same data as the photos written as files."""
import numpy as np
import pytest
import torch
from PIL import Image

from mixofshow_core.training.dataset import from_folder, from_tensors
from testbed.world import concepts, training_set


def test_in_memory_set_equals_the_photos_written_as_files(tmp_path):
    """What scripts/demo.py used to write to input/training/<name> reads back as exactly this set."""
    concept = training_set.by_name("rubo")
    images, captions, masks = concepts.concept_photos(concept)
    (tmp_path / "masks").mkdir()
    for i, (image, caption, mask) in enumerate(zip(images, captions, masks)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        Image.fromarray((mask * 255).round().astype(np.uint8)).save(tmp_path / "masks" / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(caption + "\n")
    in_memory, on_disk = from_tensors(*training_set.training_tensors("rubo")), from_folder(tmp_path)
    assert len(in_memory) == len(on_disk) == 6
    for a, b in zip(in_memory.samples, on_disk.samples):
        assert a.caption == b.caption and "<TOK>" in a.caption
        assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert in_memory.fingerprint() == on_disk.fingerprint()  # so a run's resume state fits both


def test_count_seed_and_unknown_names():
    pixels, captions, masks = training_set.training_tensors("zeta", count=3, seed=1)
    assert pixels.shape == (3, 64, 64, 3) and len(captions) == 3 and masks.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="rubo"):
        training_set.by_name("nobody")
