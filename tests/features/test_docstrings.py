"""The examples in the feature docstrings run and print what they claim."""

from __future__ import annotations

import doctest

import pytest

from pntk.features import kernel, nystrom, projection, regression, sketch


@pytest.mark.parametrize("module", [kernel, nystrom, regression, sketch], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_the_package_is_the_function():
    import pntk

    assert callable(pntk.features) and pntk.features.FeatureKernel is pntk.FeatureKernel
    assert projection.Distribution("orthogonal") is pntk.features.Distribution.ORTHOGONAL
