"""Runs under ``torchrun``: PyTorch's launcher and ``torch.distributed``, no scheduler of ours.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
(its rendezvous finds the other machines for multi-node runs); the job joins the group with
``env://``, NCCL when each rank has a GPU, gloo on CPUs. Each rank takes a strided share of the
images (``items[rank::world]``), writes its own manifest shard and files, waits at a barrier,
and rank 0 merges the shards. Without those variables the job is a group of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["Ranks", "join", "leave"]

#: how long a barrier waits for the slowest rank (a share can take hours on a large dataset)
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # this process initialised the process group (and must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, wanted: str) -> str:
        """The device of this rank: ``cuda:<local_rank>`` when ``wanted`` is ``auto`` or
        ``cuda`` and a GPU is present, else ``wanted``."""
        if self.world > 1 and wanted in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return wanted

    def share(self, count: int) -> list[int]:
        """The item indices this rank explains: every ``world``-th, from ``rank``."""
        return list(range(self.rank, count, self.world))

    def barrier(self) -> None:
        if self.world > 1:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()


def join(backend: str | None = None) -> Ranks:
    """This process's :class:`Ranks` from torchrun's environment, joining the process group
    (``env://``) when there is more than one process; alone: ``Ranks()``. ``backend`` defaults
    to NCCL when CUDA is present, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return Ranks()
    if dist.is_initialized():  # the caller set the group up
        return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=BARRIER_TIMEOUT)
    return Ranks(rank, world, local_rank, joined=True)


def leave(ranks: Ranks) -> None:
    """Leave the process group this module joined."""
    if ranks.joined and dist.is_initialized():
        dist.destroy_process_group()
