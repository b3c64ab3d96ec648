"""eigenvalues() and extreme_eigenvalues() against dense numpy eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import aslinearoperator

from pntk.analysis import Which, eigenvalues, extreme_eigenvalues

from ._reference import gram_entk, kron_entk, matrix, random_psd


class MatmulOnly:
    """A matrix-free kernel that only knows ``shape`` and ``@``, returning torch tensors."""

    def __init__(self, K: np.ndarray) -> None:
        self.K = torch.from_numpy(K)
        self.shape = K.shape
        self.products = 0

    def __matmul__(self, v: np.ndarray) -> torch.Tensor:
        self.products += 1
        return self.K @ torch.from_numpy(np.asarray(v, dtype=np.float64))


@pytest.fixture
def K() -> np.ndarray:
    # A spread-out spectrum so that Lanczos separates both ends quickly.
    return random_psd(np.random.default_rng(0), 40) + np.diag(np.linspace(0.0, 4.0, 40))


def test_eigenvalues_are_descending_and_match_numpy(K):
    w = eigenvalues(K)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(K)[::-1], rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(w) <= 0) and w.dtype == np.float64


def test_eigenvalues_of_entk_use_its_matrix():
    Theta, _ = gram_entk(np.random.default_rng(1), N=5, M=0, O=3, P=20)
    np.testing.assert_allclose(eigenvalues(Theta), np.linalg.eigvalsh(matrix(Theta))[::-1], atol=1e-12)
    np.testing.assert_allclose(eigenvalues(torch.from_numpy(Theta).float()), eigenvalues(Theta), atol=1e-5)


def test_kronecker_spectrum_repeats_each_eigenvalue_O_times(K):
    np.testing.assert_allclose(eigenvalues(kron_entk(K, 3)), np.repeat(eigenvalues(K), 3), atol=1e-12)


@pytest.mark.parametrize("which", ["LA", "SA", Which.SA])
@pytest.mark.parametrize(
    "wrap",
    [lambda K: K, torch.from_numpy, aslinearoperator, MatmulOnly],
    ids=["numpy", "torch", "LinearOperator", "matmul-only"],
)
def test_extreme_eigenvalues_match_dense(K, which, wrap):
    dense = np.linalg.eigvalsh(K)
    expected = dense[::-1][:3] if Which(which) is Which.LA else dense[:3]
    np.testing.assert_allclose(extreme_eigenvalues(wrap(K), 3, which), expected, rtol=1e-9, atol=1e-10)


def test_extreme_eigenvalues_of_entk_and_to_scipy_operator():
    Theta, _ = gram_entk(np.random.default_rng(2), N=8, M=0, O=2, P=50)
    largest = np.linalg.eigvalsh(matrix(Theta))[-1]
    assert extreme_eigenvalues(Theta)[0] == pytest.approx(largest, rel=1e-10)

    class WithToScipy:
        def to_scipy(self):
            return aslinearoperator(matrix(Theta))

    assert extreme_eigenvalues(WithToScipy())[0] == pytest.approx(largest, rel=1e-10)


def test_lanczos_is_matrix_free_and_reproducible(K):
    op = MatmulOnly(K)
    first = extreme_eigenvalues(op, 2)
    assert 0 < op.products < 40 * 40  # products only; the matrix was never materialised by the solver
    np.testing.assert_array_equal(first, extreme_eigenvalues(op, 2))  # same seed, same start vector


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"which": "LM"}, "'LA', 'SA'"), ({"k": 0}, "k must"), ({"k": 40}, "k must")],
)
def test_invalid_arguments(K, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extreme_eigenvalues(K, **kwargs)


def test_non_square_and_unsupported_operators():
    with pytest.raises(ValueError, match="square"):
        extreme_eigenvalues(np.ones((3, 4)))
    with pytest.raises(TypeError, match="linear operator"):
        extreme_eigenvalues(object())
    with pytest.raises(ValueError, match="square kernel"):
        eigenvalues(np.ones((3, 4)))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 12), seed=st.integers(0, 2**32 - 1))
def test_largest_eigenvalue_property(n, seed):
    K = random_psd(np.random.default_rng(seed), n)
    assert extreme_eigenvalues(K)[0] == pytest.approx(eigenvalues(K)[0], rel=1e-9)
