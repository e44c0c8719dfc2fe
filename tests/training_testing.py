"""Shared helpers of the training tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one thread avoids OpenMP spin-waits on a shared 2-core machine (20x faster here).
    Imported by a test module, it applies to every test of that module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
