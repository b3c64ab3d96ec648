"""Sharing the tiles of one kernel among the processes of a ``torch.distributed`` job.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment), or inside a process group the caller has
already initialised, every process computes a deterministic share of the tiles; collectives only pass small
Python objects (the store's description, the list of missing tiles) and synchronise the start and the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .tiling import Tile


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` among ``world_size`` processes (``0`` of ``1`` alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_leader(self) -> bool:
        """Rank 0, which creates, validates and finalises the store."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank (picklable objects only)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            dist.barrier()


@contextmanager
def process_group() -> Iterator[Group]:
    """The job this process belongs to.

    An initialised default process group is used as it is. Otherwise, when ``torchrun`` has set ``RANK`` and
    ``WORLD_SIZE > 1``, one is initialised from the environment (NCCL when CUDA is available, on the device
    ``LOCAL_RANK``; gloo otherwise) and destroyed on exit. Otherwise the process is alone.
    """
    if dist.is_available() and dist.is_initialized():
        yield Group(dist.get_rank(), dist.get_world_size())
        return
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Group()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    try:
        yield Group(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def share(tiles: Sequence[Tile], group: Group) -> list[Tile]:
    """This rank's tiles: cost-balanced round robin over ``tiles``, the same on every rank.

    Each tile, in order, goes to the rank with the least work so far (ties to the lower rank), its work
    being its number of rows times columns; equal tiles are dealt round robin, and the short tiles at the
    edges of the grid even out. Every rank keeps the plan's row-major order, so it prepares each row block it
    meets once.

    >>> from pntk.tiling import tile_plan
    >>> plan = tile_plan(5, 5, 2, symmetric=True)
    >>> [(t.i, t.j) for t in share(plan, Group(0, 2))], [(t.i, t.j) for t in share(plan, Group(1, 2))]
    ([(0, 0), (0, 2), (1, 2), (2, 2)], [(0, 1), (1, 1)])
    """
    load = [0] * group.world_size
    mine = []
    for t in tiles:
        rank = min(range(group.world_size), key=lambda r: (load[r], r))
        load[rank] += (t.r1 - t.r0) * (t.c1 - t.c0)
        if rank == group.rank:
            mine.append(t)
    return mine
