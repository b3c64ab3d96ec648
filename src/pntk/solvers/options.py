"""The options of every iterative solver, in one dataclass, and the warning a solver gives when it stops short."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at its iteration cap before reaching its tolerance.

    The result is the last iterate, with its residual reported; raise ``maxiter``, loosen ``tol``, or (for
    conjugate gradients) add a ridge or a stronger preconditioner.
    """


class Preconditioner(str, enum.Enum):
    """The preconditioner of :func:`pntk.solvers.pcg` for ``(K + λI) W = Y``.

    - ``NYSTROM``: randomised Nyström approximation ``K ≈ U Λ Uᵀ`` from one product with ``rank`` Gaussian
      columns (Frangella, Tropp & Udell 2023); best when the spectrum decays fast.
    - ``PIVOTED_CHOLESKY``: randomised pivoted Cholesky ``K ≈ F Fᵀ`` (Chen, Epperly, Tropp & Webber 2024):
      pivots drawn by the residual diagonal, ``rank`` columns read in blocks; needs the exact diagonal.
    - ``KRONECKER``: for an eNTK operator ``Θ`` (``pntk.operator(..., kind="entk")``): the trace NTK's
      randomised pivoted Cholesky of rank ``rank``, ``⊗ I_O`` (:func:`pntk.solvers.kronecker`), since
      ``Θ ≈ K ⊗ I_O`` with the trace NTK the best such ``K``; its factor holds ``N × rank`` numbers where the
      eNTK's would hold ``N·O × rank``. For an eNTK given otherwise, build it with
      :func:`pntk.solvers.kronecker` and pass it as ``preconditioner=``.
    - ``NONE``: plain conjugate gradients.
    - ``AUTO``: ``KRONECKER`` for an eNTK operator, else ``PIVOTED_CHOLESKY``. For the same memory the Kronecker
      factor has ``O`` times the rank of the eNTK's own: on MNIST-1D's MLP at N = 2,000 (``O = 10``) it needed
      72 iterations at initialisation and 682 after training, against 205 and 500 for the eNTK's own factor of
      the same rank (ten times the memory) and 1,418 after training for one of the same memory.
    """

    AUTO = "auto"
    NYSTROM = "nystrom"
    PIVOTED_CHOLESKY = "pivoted_cholesky"
    KRONECKER = "kronecker"
    NONE = "none"


@dataclass(frozen=True)
class SolverOptions:
    """How the iterative solvers run. Every solver reads the fields it needs and ignores the others.

    Attributes:
        tol: the relative accuracy asked for. Conjugate gradients: ``‖Y − (K + λI) W‖ ≤ tol · ‖Y‖`` per
            column. Lanczos eigenpairs: ``‖K y − θ y‖ ≤ tol · max|θ|`` per wanted pair (an eigenvalue is then
            within about ``tol² · max|θ|² / gap`` of the truth). Gradient flow: the estimated error of the
            Lanczos approximation of ``e^{−ηtK} r`` relative to ``‖r‖``.
        maxiter: the iteration cap: conjugate-gradient iterations (default 1000), Lanczos
            restarts (default 100), Lanczos steps for the gradient flow (default ``min(N, 500)``).
        seed: the seed of every random draw (start blocks, probes, sketches), for reproducible results.
        block_size: columns per block of block Lanczos (each block is one product with that many columns);
            default: the number of wanted eigenpairs, at most 16.
        krylov_dim: the largest basis of block Lanczos before a thick restart; default ``max(3k, k + 4b, 40)``,
            at most ``N``.
        preconditioner: a :class:`Preconditioner` or its name; default ``"auto"``: for an eNTK operator the
            Kronecker preconditioner, else pivoted Cholesky, whose columns a kernel operator contracts from its
            factors (built 100× faster than Nyström's product at N = 3,000 on MNIST-1D, for the same
            iterations), with Nyström standing in for an operator without a diagonal.
        rank: the rank of the preconditioner (columns of ``K`` it reads, in one product or in blocks); it holds
            ``n × rank`` numbers in the kernel's precision, at least float32 (200 MB at ``n = 10⁵`` for the
            default 500 and a float32 kernel). On the pNTK of an MLP on MNIST-1D (N = 3,000, λ = 10⁻³ · mean
            diagonal) rank 100 needs 84 iterations to 10⁻⁴, rank 300 44.
        num_probes: random probe vectors of Hutch++ and stochastic Lanczos quadrature.
        lanczos_steps: Lanczos steps per probe of stochastic Lanczos quadrature (nodes of its quadrature).
        progress: show progress bars over the iterations; default: when stderr is a terminal.
    """

    tol: float = 1e-8
    maxiter: int | None = None
    seed: int = 0
    block_size: int | None = None
    krylov_dim: int | None = None
    preconditioner: Preconditioner | str = Preconditioner.AUTO
    rank: int = 500
    num_probes: int = 30
    lanczos_steps: int = 40
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not self.tol > 0:
            raise ValueError(f"tol must be positive; got {self.tol}")
        for name in ("maxiter", "block_size", "krylov_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
        for name in ("rank", "num_probes", "lanczos_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
