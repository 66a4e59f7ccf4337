"""Fixtures shared by the test modules; plain helpers live in :mod:`helpers`."""
import pytest
import torch

from helpers import photo, randomize


@pytest.fixture
def torch_single_thread():
    """Run a test with one intra-op thread: the tests' tiny tensors are 10-100x faster that way on a
    loaded machine (no OpenMP spinning); the previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(name='photo')
def _photo_fixture():
    return photo


@pytest.fixture(name='randomize')
def _randomize_fixture():
    return randomize
