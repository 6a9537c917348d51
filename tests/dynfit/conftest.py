import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP contention on shared CPUs (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
