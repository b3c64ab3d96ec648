"""How a kernel operator splits its work under a memory budget: one function, :func:`plan_product`.

# NOTE: [operator memory]
# A product ``K V`` passes over the samples in chunks. A chunk of ``c`` samples holds its prepared factors
# (the structured engine's ``block_bytes``, which also bounds the activations of ruled layers that a pass
# keeps) and, per column of ``V`` that shares the pass, the intermediates of the factored products (one
# tensor the size of every ruled layer's output per column, ``E = W·D`` in the pull and ``H = A·U`` in the
# push, bounded by one sample's pNTK factors) or, for NTK-vector products, one set of activations per column.
# Columns beyond :data:`COLUMNS` pass in groups that share each chunk's factors. The factors of all chunks are
# cached across products when they fit half of the budget, so that a product of the pNTK, whose cotangents do
# not depend on ``V``, costs no network pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernels.kinds import Kind
from ..kernels.model import FunctionalModel
from ..kernels.structured import StructuredEngine
from ..tiling import parse_bytes

#: The budget when none is given: the working memory of a product, not of the interpreter and the model.
DEFAULT_MEMORY = "2GB"

#: The most columns that share one pass over the samples (more are split into groups of this many).
COLUMNS = 32


@dataclass(frozen=True)
class ProductPlan:
    """How products of one operator are split.

    Attributes:
        chunk: samples per chunk of a pass.
        columns: columns of ``V`` per group, whose intermediates a chunk holds at once (the parameter-space
            vectors of all groups, ``k·P`` numbers, are held through a product).
        cache: keep every chunk's factors between products.
        sample_bytes: the prepared factors of one sample (what caching costs per sample).
        column_bytes: the intermediates of one column per sample and pass.
        memory: the budget in bytes.
    """

    chunk: int
    columns: int
    cache: bool
    sample_bytes: int
    column_bytes: int
    memory: int


def plan_product(
    fm: FunctionalModel,
    kind: Kind,
    num_samples: int,
    *,
    memory: int | str | None = None,
    batch_size: int | None = None,
    rows_per_sample: int = 1,
) -> ProductPlan:
    """The chunking of a kernel operator's products under ``memory``.

    Args:
        fm: the model.
        kind: the kernel's kind (its factors hold ``R = 1`` cotangent per sample for the pNTK, ``O`` otherwise).
        num_samples: the distinct samples whose factors a product reads (``N1``, plus ``N2`` when ``x2`` is
            not ``x1``).
        memory: the budget, bytes or a string such as ``"2GB"``; default :data:`DEFAULT_MEMORY`.
        batch_size: samples per chunk, overriding the budget's choice.
        rows_per_sample: parameter-space vectors one column of ``V`` needs (``O`` for the trace NTK).

    Returns:
        The plan; see the note [operator memory].

    Raises:
        ValueError: ``batch_size`` is not a positive integer, or ``memory`` not a size.
    """
    budget = parse_bytes(memory if memory is not None else DEFAULT_MEMORY)
    engine = StructuredEngine()
    prepared = Kind.PNTK if kind is Kind.PNTK else Kind.ENTK
    sample_bytes = max(1, engine.block_bytes(fm, 1, prepared))
    # One column's intermediates per sample: the size of one row of factors (the pNTK's).
    column_bytes = max(1, engine.block_bytes(fm, 1, Kind.PNTK))
    columns = max(1, COLUMNS // rows_per_sample)
    # Per sample of a chunk: its factors, and two intermediates per parameter-space vector of a group.
    per_sample = sample_bytes + 2 * columns * rows_per_sample * column_bytes
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        chunk = batch_size
    else:
        chunk = max(1, min(num_samples, (budget // 4) // per_sample))
    cache = num_samples * sample_bytes <= budget // 2
    return ProductPlan(
        chunk=chunk, columns=columns, cache=cache, sample_bytes=sample_bytes, column_bytes=column_bytes, memory=budget
    )
