"""Analyses of computed kernels: how well ``K ⊗ I`` approximates the eNTK, spectra, kernel regression and
the linearised gradient-flow dynamics.

Every function takes kernels (NumPy arrays or torch tensors, any dtype or device), never networks, and
returns NumPy float64. Kernel names and shapes follow the design: the eNTK ``Theta`` ``[N1, N2, O, O]``
(or its matrix ``[N1·O, N2·O]`` with row ``n·O + a``) and a scalar kernel ``K`` ``[N1, N2]``.
"""

from pntk.analysis._linalg import IllConditionedKernelError, IllConditionedKernelWarning, OnSingular
from pntk.analysis.comparison import Comparison, compare
from pntk.analysis.dynamics import GradientFlowPredictions, gradient_flow
from pntk.analysis.layers import LayerBreakdown, LayerShare, layer_breakdown
from pntk.analysis.regression import kernel_regression, kernel_regression_cg
from pntk.analysis.spectrum import Which, eigenvalues, extreme_eigenvalues

__all__ = [
    "Comparison",
    "GradientFlowPredictions",
    "IllConditionedKernelError",
    "IllConditionedKernelWarning",
    "LayerBreakdown",
    "LayerShare",
    "OnSingular",
    "Which",
    "compare",
    "eigenvalues",
    "extreme_eigenvalues",
    "gradient_flow",
    "kernel_regression",
    "kernel_regression_cg",
    "layer_breakdown",
]
