"""Data-parallel training under ``torchrun``: the same ``fit``, its windows shared out.

``torchrun --nproc-per-node N -m dynfit train CONFIG.toml --out DIR`` starts N
processes; :func:`context` sees torchrun's environment (``WORLD_SIZE``,
``RANK``), joins the process group (gloo on the CPU, NCCL on CUDA) and
returns a :class:`Context`. Every rank builds the same windows and takes every
N-th one; each loss is a sum over the rank's windows divided by the global
count, and losses and gradients are summed over ranks (all-reduce), so every
rank takes the same optimizer step as one process on all windows would (up to
the order of floating-point sums). Rank 0 alone writes checkpoints, history and
model. Without torchrun, :func:`context` returns None and nothing changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch



@dataclass
class Context:
    """This process's place in the group: ``rank`` of ``world`` (rank 0 writes)."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> torch.Tensor:
        """Indices (into n windows) this rank computes: rank, rank + world, ..."""
        if self.world > n:
            raise ValueError(
                f"{self.world} processes but only {n} training windows: every process needs at "
                f"least one; use at most {n} processes (--nproc-per-node) or more data"
            )
        return torch.arange(self.rank, n, self.world)

    def sum_(self, *tensors: torch.Tensor) -> None:
        """All-reduce (sum) in place, every rank ends with the same values."""
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def sum_grads(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            self.sum_(flat)
            i = 0
            for g in grads:
                g.copy_(flat[i : i + g.numel()].view_as(g))
                i += g.numel()

    def broadcast_(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank."""
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def gather(self, obj) -> list:
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def context(device: torch.device | None = None) -> Context | None:
    """The process group of a torchrun launch (joined on first call); None in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return (
            Context(dist.get_rank(), dist.get_world_size()) if dist.get_world_size() > 1 else None
        )
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    if not dist.is_available():
        raise RuntimeError(
            "this torch build has no torch.distributed; run in one process (without torchrun)"
        )
    backend = "nccl" if (device is not None and device.type == "cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size())
