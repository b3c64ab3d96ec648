"""The examples in the analysis docstrings run and print what they claim."""

from __future__ import annotations

import doctest

import pytest

from pntk.analysis import _linalg, comparison, dynamics, regression, spectrum


@pytest.mark.parametrize("module", [_linalg, comparison, dynamics, regression, spectrum], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
