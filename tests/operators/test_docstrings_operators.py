"""The examples in the docstrings of the operators and solvers run and print what they claim."""

from __future__ import annotations

import doctest

import pytest

from pntk.operators import base, kernel, store
from pntk.solvers import cg, flow, lanczos, regression, trace

MODULES = [base, kernel, store, cg, flow, lanczos, regression, trace]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
