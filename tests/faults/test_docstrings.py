"""The examples in the docstrings of the store, the probe, the errors and the checkpoints run as written."""

import doctest
import importlib

import pytest

MODULES = ["compute", "distributed", "errors", "probe", "store", "training"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"pntk.{name}")  # pntk.compute the module, not the function
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
