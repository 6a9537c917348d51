"""``one_thread()``: torch on one intra-op thread inside a block, restored after (small tensors,
or fits side by side in parallel processes, where extra threads only spin)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
