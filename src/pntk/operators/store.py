"""A kernel store on disk as a linear operator: products stream the tiles, never the whole kernel."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..distributed import Group, share
from ..planning import memory_budget
from ..store import KernelStore
from ..tiling import Tile
from .base import LinearOperator
from .kernel import _all_reduce, _rank


class StoreOperator(LinearOperator):
    """``K @ V`` for a kernel in a :class:`pntk.KernelStore`, reading it tile by tile.

    The shape is the store's matrix: ``(N1, N2)``, or ``(N1·O, N2·O)`` for an eNTK (row ``n·O + a``). A
    symmetric store is read once per product, its upper tiles only: a tile ``K_ij`` serves ``K_ij V_j`` and,
    mirrored, ``K_ijᵀ V_i``. A tile larger than the memory budget is read in slabs of rows. Under
    ``torch.distributed`` the ranks share the tiles and sum the result.

    Cost of a product with ``k`` columns: one read of the (upper half of the) store and ``N1·N2·k``
    multiply-adds (times ``O²`` for the eNTK).

    Args:
        store: a complete store.
        memory: the most bytes of kernel entries held at once, bytes or ``"2GB"``; default
            :func:`pntk.planning.memory_budget`'s.
        dtype: the dtype of the products; default: the store's.
        device: where products run; default: the CPU.
        progress: a progress bar over the tiles of each product; default: when stderr is a terminal.

    Raises:
        ValueError: the store misses tiles.

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> x = torch.randn(10, 3, dtype=torch.float64)
        >>> K = pntk.compute(net, x, kind="pntk", dtype=torch.float64, out=tempfile.mkdtemp() + "/k.zarr", batch_size=4)
        >>> v = torch.randn(10, dtype=torch.float64)
        >>> torch.allclose(K.operator() @ v, pntk.pntk(net, x, dtype=torch.float64) @ v)
        True
    """

    def __init__(
        self,
        store: KernelStore,
        *,
        memory: int | str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        progress: bool | None = None,
    ) -> None:
        missing = store.missing_tiles
        if missing:
            raise ValueError(
                f"{store.path} misses {len(missing)} of {len(store.spec.plan())} tiles, which read as NaN; finish "
                "it first (rerun the same pntk compute command, which resumes)"
            )
        spec = store.spec
        self.O = spec.O if spec.kind.is_matrix_valued else 1
        dtype = dtype or torch.from_numpy(np.zeros(0, dtype=store.dtype)).dtype
        super().__init__((spec.N1 * self.O, spec.N2 * self.O), dtype, torch.device(device), progress)
        self.store, self.spec = store, spec
        self.memory = memory_budget(self.device, memory)

    def _tiles(self) -> list[Tile]:
        rank, world = _rank()
        return share(self.spec.plan(), Group(rank, world))

    def _read(self, rows: slice, cols: slice) -> Tensor:
        """``K[rows, cols]`` as a matrix ``[len(rows)·O, len(cols)·O]`` in the operator's dtype."""
        values = torch.from_numpy(np.ascontiguousarray(self.store[rows, cols]))
        if values.dim() == 4:
            b1, b2, O, _ = values.shape
            values = values.permute(0, 2, 1, 3).reshape(b1 * O, b2 * O)
        return values.to(device=self.device, dtype=self.dtype)

    def _slabs(self, t: Tile) -> list[slice]:
        """Rows of a tile read at once: as many as fit the budget (an eNTK row carries ``O²`` numbers per column)."""
        row_bytes = (t.c1 - t.c0) * self.O * self.O * max(self.store.dtype.itemsize, self.dtype.itemsize)
        step = max(1, self.memory // max(1, 2 * row_bytes))
        return [slice(s, min(s + step, t.r1)) for s in range(t.r0, t.r1, step)]

    def _product(self, V: Tensor, transposed: bool) -> Tensor:
        O = self.O
        out = torch.zeros(
            self.shape[1] if transposed else self.shape[0], V.shape[1], dtype=self.dtype, device=self.device
        )
        for t in self._loop(self._tiles(), "tiles"):
            cols = slice(t.c0 * O, t.c1 * O)
            for slab in self._slabs(t):
                rows = slice(slab.start * O, slab.stop * O)
                M = self._read(slab, t.cols)
                if transposed:
                    out[cols] += M.T @ V[rows]
                else:
                    out[rows] += M @ V[cols]
                if self.spec.symmetric and not t.on_diagonal:
                    out[cols] += M.T @ V[rows]  # the mirror tile K_ji = K_ijᵀ, never read
        return _all_reduce([out])[0]

    def _matmat(self, V: Tensor) -> Tensor:
        return self._product(V, transposed=False)

    def _rmatmat(self, U: Tensor) -> Tensor:
        return self._product(U, transposed=not self.spec.symmetric)

    def _transpose(self) -> LinearOperator:
        return self if self.spec.symmetric else super()._transpose()

    def columns(self, index: Tensor) -> Tensor:
        """The columns ``K[:, index]`` read from the store (its column chunks only), in slabs of rows."""
        index = torch.as_tensor(index)
        O = self.O
        samples, inverse = torch.unique(index // O, return_inverse=True)
        out = torch.empty(self.shape[0], len(samples) * O, dtype=self.dtype, device=self.device)
        step = max(1, self.memory // max(1, 2 * len(samples) * O * O * self.store.dtype.itemsize))
        for s in self._loop(range(0, self.spec.N1, step), "row slabs"):
            slab = slice(s, min(s + step, self.spec.N1))
            values = torch.from_numpy(np.ascontiguousarray(self.store.array.oindex[slab, samples.numpy()]))
            if values.dim() == 4:
                b1, b2 = values.shape[:2]
                values = values.permute(0, 2, 1, 3).reshape(b1 * O, b2 * O)
            out[slab.start * O : slab.stop * O] = values.to(device=self.device, dtype=self.dtype)
        return out[:, (inverse * O + index % O).to(self.device)]

    def diagonal(self) -> Tensor:
        """The diagonal, from the diagonal tiles of a symmetric store.

        Raises:
            ValueError: the store is not symmetric (its ``x2`` was given).
        """
        if not self.spec.symmetric:
            raise ValueError(f"{self.store.path} holds K(x1, x2) with x2 given; only a symmetric store has a diagonal")
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for t in self._loop([t for t in self._tiles() if t.on_diagonal], "diagonal tiles"):
            for slab in self._slabs(t):
                M = self._read(slab, t.cols)  # [rows·O, cols·O]; its diagonal starts at column (slab - r0)·O
                offset = (slab.start - t.r0) * self.O
                out[slab.start * self.O : slab.stop * self.O] = M.diagonal(offset)
        return _all_reduce([out])[0]
