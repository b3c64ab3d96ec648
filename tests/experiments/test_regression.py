"""The regression experiment against a direct NumPy computation of both predictors on the same kernels."""

import numpy as np
import pytest
import torch

import pntk
from pntk.data import load_dataset
from pntk.experiments.regression import Regression, regression
from pntk.models import build_model
from pntk.training import TrainConfig

SPEC = Regression(
    "digits", "mlp", widths=(32,), N_train=12, N_test=30, ridge=0.1, train=TrainConfig(lr=0.05, epochs=5), seed=4
)


def _direct(spec):
    """Both predictors with np.linalg.solve on kernels from the public API in float64."""
    train = load_dataset(spec.dataset, split="train", n=spec.N_train)
    test = load_dataset(spec.dataset, split="test", n=spec.N_test)
    model = build_model(spec.model, width=spec.widths[0], in_shape=(1, 8, 8), num_classes=10, seed=spec.seed).eval()
    N, M, O = spec.N_train, spec.N_test, 10

    def matrix(Theta):  # [N1, N2, O, O] -> [N1·O, N2·O], row n·O + a
        N1, N2 = Theta.shape[:2]
        return Theta.numpy().transpose(0, 2, 1, 3).reshape(N1 * O, N2 * O)

    Theta = matrix(pntk.entk(model, train.x, dtype=torch.float64))
    Theta_st = matrix(pntk.entk(model, test.x, train.x, dtype=torch.float64))
    K = pntk.pntk(model, train.x, dtype=torch.float64).numpy()
    K_st = pntk.pntk(model, test.x, train.x, dtype=torch.float64).numpy()
    Y = train.targets(center=True, dtype=torch.float64).numpy()
    lam = spec.ridge * np.trace(K) / N
    out = {}
    for key, ridge in (("", 0.0), ("_ridge", lam)):
        out["entk" + key] = (Theta_st @ np.linalg.solve(Theta + ridge * np.eye(N * O), Y.reshape(-1))).reshape(M, O)
        out["pntk" + key] = K_st @ np.linalg.solve(K + ridge * np.eye(N), Y)
    out["sum"] = O * K_st @ np.linalg.solve(O * K, Y)
    out["sum_ridge"] = O * K_st @ np.linalg.solve(O * K + lam * np.eye(N), Y)
    return out, test.y.numpy(), lam


def test_predictors_and_their_relative_differences_match_numpy():
    result = regression(SPEC)
    f, labels, lam = _direct(SPEC)
    row = result["widths"][0]
    assert not any(row["singular"].values())
    assert row["ridge"] == pytest.approx(lam, rel=1e-12)

    def rel(a, b):
        return np.linalg.norm(f[a] - f[b]) / np.linalg.norm(f[b])

    assert row["relative_difference"]["pntk"] == pytest.approx(rel("pntk", "entk"), rel=1e-6)
    assert row["relative_difference"]["pntk_ridge"] == pytest.approx(rel("pntk_ridge", "entk_ridge"), rel=1e-6)
    assert row["relative_difference"]["sum_ridge"] == pytest.approx(rel("sum_ridge", "entk_ridge"), rel=1e-6)
    for key in ("entk", "pntk", "entk_ridge", "pntk_ridge", "sum_ridge"):
        assert row["accuracy"][key] == pytest.approx(np.mean(f[key].argmax(-1) == labels))
    # Without a ridge the scale of the scalar kernel cancels; with one it does not.
    assert rel("sum", "pntk") < 1e-8
    assert rel("sum_ridge", "pntk_ridge") > 1e-3
    assert 0 < row["relative_difference"]["pntk"] < 1
