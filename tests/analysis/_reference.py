"""Float64 brute-force references for the analysis tests: explicit matrices, Kronecker products, dense solves."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def random_psd(rng: np.random.Generator, n: int, rank: int | None = None) -> np.ndarray:
    """A random positive semi-definite ``[n, n]`` Gram matrix of the given rank (full rank by default)."""
    G = rng.standard_normal((n, n if rank is None else rank))
    return G @ G.T / G.shape[1]


def psd_with_spectrum(rng: np.random.Generator, eigenvalues: np.ndarray) -> np.ndarray:
    """A symmetric matrix with exactly these eigenvalues and a random orthonormal eigenbasis."""
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (Q * eigenvalues) @ Q.T


def gram_entk(rng: np.random.Generator, N: int, M: int, O: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Θ(X, X) [N, N, O, O], Θ(x, X) [M, N, O, O])`` from random Jacobians ``J [N + M, O, P]``."""
    J = rng.standard_normal((N + M, O, P)) / np.sqrt(P)
    Theta = np.einsum("nap,mbp->nmab", J, J[:N])
    return Theta[:N], Theta[N:]


def matrix(Theta: np.ndarray) -> np.ndarray:
    """The eNTK ``[N1, N2, O, O]`` as ``[N1·O, N2·O]`` with row ``n·O + a``, entry by entry."""
    N1, N2, O, _ = Theta.shape
    out = np.empty((N1 * O, N2 * O))
    for n in range(N1):
        for m in range(N2):
            for a in range(O):
                for b in range(O):
                    out[n * O + a, m * O + b] = Theta[n, m, a, b]
    return out


def kron_entk(K: np.ndarray, O: int) -> np.ndarray:
    """``K ⊗ I_O`` as an eNTK ``[N1, N2, O, O]``: ``Θ[n, m, a, b] = K[n, m] δ_ab``."""
    return K[:, :, None, None] * np.eye(O)


def regression(A, B, Y, f0_train=None, f0_test=None, ridge=0.0, inverse=np.linalg.inv) -> np.ndarray:
    """``f0(x) + B (A + ridge·I)⁻¹ (Y − f0(X))`` for explicit matrices ``A``, ``B`` and column targets."""
    f0_train = np.zeros_like(Y) if f0_train is None else f0_train
    f0_test = np.zeros((B.shape[0], Y.shape[1])) if f0_test is None else f0_test
    return f0_test + B @ inverse(A + ridge * np.eye(len(A))) @ (Y - f0_train)


def entk_regression(Theta, Theta_test, Y, f0_train=None, f0_test=None, ridge=0.0) -> np.ndarray:
    """eNTK regression with ``Y`` flattened row ``n·O + a``, via the explicit ``[N·O, N·O]`` matrices."""
    M, O = Theta_test.shape[0], Y.shape[1]
    out = regression(matrix(Theta), matrix(Theta_test), Y.reshape(-1, 1), column(f0_train), column(f0_test), ridge)
    return out.reshape(M, O)


def column(f: np.ndarray | None) -> np.ndarray | None:
    """Outputs ``[n, O]`` flattened to the column ``[n·O, 1]``, row ``n·O + a``."""
    return None if f is None else f.reshape(-1, 1)


def gradient_flow(A, B, Y, f0_train, f0_test, eta, t) -> tuple[np.ndarray, np.ndarray]:
    """Linearised gradient flow with matrix exponentials, valid for singular ``A``.

    ``A⁻¹(I − e^{−ηAt}) = η ∫₀ᵗ e^{−ηAs} ds`` is the top-right block of ``expm([[−ηA, I], [0, 0]] t)``
    (Van Loan), so no inverse is taken.
    """
    n = len(A)
    block = np.zeros((2 * n, 2 * n))
    block[:n, :n] = -eta * A
    block[:n, n:] = np.eye(n)
    E = scipy.linalg.expm(block * t)
    decay, integral = E[:n, :n], E[:n, n:]
    train = Y + decay @ (f0_train - Y)
    test = f0_test + B @ (eta * integral) @ (Y - f0_train)
    return train, test
