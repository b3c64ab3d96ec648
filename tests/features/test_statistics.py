"""Statistical properties of the random features, by tests that can fail: unbiasedness (Hotelling's T² on the
mean of ``Φ Φᵀ`` over seeds, which rejects a deliberately biased sketch), the documented variance of a
Kronecker block, and an error that falls as ``k^{-1/2}``.

Seeds are fixed, so each test is deterministic; the thresholds are those of tests at level 10⁻³.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import pntk
from reference import reference_kernel
from zoo import make_case

LEVEL = 1e-3


def hotelling_p_value(samples: np.ndarray, mean: np.ndarray) -> float:
    """The p-value of Hotelling's T² test that the rows of ``samples`` ``[S, p]`` have mean ``mean`` ``[p]``."""
    S, p = samples.shape
    d = samples.mean(0) - mean
    cov = np.cov(samples, rowvar=False)
    T2 = S * d @ np.linalg.solve(cov, d)
    F = (S - p) / (p * (S - 1)) * T2
    return float(stats.f.sf(F, p, S - p))


def kernel_entries(Phi: torch.Tensor) -> np.ndarray:
    """The upper triangle (with diagonal) of ``Φ Φᵀ`` as a vector (eNTK features as their ``[N·O, k]`` rows)."""
    P = Phi.reshape(-1, Phi.shape[-1])
    K = P @ P.T
    i, j = torch.triu_indices(*K.shape)
    return K[i, j].numpy()


def setup(kind: str):
    model, make = make_case("mlp")
    model = model.double()
    x = make(3 if kind == "entk" else 6, torch.Generator().manual_seed(0)).double()
    K = reference_kernel(model, x, kind=kind)
    if kind == "entk":
        N, _, O, _ = K.shape
        K = K.permute(0, 2, 1, 3).reshape(N * O, N * O)
    i, j = torch.triu_indices(*K.shape)
    return model, x, K[i, j].numpy()


def sketches(model, x, kind, seeds, scale=1.0, **options) -> np.ndarray:
    return np.stack([scale * kernel_entries(pntk.features(model, x, kind=kind, seed=s, **options)) for s in seeds])


KRONECKER = {"k": 512, "block": (4, 4)}
DENSE = {"k": 512, "method": "dense"}
RADEMACHER = {"k": 512, "block": (2, 2), "distribution": "rademacher"}


@pytest.mark.parametrize(
    "kind, options",
    [
        ("pntk", KRONECKER),
        ("trace", KRONECKER),
        ("entk", KRONECKER),
        ("pntk", DENSE),
        ("pntk", RADEMACHER),
        *(pytest.param(kind, o, marks=pytest.mark.slow) for o in (DENSE, RADEMACHER) for kind in ("trace", "entk")),
    ],
    ids=lambda v: v if isinstance(v, str) else v.get("method", v.get("distribution", "kronecker")),
)
def test_the_mean_of_many_sketches_is_the_kernel(kind, options):
    model, x, K = setup(kind)
    samples = sketches(model, x, kind, range(200), **options)
    assert hotelling_p_value(samples, K) > LEVEL


@pytest.mark.parametrize(
    "biased",
    ["scaled by 1.05", "bias parameters left out", "nystrom"],
)
def test_the_test_rejects_biased_sketches(biased):
    model, x, K = setup("pntk")
    seeds = range(200)
    if biased == "scaled by 1.05":
        samples = sketches(model, x, "pntk", seeds, scale=1.05, k=512, block=(4, 4))
    elif biased == "bias parameters left out":
        params = {n: p for n, p in model.named_parameters() if not n.endswith("bias")}
        samples = sketches(model, x, "pntk", seeds, k=512, block=(4, 4), params=params)
    else:  # random landmarks, but Φ Φᵀ ⪯ K for each
        samples = sketches(model, x, "pntk", seeds, k=3, method="nystrom")
    assert hotelling_p_value(samples, K) < 1e-6


@pytest.mark.parametrize("distribution", ["gaussian", pytest.param("rademacher", marks=pytest.mark.slow)])
def test_a_kronecker_block_has_the_documented_variance(distribution):
    """One dense layer, so each sample's pNTK gradient is rank one, ``G = d ãᵀ`` with ``d = 1/√O`` and
    ``ã = [x, 1]``; the note [Variance of a sketch] gives the variance of every entry."""
    torch.manual_seed(0)
    n, O, c_out, c_in, b = 4, 3, 2, 4, 2
    model = nn.Sequential(nn.Linear(n, O)).double().eval()
    x = torch.randn(4, n, dtype=torch.float64)
    a = torch.cat([x, torch.ones(4, 1, dtype=torch.float64)], 1)
    d = torch.full((O,), 1 / math.sqrt(O), dtype=torch.float64)

    def var_inner(u, v, c):  # Var of (Rᵀu)·(Rᵀv)/c for a single pair
        excess = 2 * (u**2 * v**2).sum() if distribution == "rademacher" else 0.0
        return ((u @ u) * (v @ v) + (u @ v) ** 2 - excess) / c

    expected = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            VU = var_inner(d, d, c_out)
            VV = var_inner(a[i], a[j], c_in)
            EU, EV = d @ d, a[i] @ a[j]
            expected[i, j] = (VU * VV + VU * EV**2 + VV * EU**2) / b
    K = np.stack(
        [
            (Phi @ Phi.T).numpy()
            for Phi in (
                pntk.features(model, x, k=b * c_out * c_in, block=(c_out, c_in), seed=s, distribution=distribution)
                for s in range(1500)
            )
        ]
    )
    ratio = K.var(0).sum() / expected.sum()
    assert 0.8 < ratio < 1.25
    # Orthogonal blocks have less variance than Gaussian ones.
    if distribution == "gaussian":
        K_orth = np.stack(
            [
                (Phi @ Phi.T).numpy()
                for Phi in (
                    pntk.features(model, x, k=b * c_out * c_in, block=(c_out, c_in), seed=s, distribution="orthogonal")
                    for s in range(500)
                )
            ]
        )
        assert K_orth.var(0).sum() < 0.8 * expected.sum()


def relative_error(model, x, K, k, seed, **options) -> float:
    Phi = pntk.features(model, x, k=k, seed=seed, **options)
    return ((Phi @ Phi.T - K).norm() / K.norm()).item()


@pytest.mark.parametrize("method", ["kronecker", pytest.param("dense", marks=pytest.mark.slow)])
def test_the_error_falls_as_one_over_root_k(method):
    model, make = make_case("mlp_O10")
    model = model.double()
    x = make(20, torch.Generator().manual_seed(1)).double()
    K = reference_kernel(model, x, kind="pntk")
    ks = [64, 128, 256, 512, 1024, 2048]
    # The root mean square: E‖Φ Φᵀ − K‖² = Σ Var/k exactly (blocks are independent), where a mean of the
    # heavy-tailed error itself would follow k^{-1/2} only for large k.
    errors = [np.sqrt(np.mean([relative_error(model, x, K, k, s, method=method) ** 2 for s in range(16)])) for k in ks]
    slope, _ = np.polyfit(np.log(ks), np.log(errors), 1)
    assert -0.6 < slope < -0.4, (slope, errors)
