"""Tile plans: how an ``N1 × N2`` kernel is cut into tiles, and only the upper ones when it is symmetric."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Tile:
    """The tile ``kernel[rows, cols]``, with ``rows = range(r0, r1)`` and ``cols = range(c0, c1)``.

    ``i`` and ``j`` are its row and column indices in the grid of tiles.
    """

    i: int
    j: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def rows(self) -> slice:
        return slice(self.r0, self.r1)

    @property
    def cols(self) -> slice:
        return slice(self.c0, self.c1)

    @property
    def on_diagonal(self) -> bool:
        return self.i == self.j and self.r0 == self.c0


def edges(n: int, tile: int) -> list[tuple[int, int]]:
    """``[(0, tile), (tile, 2·tile), …, (·, n)]``: the last block may be shorter."""
    if tile < 1:
        raise ValueError(f"tile size must be a positive integer, got {tile}")
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


def tile_plan(n1: int, n2: int, tile: int, *, symmetric: bool = False) -> list[Tile]:
    """Tiles in row-major order; with ``symmetric`` (``n1 == n2``, ``x2 = x1``) only those with ``j ≥ i``.

    >>> [(t.i, t.j) for t in tile_plan(5, 5, 2, symmetric=True)]
    [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    """
    if symmetric and n1 != n2:
        raise ValueError(f"a symmetric plan needs a square kernel, got {n1} × {n2}")
    row_edges, col_edges = edges(n1, tile), edges(n2, tile)
    return [
        Tile(i, j, r0, r1, c0, c1)
        for i, (r0, r1) in enumerate(row_edges)
        for j, (c0, c1) in enumerate(col_edges)
        if not symmetric or j >= i
    ]
