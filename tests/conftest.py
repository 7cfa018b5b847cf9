"""Fixtures for every tier: seeds and a toy concept."""
import pytest
import torch

from support import make_concept


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def concept():
    return make_concept()
