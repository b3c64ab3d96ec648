"""Tile geometry: how an ``N1 × N2`` kernel is cut into tiles (only the upper ones when it is symmetric), and
memory sizes for people. How large a tile a budget allows is decided in :mod:`pntk.planning`."""

from __future__ import annotations

import re
from collections.abc import Callable
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


#: Bytes per unit of a memory size, by lower-case unit name.
_UNITS = {"": 1, "b": 1}
_UNITS.update({prefix + suffix: 1000**k for k, prefix in enumerate("kmgt", 1) for suffix in ("", "b")})
_UNITS.update({prefix + "ib": 1024**k for k, prefix in enumerate("kmgt", 1)})


def parse_bytes(size: int | str) -> int:
    """A memory size in bytes, from an int or a human string: ``"4G"``, ``"512MB"``, ``"2GiB"``, ``"1.5 GB"``.

    Decimal units (``k``/``kB``, ``M``/``MB``, ``G``/``GB``, ``T``/``TB``) are powers of 1000, binary ones
    (``KiB``, ``MiB``, ``GiB``, ``TiB``) powers of 1024; case is ignored.

    >>> parse_bytes("4G"), parse_bytes("512MB"), parse_bytes("2GiB"), parse_bytes(1024)
    (4000000000, 512000000, 2147483648, 1024)

    Raises:
        ValueError: not a positive size in a known unit.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
        unit = match and _UNITS.get(match.group(2).lower())
        if not match or not unit:
            raise ValueError(
                f"cannot read the memory size {size!r}; write bytes as an int or a number with a unit, "
                "e.g. '512M', '4G', '4GB', '2GiB'"
            )
        value = int(float(match.group(1)) * unit)
    if value < 1:
        raise ValueError(f"a memory size must be positive, got {size!r}")
    return value


def format_bytes(n: float) -> str:
    """A byte count for people, in decimal units: ``format_bytes(1.5e9) == "1.5 GB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def largest_tile(n: int, tile_bytes: Callable[[int], int], budget: int) -> int | None:
    """The largest tile edge ``t ≤ n`` with ``tile_bytes(t) ≤ budget``, or ``None`` if not even 1 fits.

    ``tile_bytes`` must not decrease with ``t`` (a bisection finds the edge).

    >>> largest_tile(1000, lambda t: 4 * t * t, 40_000)
    100
    """
    if tile_bytes(1) > budget:
        return None
    lo, hi = 1, n  # tile_bytes(lo) fits; find the last t that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tile_bytes(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
