"""Shared fixtures: the three kinds of input the zoo must read."""

import pytest

# One sample of each dataset the library ships or reads: sklearn digits, MNIST-1D, CIFAR.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist1d": (1, 40), "cifar": (3, 32, 32)}


@pytest.fixture(params=list(INPUT_SHAPES.values()), ids=list(INPUT_SHAPES))
def in_shape(request: pytest.FixtureRequest) -> tuple[int, ...]:
    """The shape of one sample: ``(C, H, W)`` images or ``(C, L)`` signals."""
    return request.param
