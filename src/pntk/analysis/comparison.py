"""How well a scalar kernel ``K`` stands in for the eNTK ``Θ``: ``Θ ≈ K ⊗ I_O``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pntk.analysis import _operators
from pntk.analysis._linalg import (
    ArrayLike,
    as_float64,
    condition_number,
    entk_as_blocks,
    kernel_precision,
    noise_floor,
)
from pntk.analysis._operators import is_matrix_free
from pntk.analysis.spectrum import eigenvalues, extreme_eigenvalues

__all__ = ["Comparison", "compare"]

# Temporaries of the chunked Frobenius sums stay under this many float64 values (64 MiB).
_CHUNK_VALUES = 1 << 23


@dataclass(frozen=True)
class Comparison:
    r"""Approximation quality of ``Θ ≈ K ⊗ I_O``, all in float64.

    The error :math:`E = \Theta - K \otimes I` splits into its block-diagonal part
    :math:`E_{aa} = \Theta_{aa} - K` and its off-diagonal part :math:`E_{ab} = \Theta_{ab}` (:math:`a \ne b`),
    with :math:`\|E\|_F^2 = \|E_\mathrm{diag}\|_F^2 + \|E_\mathrm{off}\|_F^2`. Relative values are over
    :math:`\|\Theta\|_F`.

    The spectral fields are ``None`` for a cross kernel (``N1 ≠ N2``, or ``spectrum=False``). ``λ(Θ)`` is the
    spectrum of the ``[N·O, N·O]`` matrix and is compared with ``λ(K)`` directly (``K ⊗ I`` has the
    eigenvalues of ``K``, each ``O`` times). ``κ = λ_max / λ_min`` is ``inf`` when
    ``λ_min ≤ n·ε₆₄·λ_max`` (``n`` the matrix size) or, for kernels computed in float32 or lower, when
    ``λ_min`` is below their rounding noise ``2√n·ε·max_i Θ_ii`` (``noise_floor_*``): below that level a
    computed ``λ_min`` is rounding noise, and it may even be slightly negative. A relative error is
    ``|value(K) − value(Θ)| / |value(Θ)|``:
    ``inf`` when only the eNTK value is zero, ``nan`` when it is undefined (both ``κ`` infinite, or ``0/0``).

    Attributes:
        N1: rows of ``K`` (inputs ``x1``).
        N2: columns of ``K`` (inputs ``x2``).
        O: number of outputs.
        norm_Theta: ``‖Θ‖_F``.
        error: ``‖Θ − K⊗I‖_F``.
        relative_error: ``‖Θ − K⊗I‖_F / ‖Θ‖_F``.
        diagonal_error: ``(Σ_a ‖Θ_aa − K‖_F²)^½``.
        relative_diagonal_error: ``diagonal_error / ‖Θ‖_F``.
        off_diagonal_error: ``(Σ_{a≠b} ‖Θ_ab‖_F²)^½``.
        relative_off_diagonal_error: ``off_diagonal_error / ‖Θ‖_F``.
        lambda_max_Theta: largest eigenvalue of ``Θ``.
        lambda_max_K: largest eigenvalue of ``K``.
        lambda_max_relative_error: relative error of ``λ_max``.
        lambda_min_Theta: smallest eigenvalue of ``Θ``.
        lambda_min_K: smallest eigenvalue of ``K``.
        lambda_min_relative_error: relative error of ``λ_min``.
        cond_Theta: condition number of ``Θ``.
        cond_K: condition number of ``K``.
        cond_relative_error: relative error of ``κ``.
        noise_floor_Theta: the rounding noise of ``Θ``'s eigenvalues in the dtype it was computed in.
        noise_floor_K: the same for ``K``.
    """

    N1: int
    N2: int
    O: int
    norm_Theta: float
    error: float
    relative_error: float
    diagonal_error: float
    relative_diagonal_error: float
    off_diagonal_error: float
    relative_off_diagonal_error: float
    lambda_max_Theta: float | None = None
    lambda_max_K: float | None = None
    lambda_max_relative_error: float | None = None
    lambda_min_Theta: float | None = None
    lambda_min_K: float | None = None
    lambda_min_relative_error: float | None = None
    cond_Theta: float | None = None
    cond_K: float | None = None
    cond_relative_error: float | None = None
    noise_floor_Theta: float | None = None
    noise_floor_K: float | None = None

    def to_dict(self) -> dict[str, int | float | None]:
        """The fields as a plain dict of Python numbers (``inf``/``nan`` kept as floats)."""
        return dataclasses.asdict(self)


def _relative(value: float, reference: float) -> float:
    """``|value − reference| / |reference|`` with IEEE semantics for zeros and infinities."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.abs(np.float64(value) - reference) / np.abs(np.float64(reference)))


