"""compare(): every field against an explicit K ⊗ I built with np.kron."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pntk.analysis import Comparison, compare, comparison

from ._reference import gram_entk, kron_entk, matrix, random_psd


def _reference(Theta: np.ndarray, K: np.ndarray) -> dict[str, float]:
    """All fields of a square comparison from the explicit matrices."""
    O = Theta.shape[2]
    T = matrix(Theta)
    E = T - np.kron(K, np.eye(O))
    diagonal_mask = np.kron(np.ones(K.shape), np.eye(O)).astype(bool)
    norm = np.linalg.norm(T)
    w_T, w_K = np.linalg.eigvalsh(T), np.linalg.eigvalsh(K)
    return {
        "norm_Theta": norm,
        "error": np.linalg.norm(E),
        "relative_error": np.linalg.norm(E) / norm,
        "diagonal_error": np.linalg.norm(E[diagonal_mask]),
        "relative_diagonal_error": np.linalg.norm(E[diagonal_mask]) / norm,
        "off_diagonal_error": np.linalg.norm(T[~diagonal_mask]),
        "relative_off_diagonal_error": np.linalg.norm(T[~diagonal_mask]) / norm,
        "lambda_max_Theta": w_T[-1],
        "lambda_max_K": w_K[-1],
        "lambda_max_relative_error": abs(w_K[-1] - w_T[-1]) / abs(w_T[-1]),
        "lambda_min_Theta": w_T[0],
        "lambda_min_K": w_K[0],
        "lambda_min_relative_error": abs(w_K[0] - w_T[0]) / abs(w_T[0]),
        "cond_Theta": w_T[-1] / w_T[0],
        "cond_K": w_K[-1] / w_K[0],
        "cond_relative_error": abs(w_K[-1] / w_K[0] - w_T[-1] / w_T[0]) / (w_T[-1] / w_T[0]),
    }


@pytest.fixture
def entk_and_pntk() -> tuple[np.ndarray, np.ndarray]:
    """A Gram eNTK (N = 7, O = 3, P = 40) and its pNTK, the mean of the block sums."""
    Theta, _ = gram_entk(np.random.default_rng(0), N=7, M=0, O=3, P=40)
    return Theta, Theta.sum(axis=(2, 3)) / 3


def test_all_fields_match_explicit_kronecker_reference(entk_and_pntk):
    Theta, K = entk_and_pntk
    result = compare(Theta, K)
    assert (result.N1, result.N2, result.O) == (7, 7, 3)
    for name, expected in _reference(Theta, K).items():
        assert getattr(result, name) == pytest.approx(expected, rel=1e-9), name
    # The parts are orthogonal: ‖E‖² = ‖E_diag‖² + ‖E_off‖².
    assert result.error**2 == pytest.approx(result.diagonal_error**2 + result.off_diagonal_error**2)


def test_matrix_layout_and_torch_inputs_give_the_same_result(entk_and_pntk):
    Theta, K = entk_and_pntk
    expected = compare(Theta, K).to_dict()
    assert compare(matrix(Theta), K, O=3).to_dict() == pytest.approx(expected, rel=1e-12)
    assert compare(torch.from_numpy(Theta), torch.from_numpy(K)).to_dict() == pytest.approx(expected, rel=1e-12)
    # float32 tensors are promoted to float64 before any arithmetic, and remember their precision.
    Theta32, K32 = torch.from_numpy(Theta).float(), torch.from_numpy(K).float()
    promoted = compare(Theta32.double().numpy(), K32.double().numpy(), kernel_dtype="float32").to_dict()
    assert compare(Theta32, K32).to_dict() == promoted
    assert promoted["noise_floor_Theta"] > 0 and expected["noise_floor_Theta"] == 0.0


def test_cross_kernel_has_frobenius_parts_but_no_spectrum():
    _, Theta = gram_entk(np.random.default_rng(1), N=5, M=4, O=2, P=30)
    K = Theta.mean(axis=(2, 3)) * 2
    result = compare(Theta, K)
    E = matrix(Theta) - np.kron(K, np.eye(2))
    assert result.relative_error == pytest.approx(np.linalg.norm(E) / np.linalg.norm(matrix(Theta)), rel=1e-12)
    assert (result.N1, result.N2) == (4, 5)
    assert result.lambda_max_Theta is None and result.cond_relative_error is None
    with pytest.raises(ValueError, match="square"):
        compare(Theta, K, spectrum=True)


def test_spectrum_can_be_skipped(entk_and_pntk):
    result = compare(*entk_and_pntk, spectrum=False)
    assert result.lambda_min_K is None and result.relative_error > 0


def test_singular_kernels_report_infinite_condition_number():
    rng = np.random.default_rng(2)
    K = random_psd(rng, 6, rank=3)
    result = compare(kron_entk(K, 2), K)
    assert result.cond_K == math.inf and result.cond_Theta == math.inf
    assert math.isnan(result.cond_relative_error)
    assert abs(result.lambda_min_K) < 1e-12
    # A regular K against a singular Θ: κ(Θ) = inf, so its relative error is undefined.
    regular = random_psd(rng, 6)
    assert math.isnan(compare(kron_entk(K, 2), regular).cond_relative_error)


def test_zero_theta_gives_nan_relative_errors():
    result = compare(np.zeros((3, 3, 2, 2)), np.zeros((3, 3)))
    assert result.error == 0.0 and math.isnan(result.relative_error)


def test_to_dict_lists_every_field(entk_and_pntk):
    d = compare(*entk_and_pntk).to_dict()
    assert list(d) == [f.name for f in Comparison.__dataclass_fields__.values()]
    assert all(isinstance(v, (int, float)) for v in d.values())


@pytest.mark.parametrize(
    ("Theta_shape", "K_shape", "O", "match"),
    [
        ((4, 4, 2, 2), (4, 3), None, "Theta has shape"),
        ((8, 7), (4, 4), None, "Theta has shape"),
        ((4, 4, 2, 3), (4, 4), None, "Theta has shape"),
        ((4, 4, 2, 2), (4, 4), 3, "O = 3"),
        ((4, 4, 2, 2), (4, 4, 1), None, "K must be"),
    ],
)
def test_shape_errors(Theta_shape, K_shape, O, match):
    with pytest.raises(ValueError, match=match):
        compare(np.ones(Theta_shape), np.ones(K_shape), O=O)


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 8),
    O=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    chunk=st.sampled_from([1, 7, 1 << 23]),
)
def test_exact_kronecker_has_zero_error(N, O, seed, chunk):
    K = random_psd(np.random.default_rng(seed), N)
    with mock.patch.object(comparison, "_CHUNK_VALUES", chunk):  # row chunks of every size
        result = compare(kron_entk(K, O), K)
    assert result.relative_error == 0.0 and result.off_diagonal_error == 0.0 and result.diagonal_error == 0.0
    assert result.norm_Theta == pytest.approx(np.sqrt(O) * np.linalg.norm(K), rel=1e-12)
    assert result.lambda_max_relative_error < 1e-10
    assert result.lambda_max_Theta == pytest.approx(np.linalg.eigvalsh(K)[-1], rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(N1=st.integers(1, 6), N2=st.integers(1, 6), O=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_pure_off_diagonal_perturbation(N1, N2, O, seed):
    """Adding only off-diagonal blocks leaves the diagonal error at zero and the off part equal to their norm."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((N1, N2))
    noise = rng.standard_normal((N1, N2, O, O)) * (1 - np.eye(O))
    result = compare(kron_entk(K, O) + noise, K, spectrum=False)
    assert result.diagonal_error == 0.0
    assert result.off_diagonal_error == pytest.approx(np.linalg.norm(noise), rel=1e-12)
