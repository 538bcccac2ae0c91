"""Fixtures the heads tests share."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Two shared cores: torch's thread pool only slows small products down (use with usefixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
