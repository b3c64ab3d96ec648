"""Nyström landmarks drawn by randomly pivoted Cholesky, against a float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import pntk
from pntk.features import Landmarks, Nystrom, rpcholesky_landmarks
from pntk.features.projection import seed_for
from pntk.kernels.inputs import Inputs
from reference import reference_kernel
from zoo import make_case

F64 = torch.float64


def mlp_case(n: int, seed: int = 0):
    model, make = make_case("mlp")
    return model.double(), make(n, torch.Generator().manual_seed(seed)).double()


def brute_force_pivots(K: torch.Tensor, m: int, seed: int, block: int = 32) -> torch.Tensor:
    """Block RPCholesky written plainly: each block drawn from the diagonal of ``K − K(:,S) K(S,S)⁺ K(S,:)``,
    recomputed from scratch, with the draws of the library's generator."""
    g = torch.Generator().manual_seed(seed_for(seed, "nystrom/rpcholesky"))
    S = torch.zeros(0, dtype=torch.long)
    while len(S) < m:
        C = K[:, S]
        d = (K - C @ torch.linalg.pinv(K[S][:, S], hermitian=True) @ C.T).diagonal().clamp(min=0)
        s = min(block, m - len(S), int((d > 0).sum()))
        S = torch.cat([S, torch.multinomial(d, s, replacement=False, generator=g)])
    return S.sort().values


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
def test_every_sample_a_pivot_gives_the_kernel_exactly(kind):
    model, make = make_case("cnn_pool")
    model = model.double()
    x = make(6, torch.Generator().manual_seed(0)).double()
    K = reference_kernel(model, x, kind=kind)
    assert torch.equal(rpcholesky_landmarks(model, x, 6, kind=kind), torch.arange(6))
    Phi = pntk.features(model, x, k=6, kind=kind, method="nystrom", landmarks="rpcholesky", dtype=F64)
    got = torch.einsum("nak,mbk->nmab", Phi, Phi) if kind == "entk" else Phi @ Phi.T
    assert torch.allclose(got, K, rtol=1e-8, atol=1e-10 * K.abs().max().item())


@pytest.mark.parametrize("block", [1, 3, 32])
def test_pivots_and_features_equal_a_float64_brute_force(block):
    model, x = mlp_case(30)
    x_test = mlp_case(7, seed=1)[1]
    K = reference_kernel(model, x, kind="pntk")
    from pntk.operators import operator
    from pntk.solvers.rpcholesky import rpcholesky

    got = rpcholesky(operator(model, x), 9, block=block, seed=seed_for(4, "nystrom/rpcholesky")).pivots.sort().values
    assert torch.equal(got, brute_force_pivots(K, 9, seed=4, block=block))
    index = rpcholesky_landmarks(model, x, 9, seed=4)
    assert torch.equal(index, brute_force_pivots(K, 9, seed=4))
    # Features of training and new inputs from the same landmarks and whitening:
    # Φ(x) Φ(x')ᵀ = K(x, L) K(L, L)⁻¹ K(L, x').
    nys = Nystrom(model, x[index], dtype=F64)
    K_test = reference_kernel(model, x_test, x, kind="pntk")
    expected = K_test[:, index] @ torch.linalg.solve(K[index][:, index], K[index])
    assert torch.allclose(nys(x_test) @ nys(x).T, expected, rtol=1e-8, atol=1e-10 * K.abs().max().item())
    Phi = pntk.features(model, x, k=9, method="nystrom", landmarks=Landmarks.RPCHOLESKY, seed=4, dtype=F64)
    assert torch.allclose(Phi, nys(x), rtol=1e-10, atol=1e-12)


def test_same_landmarks_and_features_for_any_chunking():
    model, x = mlp_case(40)
    index = rpcholesky_landmarks(model, x, 10, seed=2)
    for options in ({"batch_size": 3}, {"batch_size": 17}, {"memory": "200KB"}):
        assert torch.equal(rpcholesky_landmarks(model, x, 10, seed=2, **options), index)
    Phi = pntk.features(model, x, k=10, method="nystrom", landmarks="rpcholesky", seed=2)
    chunked = pntk.features(model, x, k=10, method="nystrom", landmarks="rpcholesky", seed=2, batch_size=4)
    assert torch.allclose(chunked, Phi, rtol=1e-12, atol=1e-12 * Phi.abs().max().item())
    other = rpcholesky_landmarks(model, x, 10, seed=3)
    assert not torch.equal(other, index)  # the seed draws the pivots


def test_the_first_pivot_is_drawn_in_proportion_to_the_diagonal():
    # Samples of very different norms, so that the diagonal of K is far from uniform.
    model, x = mlp_case(6)
    x = x * torch.tensor([0.3, 0.6, 1.0, 1.5, 2.0, 3.0], dtype=F64).unsqueeze(1)
    p = reference_kernel(model, x, kind="pntk").diagonal()
    p = (p / p.sum()).numpy()
    draws = np.array([int(rpcholesky_landmarks(model, x, 1, seed=s)[0]) for s in range(600)])
    counts = np.bincount(draws, minlength=6)
    # Pearson's χ² against the diagonal's proportions: a uniform draw (or one from the wrong diagonal) fails.
    assert stats.chisquare(counts, 600 * p).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(6, 100.0)).pvalue < 1e-6


def test_rpcholesky_loses_less_trace_than_uniform_landmarks_with_a_few_outlying_samples():
    # 60 samples in a 3-dimensional subspace and 4 far out in directions of their own: samples that a uniform
    # draw of 8 landmarks mostly misses, and that hold a third of the trace of K.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval().double()
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=F64))[0]
    x = torch.randn(64, 12, generator=g, dtype=F64)
    x[:60] = x[:60, :3] @ basis[:, :3].T
    x[60:] = 10 * basis[:, 3:7].T
    K = reference_kernel(model, x, kind="pntk")

    def trace_error(index: torch.Tensor) -> float:
        C = K[:, index]
        return float((K - C @ torch.linalg.pinv(K[index][:, index], hermitian=True) @ C.T).trace() / K.trace())

    uniform = np.array([trace_error(_uniform(64, 8, s)) for s in range(20)])
    pivoted = np.array([trace_error(rpcholesky_landmarks(model, x, 8, seed=s)) for s in range(20)])
    # Paired over seeds: a one-sided Wilcoxon signed-rank test, and a margin on the means (measured: 0.20
    # against 0.41).
    assert stats.wilcoxon(pivoted, uniform, alternative="less").pvalue < 1e-3
    assert pivoted.mean() < 0.7 * uniform.mean()


def _uniform(N: int, m: int, seed: int) -> torch.Tensor:
    """The indices of the landmarks that ``Nystrom.choose_landmarks`` draws (it returns the samples)."""
    tagged = Inputs.from_user(torch.arange(N, dtype=F64).unsqueeze(1), "x")
    return Nystrom.choose_landmarks(tagged, m, seed).tensors[0][:, 0].long()


def test_bad_landmark_choices_are_refused():
    model, x = mlp_case(10)
    with pytest.raises(ValueError, match="landmarks"):
        pntk.features(model, x, k=4, method="nystrom", landmarks="kmeans")
    with pytest.raises(ValueError, match="between 1 and N = 10"):
        rpcholesky_landmarks(model, x, 11)
    with pytest.raises(ValueError, match="between 1 and N = 10"):
        pntk.features(model, x, k=0, method="nystrom", landmarks="rpcholesky")
    with pytest.raises(ValueError, match="nystrom"):
        pntk.features(model, x, k=4, landmarks="rpcholesky")
