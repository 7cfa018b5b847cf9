"""What a user of a ComfyUI older than 0.3.41 sees when training: a clear error (the opt-in 2024 host)."""
import pytest
import torch
from integration.test_training import _dataset, _train


def test_old_host_error(host, backward_supported):
    """ComfyUI before 0.3.41 cannot back-propagate through its transformer blocks: the node says so."""
    if backward_supported:
        pytest.skip("this ComfyUI back-propagates as shipped (0.3.41 or newer); the error shows on older hosts")
    glue = host.pack("nodes.training.train_host")
    with torch.inference_mode():
        bed = host.pack("testbed.model").build_testbed(3, std=None)
    with pytest.raises(glue.UnsupportedHostError, match="0.3.41 or newer"):
        _train(host, bed, _dataset(host), "old_host", 1)
