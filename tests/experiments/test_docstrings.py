"""The examples in the docstrings of training and the experiment helpers run and print what they claim."""

import doctest

import pytest

from pntk import training
from pntk.experiments import results, stats


@pytest.mark.parametrize("module", [training, stats, results], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
