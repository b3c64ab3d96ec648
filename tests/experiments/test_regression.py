"""The regression experiment against a direct NumPy computation of the predictors on the same kernels."""

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import kernel_regression
from pntk.data import load_dataset
from pntk.experiments.regression import Regression, regression, ridge_sweep
from pntk.models import build_model
from pntk.training import TrainConfig, train

SPEC = Regression(
    "digits",
    "mlp",
    widths=(32,),
    seeds=(4,),
    N_train=12,
    N_test=30,
    ridges=(0.1, 1.0),
    train=TrainConfig(lr=0.05, epochs=5, batch_size=6),
)


def _direct(spec):
    """The trained network's kernels from the public API in float64, solved with np.linalg.solve."""
    data = load_dataset(spec.dataset, split="train", n=spec.N_train)
    test = load_dataset(spec.dataset, split="test", n=spec.N_test)
    model = build_model(spec.model, width=spec.widths[0], in_shape=(1, 8, 8), num_classes=10, seed=spec.seeds[0])
    train(model, data.x, data.y, spec.train)
    model.eval()
    N, M, O = spec.N_train, spec.N_test, 10

    def matrix(Theta):  # [N1, N2, O, O] -> [N1·O, N2·O], row n·O + a
        N1, N2 = Theta.shape[:2]
        return Theta.numpy().transpose(0, 2, 1, 3).reshape(N1 * O, N2 * O)

    Theta = matrix(pntk.entk(model, data.x, dtype=torch.float64))
    Theta_st = matrix(pntk.entk(model, test.x, data.x, dtype=torch.float64))
    K = pntk.pntk(model, data.x, dtype=torch.float64).numpy()
    K_st = pntk.pntk(model, test.x, data.x, dtype=torch.float64).numpy()
    Y = data.targets(center=True, dtype=torch.float64).numpy()
    f = {}
    for r in (0.0, *spec.ridges):
        lam = r * np.trace(K) / N
        f["entk", r] = (Theta_st @ np.linalg.solve(Theta + lam * np.eye(N * O), Y.reshape(-1))).reshape(M, O)
        f["K", r] = K_st @ np.linalg.solve(K + lam * np.eye(N), Y)
        f["OK", r] = O * K_st @ np.linalg.solve(O * K + lam * np.eye(N), Y)
    return f, test.y.numpy()


def test_predictors_of_the_trained_network_match_numpy():
    result = regression(SPEC)
    f, labels = _direct(SPEC)
    (run,) = result.runs
    assert not any(run.singular.values())

    def rel(a, b):
        return np.linalg.norm(f[a] - f[b]) / np.linalg.norm(f[b])

    assert run.relative_difference == pytest.approx(rel(("K", 0.0), ("entk", 0.0)), rel=1e-6)
    assert run.accuracy_entk == pytest.approx(np.mean(f["entk", 0.0].argmax(-1) == labels))
    assert run.accuracy_pntk == pytest.approx(np.mean(f["K", 0.0].argmax(-1) == labels))
    assert run.mcnemar.only_first == np.sum((f["entk", 0.0].argmax(-1) == labels) & (f["K", 0.0].argmax(-1) != labels))
    for point in run.ridge_sweep:
        r = point.relative
        assert point.difference_K == pytest.approx(rel(("K", r), ("entk", r)), rel=1e-6)
        assert point.difference_OK == pytest.approx(rel(("OK", r), ("entk", r)), rel=1e-6)
        assert point.accuracy_OK == pytest.approx(np.mean(f["OK", r].argmax(-1) == labels))


def test_ridge_sweep_agrees_with_kernel_regression():
    rng = np.random.default_rng(0)
    N, M, O, P = 10, 4, 3, 40
    J = rng.standard_normal((N + M, O, P))
    Theta = np.einsum("nap,mbp->nmab", J, J[:N])
    K = Theta.diagonal(axis1=2, axis2=3).mean(-1)  # the trace NTK (1/O) tr Θ, a scalar kernel on Θ's scale
    Y, labels = rng.standard_normal((N, O)), rng.integers(0, O, M)
    (point,) = ridge_sweep(Theta[:N], Theta[N:], K[:N], K[N:], Y, labels, (0.5,))
    lam = 0.5 * np.trace(K[:N]) / N
    f_Theta = kernel_regression(Theta[:N], Theta[N:], Y, ridge=lam)
    f_K = kernel_regression(K[:N], K[N:], Y, ridge=lam)
    f_OK = kernel_regression(O * K[:N], O * K[N:], Y, ridge=lam)
    assert point.ridge == pytest.approx(lam)
    assert point.difference_K == pytest.approx(np.linalg.norm(f_K - f_Theta) / np.linalg.norm(f_Theta), rel=1e-8)
    assert point.difference_OK == pytest.approx(np.linalg.norm(f_OK - f_Theta) / np.linalg.norm(f_Theta), rel=1e-8)
