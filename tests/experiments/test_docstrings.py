"""The examples in the docstrings of training and the experiment helpers run and print what they claim."""

import doctest
import importlib

import pytest

from pntk import training
from pntk.experiments import results, runtime, stats
from pntk.models import layers

# the package re-exports functions under these module names
regression = importlib.import_module("pntk.experiments.regression")
timing = importlib.import_module("pntk.experiments.timing")


MODULES = [training, stats, results, regression, runtime, timing, layers]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
