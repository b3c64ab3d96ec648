"""Random-feature sketches of a network's NTK: ``Φ`` with ``E[Φ Φᵀ] = K``, and what to do with them.

- :func:`features` / :class:`FeatureMap`: ``Φ = J R / √k`` from the structured engine's per-layer factors with
  Kronecker projections (dense projections for parameters without a rule), for every kind;
- :class:`Nystrom`: features from landmark samples and exact kernel columns, the landmarks drawn uniformly or by
  randomly pivoted Cholesky (:class:`Landmarks`, :func:`rpcholesky_landmarks`);
- :class:`FeatureKernel`: ``Φ Φᵀ`` as a linear operator, with its spectrum from the ``k × k`` Gram;
- :class:`FeatureRidge` and :func:`feature_regression`: kernel ridge regression solved in ``k`` dimensions;
- :func:`compute_features` / :class:`FeatureStore`: the rows of ``Φ`` in a resumable Zarr store, streamed.

The package itself is callable: ``pntk.features(model, x, k=...)`` is :func:`features`, so that the function
the design names and the namespace of its classes (``pntk.features.FeatureKernel``) are one object.
"""

import sys
import types

from .kernel import FeatureKernel
from .nystrom import Landmarks, Nystrom, rpcholesky_landmarks
from .projection import Distribution
from .regression import FeatureRidge, feature_regression
from .sketch import FeatureMap, Method, features
from .store import FeatureSpec, FeatureStore, compute_features

__all__ = [
    "Distribution",
    "FeatureKernel",
    "FeatureMap",
    "FeatureRidge",
    "FeatureSpec",
    "FeatureStore",
    "Landmarks",
    "Method",
    "Nystrom",
    "compute_features",
    "feature_regression",
    "features",
    "rpcholesky_landmarks",
]


class _Callable(types.ModuleType):
    """This package, callable as :func:`features`."""

    def __call__(self, *args, **kwargs):
        return features(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
