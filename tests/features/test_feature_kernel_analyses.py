"""Every analysis takes a FeatureKernel as the operator it is, and agrees with the same analysis on the dense
ΦΦᵀ (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pntk.analysis import compare, extreme_eigenvalues, gradient_flow, kernel_regression
from pntk.features import FeatureKernel


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    # eNTK features [N, O, k] close to K ⊗ I, and the pNTK features they give; more rows than features, as a
    # sketch has, so the kernels are singular: the solves need their ridge.
    Phi = torch.randn(12, 3, 20, generator=g, dtype=torch.float64)
    train, test = Phi[:9], Phi[9:]
    Y = torch.randn(9, 3, generator=g, dtype=torch.float64)
    return train, test, Y


def dense(A, B=None):
    A2 = A.reshape(-1, A.shape[-1])
    B2 = A2 if B is None else B.reshape(-1, B.shape[-1])
    return (A2 @ B2.T).numpy()


def test_extreme_eigenvalues(features):
    train, _, _ = features
    K = FeatureKernel(train[:, 0])
    want = np.linalg.eigvalsh(dense(train[:, 0]))[::-1]
    np.testing.assert_allclose(extreme_eigenvalues(K, 3, "LA"), want[:3], rtol=1e-8)


def test_kernel_regression_and_gradient_flow(features):
    train, test, Y = features
    K_tt, K_st = FeatureKernel(train[:, 0]), FeatureKernel(test[:, 0], train[:, 0])
    ridge = 0.1
    want = kernel_regression(dense(train[:, 0]), dense(test[:, 0], train[:, 0]), Y.numpy(), ridge=ridge)
    got = kernel_regression(K_tt, K_st, Y.numpy(), ridge=ridge)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    t = 0.05
    flow = gradient_flow(dense(train[:, 0]), dense(test[:, 0], train[:, 0]), Y.numpy(), t)
    flow_op = gradient_flow(K_tt, K_st, Y.numpy(), t)
    np.testing.assert_allclose(flow_op.test, flow.test, rtol=1e-7, atol=1e-10)


def test_compare_of_feature_kernels(features):
    train, _, _ = features
    Theta = FeatureKernel(train)  # [N·O, N·O]
    K = FeatureKernel(train.sum(1) / np.sqrt(3))  # features of the sum of logits / √O: K = 1ᵀΘ1 / O
    want = compare(dense(train), dense(K.Phi1), spectrum=False)
    got = compare(Theta, K)
    np.testing.assert_allclose(got.relative_error, want.relative_error, rtol=1e-10)
    np.testing.assert_allclose(got.off_diagonal_error, want.off_diagonal_error, rtol=1e-10)