def _frobenius_parts(Theta: np.ndarray, K: np.ndarray) -> tuple[float, float, float]:
    """``(‖Θ‖_F, ‖Θ_aa − K‖_F, ‖Θ_{a≠b}‖_F)`` of ``Θ [N1, N2, O, O]``, chunked over rows of ``K``.

    The off-diagonal part is summed directly rather than as ``‖Θ‖² − ‖Θ_aa‖²``, which would cancel when it
    is small — the regime of interest.
    """
    N1, N2, O, _ = Theta.shape
    off = ~np.eye(O, dtype=bool)
    rows = max(1, _CHUNK_VALUES // max(1, N2 * O * O))
    total = diagonal = off_diagonal = 0.0
    for i in range(0, N1, rows):
        block = Theta[i : i + rows]
        d = np.einsum("nmaa->nma", block) - K[i : i + rows, :, None]
        e = block[:, :, off]
        diagonal += np.vdot(d, d)
        off_diagonal += np.vdot(e, e)
        total += np.einsum("nmab,nmab->", block, block)
    return float(np.sqrt(total)), float(np.sqrt(diagonal)), float(np.sqrt(off_diagonal))


def compare(
    Theta: ArrayLike,
    K: ArrayLike,
    *,
    O: int | None = None,
    spectrum: bool | None = None,
    kernel_dtype: torch.dtype | str | None = None,
) -> Comparison:
    r"""Compare the eNTK ``Θ`` with a scalar kernel ``K`` (pNTK or trace NTK) through ``Θ ≈ K ⊗ I_O``.

    .. math::

        \frac{\|\Theta - K \otimes I\|_F}{\|\Theta\|_F}, \qquad
        \|\Theta - K \otimes I\|_F^2 = \sum_a \|\Theta_{aa} - K\|_F^2 + \sum_{a \ne b} \|\Theta_{ab}\|_F^2,

    and, for a square (symmetric) kernel, ``λ_max``, ``λ_min`` and ``κ`` of ``Θ`` against those of ``K``.
    See :class:`Comparison` for the fields and the conventions for singular kernels.

    Cost: ``O(N1·N2·O²)`` for the norms, in chunks of at most 64 MiB of temporaries; the spectrum is a dense
    ``eigvalsh`` of ``Θ`` as an ``[N·O, N·O]`` matrix, ``O((N·O)³)`` time and one copy of ``Θ``.

    Either kernel may be a :class:`pntk.KernelStore` or a pntk operator (:func:`pntk.operator`), which is
    never read whole: the norms stream its rows in blocks of 64 MiB (an operator's rows are products with unit
    vectors, ``N1·O / c`` passes for blocks of ``c`` rows), and the spectral fields, only with
    ``spectrum=True``, come from block Lanczos (:func:`extreme_eigenvalues`): ``λ_min`` to about
    ``1e-10 · λ_max``, so ``κ`` of a nearly singular kernel is a lower bound there.

    Args:
        Theta: eNTK ``[N1, N2, O, O]``, or its matrix ``[N1·O, N2·O]`` with row ``n·O + a``.
        K: ``[N1, N2]`` scalar kernel on the same inputs, on the scale of one diagonal entry of ``Θ``.
        O: number of outputs; inferred from the shapes when ``None``, checked otherwise.
        spectrum: whether to compute the spectral fields; ``None`` for "when ``N1 == N2``" (and for "no" when
            either kernel is a store or an operator). The kernels must then be symmetric (``x2`` the same
            inputs as ``x1``); only one triangle is read.
        kernel_dtype: the dtype both kernels were computed in; ``None`` for the dtype ``Theta`` carries
            (pass ``torch.float32`` for float64 copies of float32 kernels).

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: if the shapes do not match or ``spectrum=True`` with ``N1 ≠ N2``.

    Example:
        >>> import numpy as np
        >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> r = compare(np.kron(K, np.eye(3)), K)  # Θ = K ⊗ I exactly, as an [N·O, N·O] matrix
        >>> r.O, r.relative_error, r.off_diagonal_error, r.cond_K
        (3, 0.0, 0.0, 3.0)
    """
    if is_matrix_free(Theta, K):
        return _compare_matrix_free(Theta, K, O=O, spectrum=bool(spectrum), kernel_dtype=kernel_dtype)
    precision = kernel_precision(Theta, kernel_dtype)
    K = as_float64(K)
    Theta = as_float64(Theta)
    if K.ndim != 2:
        raise ValueError(f"K must be a scalar kernel [N1, N2]; got shape {K.shape}")
    N1, N2 = K.shape
    if Theta.ndim == 2 and N1 and Theta.shape[0] % N1 == 0:
        O_Theta = Theta.shape[0] // N1
        if Theta.shape == (N1 * O_Theta, N2 * O_Theta):
            Theta = entk_as_blocks(Theta, N1, N2, O_Theta)
    if Theta.ndim != 4 or Theta.shape[:2] != (N1, N2) or Theta.shape[2] != Theta.shape[3]:
        raise ValueError(
            f"Theta has shape {Theta.shape} and K {K.shape}: Theta must be [N1, N2, O, O] = "
            f"[{N1}, {N2}, O, O] or [N1·O, N2·O], with K [N1, N2]"
        )
    O_Theta = Theta.shape[2]
    if O is not None and O != O_Theta:
        raise ValueError(f"O = {O} but Theta has {O_Theta} outputs (shape {Theta.shape})")
    if spectrum is None:
        spectrum = N1 == N2
    elif spectrum and N1 != N2:
        raise ValueError(f"spectrum=True needs a square kernel; got K of shape {K.shape}")

    norm, diagonal, off_diagonal = _frobenius_parts(Theta, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.array([np.hypot(diagonal, off_diagonal), diagonal, off_diagonal]) / norm
    fields: dict[str, float] = {}
    if spectrum:
        w_Theta, w_K = eigenvalues(Theta), eigenvalues(K)
        floor_Theta = noise_floor(np.einsum("nnaa->na", Theta).max(initial=0.0), N1 * O_Theta, precision)
        floor_K = noise_floor(np.diagonal(K).max(initial=0.0), N1, precision)
        if precision == torch.float64:
            floor_Theta = floor_K = 0.0  # the n·ε₆₄·λ_max cut-off of condition_number is far above it
        fields["noise_floor_Theta"], fields["noise_floor_K"] = floor_Theta, floor_K
        extremes = {
            "lambda_max": (w_Theta[0], w_K[0]),
            "lambda_min": (w_Theta[-1], w_K[-1]),
            "cond": (
                condition_number(w_Theta[0], w_Theta[-1], N1 * O_Theta, floor_Theta),
                condition_number(w_K[0], w_K[-1], N1, floor_K),
            ),
        }
        for name, (of_Theta, of_K) in extremes.items():
            fields[f"{name}_Theta"] = float(of_Theta)
            fields[f"{name}_K"] = float(of_K)
            fields[f"{name}_relative_error"] = _relative(of_K, of_Theta)
    return Comparison(
        N1=N1,
        N2=N2,
        O=O_Theta,
        norm_Theta=norm,
        error=float(np.hypot(diagonal, off_diagonal)),
        relative_error=float(relative[0]),
        diagonal_error=diagonal,
        relative_diagonal_error=float(relative[1]),
        off_diagonal_error=off_diagonal,
        relative_off_diagonal_error=float(relative[2]),
        **fields,
    )


def _compare_matrix_free(
    Theta, K, *, O: int | None, spectrum: bool, kernel_dtype: torch.dtype | str | None
) -> Comparison:
    """:func:`compare` for kernels in stores or operators: the same fields from row blocks and Lanczos."""
    N1, N2 = _operators.matrix_shape(K)
    rows_Theta, cols_Theta = _operators.matrix_shape(Theta)
    O_Theta = rows_Theta // N1 if N1 else 0
    if N1 == 0 or (rows_Theta, cols_Theta) != (N1 * O_Theta, N2 * O_Theta):
        raise ValueError(
            f"Theta is {rows_Theta} × {cols_Theta} as a matrix and K {N1} × {N2}: Theta must be [N1·O, N2·O]"
        )
    if O is not None and O != O_Theta:
        raise ValueError(f"O = {O} but Theta has {O_Theta} outputs")
    if spectrum and N1 != N2:
        raise ValueError(f"spectrum=True needs a square kernel; got K of shape {(N1, N2)}")
    rows = max(1, _CHUNK_VALUES // max(1, N2 * O_Theta * O_Theta))
    squares = np.zeros(3)
    for i in range(0, N1, rows):
        block = slice(i, min(i + rows, N1))
        Theta_block = _operators.row_block(Theta, block, O_Theta).reshape(-1, N2, O_Theta, O_Theta)
        parts = _frobenius_parts(Theta_block, _operators.row_block(K, block, 1))
        squares += np.square(parts)
    norm, diagonal, off_diagonal = np.sqrt(squares)
    fields: dict[str, float] = {}
    if spectrum:
        precision = kernel_precision(None, kernel_dtype) if kernel_dtype else _operators.kernel_dtype_of(Theta)
        floor_Theta = noise_floor(_operators.max_diagonal(Theta), N1 * O_Theta, precision)
        floor_K = noise_floor(_operators.max_diagonal(K), N1, precision)
        if precision == torch.float64:
            floor_Theta = floor_K = 0.0
        fields["noise_floor_Theta"], fields["noise_floor_K"] = floor_Theta, floor_K
        top = [float(extreme_eigenvalues(A, 1, "LA")[0]) for A in (Theta, K)]
        bottom = [float(extreme_eigenvalues(A, 1, "SA")[0]) for A in (Theta, K)]
        extremes = {
            "lambda_max": top,
            "lambda_min": bottom,
            "cond": [
                condition_number(top[0], bottom[0], N1 * O_Theta, floor_Theta),
                condition_number(top[1], bottom[1], N1, floor_K),
            ],
        }
        for name, (of_Theta, of_K) in extremes.items():
            fields[f"{name}_Theta"], fields[f"{name}_K"] = float(of_Theta), float(of_K)
            fields[f"{name}_relative_error"] = _relative(of_K, of_Theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.array([np.hypot(diagonal, off_diagonal), diagonal, off_diagonal]) / norm
    return Comparison(
        N1=N1,
        N2=N2,
        O=O_Theta,
        norm_Theta=float(norm),
        error=float(np.hypot(diagonal, off_diagonal)),
        relative_error=float(relative[0]),
        diagonal_error=float(diagonal),
        relative_diagonal_error=float(relative[1]),
        off_diagonal_error=float(off_diagonal),
        relative_off_diagonal_error=float(relative[2]),
        **fields,
    )
