"""Sharing the tiles of one kernel among the processes of a ``torch.distributed`` job.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment), or inside a process group the caller has
already initialised, every process computes a deterministic share of the tiles; collectives only pass small
Python objects (fingerprints, the store's description, the list of missing tiles) and synchronise the start
and the end. Before anything is written, the ranks compare what they were given (:func:`check_ranks_agree`):
one kernel from ranks with different models or inputs would be silently wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from .errors import RankMismatchError
from .tiling import Tile

if TYPE_CHECKING:
    from .store import StoreSpec


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

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects only)."""
        if self.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

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


def check_ranks_agree(group: Group, spec: StoreSpec, tensor_digests: dict[str, str], options: dict[str, Any]) -> None:
    """Stop every rank when the ranks were not given the same computation.

    Every rank gathers every rank's requested store spec (kind, shapes, dtype, engine, tile, fingerprints of
    the model, its behaviour and the inputs), the digests of its model's tensors, and other ``options``
    (memory budget, out path, ...), and compares them with rank 0's; all ranks see the same lists and raise the
    same error, so none waits for the others.

    Args:
        group: this job.
        spec: the store this rank would write (a :class:`pntk.store.StoreSpec`: a kernel's or features').
        tensor_digests: ``sha256:…`` of each of the model's tensors by name (and of its module tree).
        options: other settings that must agree, by name.

    Raises:
        RankMismatchError: naming each rank that differs from rank 0 and what differs (an option, a parameter
            or buffer by name, the module tree, the model's behaviour, ``data1``/``data2``).
    """
    from .probe import behaviour_difference  # the probe needs the kernels package

    everyone = group.all_gather((spec, tensor_digests, options))
    spec0, digests0, options0 = everyone[0]
    lines = []
    for rank, (spec_r, digests_r, options_r) in enumerate(everyone[1:], start=1):
        for f in fields(spec0):
            mine, theirs = getattr(spec0, f.name), getattr(spec_r, f.name)
            if f.name == "model":
                continue  # reported tensor by tensor below
            if f.name == "behaviour":
                # Only news when the weights and the probe inputs agree: they change the outputs too.
                same = digests_r == digests0 and getattr(spec_r, spec0.PROBED) == getattr(spec0, spec0.PROBED)
                difference = behaviour_difference(mine, theirs) if same and mine and theirs else None
                if difference:
                    lines.append(f"rank {rank}: {difference}")
            elif mine != theirs:
                what = {"data1": "the inputs data1", "data2": "the inputs data2", "data": "the inputs"}.get(
                    f.name, f.name
                )
                lines.append(
                    f"rank {rank}: {what} differ from rank 0's"
                    if f.name.startswith("data")
                    else f"rank {rank}: {what} is {theirs!r}, rank 0 has {mine!r}"
                )
        for name in sorted(set(digests0) | set(digests_r)):
            if name not in digests_r or name not in digests0:
                lines.append(
                    f"rank {rank}: the model {'lacks' if name not in digests_r else 'has an extra'} tensor {name!r}"
                )
            elif digests0[name] != digests_r[name]:
                what = "module tree" if name == "(module tree)" else f"parameter or buffer {name!r}"
                lines.append(f"rank {rank}: the model's {what} differs from rank 0's")
        for name in sorted(set(options0) | set(options_r)):
            if options0.get(name) != options_r.get(name):
                lines.append(
                    f"rank {rank}: option {name} is {options_r.get(name)!r}, rank 0 has {options0.get(name)!r}"
                )
    if lines:
        raise RankMismatchError(
            f"the {group.world_size} ranks of this job were not given the same computation, so no tile was "
            "written:\n  - "
            + "\n  - ".join(lines)
            + "\nEvery rank must build the same model (seed its initialisation, or load the same weights) and read "
            "the same inputs with the same options."
        )
