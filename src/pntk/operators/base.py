"""The base of every pntk linear operator: shapes, products, transposition and a SciPy view.

A subclass writes one product, :meth:`LinearOperator._matmat` on a ``[n_cols, k]`` block of columns in the
operator's dtype and device, and says how it is transposed; the base turns every accepted input into such a
block and back, owns the loop over chunks (with its progress bar), and gives ``@``, ``.T``, ``.to_scipy()``
and ``.to_dense()``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

Item = TypeVar("Item")


class LinearOperator:
    """A matrix of shape ``(n_rows, n_cols)`` known only through its products.

    Attributes:
        shape: ``(n_rows, n_cols)``.
        dtype: the dtype of the products.
        device: where the products are computed and returned.
        progress: show progress bars over the chunks of a product (``None``: when stderr is a terminal and a
            product has several chunks).

    Products accept ``[n_cols]`` vectors and ``[n_cols, k]`` blocks, as torch tensors (returned as tensors on
    :attr:`device`, in :attr:`dtype`) or NumPy arrays (returned as NumPy arrays); subclasses may accept more
    shapes (see :meth:`_as_block`).
    """

    def __init__(
        self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device, progress: bool | None = None
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.device = torch.device(device)
        self.progress = progress

    # --- what a subclass writes ---------------------------------------------------------------------------

    def _matmat(self, V: Tensor) -> Tensor:
        """``A @ V`` for ``V`` ``[n_cols, k]`` in :attr:`dtype` on :attr:`device`; returns ``[n_rows, k]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _matmat, its product with a block")

    def _transpose(self) -> LinearOperator:
        """``Aᵀ`` as an operator (the base wraps ``self`` in a lazy transpose that needs :meth:`_rmatmat`)."""
        return _Transposed(self)

    def _rmatmat(self, U: Tensor) -> Tensor:
        """``Aᵀ @ U`` for ``U`` ``[n_rows, k]``; returns ``[n_cols, k]``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no transposed product; build the operator with its arguments swapped"
        )

    def columns(self, index: Tensor) -> Tensor:
        """The columns ``A[:, index]``, ``[n_rows, len(index)]``: by default one product with unit vectors;
        subclasses read them more cheaply where they can.

        Args:
            index: ``[s]`` column indices.
        """
        index = torch.as_tensor(index, device=self.device)
        E = torch.zeros(self.shape[1], len(index), dtype=self.dtype, device=self.device)
        E[index, torch.arange(len(index), device=self.device)] = 1
        return self._matmat(E)

    def diagonal(self) -> Tensor:
        """The diagonal ``[min(n_rows, n_cols)]``.

        Raises:
            NotImplementedError: the operator cannot give it exactly.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot give its diagonal")

    # --- shapes -------------------------------------------------------------------------------------------

    def _as_block(self, V: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``V`` as a block ``[n_cols, k]``, and the shape of the result for this input's shape.

        Raises:
            ValueError: ``V`` has no accepted shape.
        """
        n = self.shape[1]
        if V.dim() == 1 and V.shape[0] == n:
            return V.reshape(n, 1), (self.shape[0],)
        if V.dim() == 2 and V.shape[0] == n:
            return V, (self.shape[0], V.shape[1])
        raise ValueError(
            f"cannot multiply an operator of shape {self.shape} with an operand of shape {list(V.shape)}; "
            f"pass [{n}] or [{n}, k]"
        )

    # --- the public products ------------------------------------------------------------------------------

    def __matmul__(self, V):
        """``A @ V``: see the class docstring for the accepted operands."""
        numpy = isinstance(V, np.ndarray)
        if numpy:
            V = torch.from_numpy(np.ascontiguousarray(V))
        elif not isinstance(V, Tensor):
            return NotImplemented
        if not (V.is_floating_point() or V.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"the operand must hold real numbers, got dtype {V.dtype}")
        block, shape = self._as_block(V.to(device=self.device, dtype=self.dtype))
        out = self._matmat(block.contiguous()).reshape(shape)
        return out.cpu().numpy() if numpy else out

    def matmat(self, V):
        """The same as ``self @ V``."""
        return self @ V

    @property
    def T(self) -> LinearOperator:  # noqa: N802 - the usual name of a transpose
        """``Aᵀ``, shape ``(n_cols, n_rows)``."""
        return self._transpose()

    def to_scipy(self):
        """A float64 :class:`scipy.sparse.linalg.LinearOperator` view: products run here, in :attr:`dtype`.

        Example:
            >>> import torch
            >>> from pntk.operators import DenseOperator
            >>> A = DenseOperator(torch.eye(3, dtype=torch.float64) * 2)
            >>> A.to_scipy().matvec([1.0, 2.0, 3.0])
            array([2., 4., 6.])
        """
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        def product(V):
            V = np.asarray(V, dtype=np.float64)
            return (self @ V.reshape(self.shape[1], -1)).astype(np.float64).reshape(self.shape[0], *V.shape[1:])

        def transposed(U):
            U = np.asarray(U, dtype=np.float64)
            return (self.T @ U.reshape(self.shape[0], -1)).astype(np.float64).reshape(self.shape[1], *U.shape[1:])

        return ScipyOperator(
            self.shape, matvec=product, matmat=product, rmatvec=transposed, rmatmat=transposed, dtype=np.float64
        )

    def to_dense(self, chunk: int = 256) -> Tensor:
        """The whole matrix ``[n_rows, n_cols]``, from products with chunks of the identity (costly: meant for
        small operators and tests)."""
        n = self.shape[1]
        columns = []
        for s in range(0, n, chunk):
            w = min(chunk, n - s)
            E = torch.zeros(n, w, dtype=self.dtype, device=self.device)
            E[torch.arange(s, s + w), torch.arange(w)] = 1
            columns.append(self._matmat(E))
        return torch.cat(columns, 1)

    # --- the chunk loop -------------------------------------------------------------------------------------

    def _loop(self, items: Sequence[Item], desc: str) -> Iterator[Item]:
        """``items`` one by one, with a progress bar over them (see :attr:`progress`)."""
        show = self.progress if self.progress is not None else (len(items) > 1 and sys.stderr.isatty())
        yield from tqdm(items, desc=desc, unit="chunk", disable=not show, leave=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class _Transposed(LinearOperator):
    """``Aᵀ`` of an operator that implements :meth:`LinearOperator._rmatmat`."""

    def __init__(self, A: LinearOperator) -> None:
        super().__init__((A.shape[1], A.shape[0]), A.dtype, A.device, A.progress)
        self.A = A

    def _matmat(self, V: Tensor) -> Tensor:
        return self.A._rmatmat(V)

    def _rmatmat(self, U: Tensor) -> Tensor:
        return self.A._matmat(U)

    def _transpose(self) -> LinearOperator:
        return self.A

    def diagonal(self) -> Tensor:
        return self.A.diagonal()


class DenseOperator(LinearOperator):
    """A matrix held in memory, as an operator: what solvers see when they are given a tensor or an array.

    Args:
        M: ``[n_rows, n_cols]`` tensor or NumPy array (kept as it is, on its device, in its dtype).

    Example:
        >>> import torch
        >>> A = DenseOperator(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        >>> A @ torch.tensor([1.0, 1.0]), A.diagonal()
        (tensor([3., 4.]), tensor([2., 3.]))
    """

    def __init__(self, M: Tensor | np.ndarray) -> None:
        M = torch.as_tensor(M)
        if M.dim() != 2:
            raise ValueError(f"a dense operator needs a matrix; got shape {list(M.shape)}")
        if not M.is_floating_point():
            M = M.to(torch.get_default_dtype())
        super().__init__((M.shape[0], M.shape[1]), M.dtype, M.device)
        self.M = M

    def _matmat(self, V: Tensor) -> Tensor:
        return self.M @ V

    def _rmatmat(self, U: Tensor) -> Tensor:
        return self.M.T @ U

    def columns(self, index: Tensor) -> Tensor:
        return self.M[:, torch.as_tensor(index, device=self.M.device)]

    def diagonal(self) -> Tensor:
        return self.M.diagonal()
