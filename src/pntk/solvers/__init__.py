"""Solvers that need only products with a kernel: a tensor, a :class:`pntk.KernelOperator` or a kernel store.

- :func:`eigsh`: extreme eigenpairs by block Lanczos with full reorthogonalisation and thick restarts;
- :func:`pcg`: ``(K + λI) W = Y`` by preconditioned conjugate gradients (:func:`nystrom`,
  :func:`pivoted_cholesky` preconditioners, :func:`kronecker` for an eNTK from its trace NTK; iterative refinement
  against a higher-precision operator), :func:`ridge_regression` on top of it;
- :func:`hutchpp`, :func:`spectral_density`, :func:`effective_rank`: traces and spectra;
- :func:`gradient_flow`: the linearised network at time ``t`` by Lanczos on ``exp(−ηtK)``.

Every iterative result reports its iterations and residual; a solver that stops short of its tolerance warns
with :class:`ConvergenceWarning`. Options live in one :class:`SolverOptions`.
"""

from .cg import CGResult, pcg
from .flow import FlowResult, gradient_flow
from .lanczos import Eigenpairs, eigsh
from .operand import as_operator
from .options import ConvergenceWarning, Preconditioner, SolverOptions
from .preconditioners import KroneckerPreconditioner, LowRankPreconditioner, kronecker, nystrom, pivoted_cholesky
from .regression import RegressionResult, ridge_regression
from .trace import EffectiveRank, SpectralDensity, TraceEstimate, effective_rank, hutchpp, spectral_density

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "EffectiveRank",
    "Eigenpairs",
    "FlowResult",
    "KroneckerPreconditioner",
    "LowRankPreconditioner",
    "Preconditioner",
    "RegressionResult",
    "SolverOptions",
    "SpectralDensity",
    "TraceEstimate",
    "as_operator",
    "effective_rank",
    "eigsh",
    "gradient_flow",
    "hutchpp",
    "kronecker",
    "nystrom",
    "pcg",
    "pivoted_cholesky",
    "ridge_regression",
    "spectral_density",
]
