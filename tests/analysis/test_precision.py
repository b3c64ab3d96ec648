"""Tolerances that follow the precision a kernel was computed in, and the solvers on a kernel's own device."""

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import IllConditionedKernelWarning, compare, kernel_regression
from pntk.analysis._linalg import OnSingular, kernel_precision, noise_floor, solve_torch
from pntk.analysis.regression import _kernel_regression_on_device
from pntk.data import load_dataset
from pntk.models import build_model
from pntk.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained_convnet_kernels():
    """The pNTK of a small ConvNet trained on digits, on 500 training inputs, in float32 and in float64."""
    data = load_dataset("digits", split="train", n=500)
    test = load_dataset("digits", split="test")
    model = build_model("convnet", width=8, in_shape=(1, 8, 8), num_classes=10, parametrization="torch", seed=0)
    train(model, data.x, data.targets(center=True), TrainConfig(loss="mse", lr=0.05, epochs=10, batch_size=100))
    model.eval()
    kernels = {
        dtype: (pntk.pntk(model, data.x, dtype=dtype), pntk.pntk(model, test.x, data.x, dtype=dtype))
        for dtype in (torch.float32, torch.float64)
    }
    return kernels, data.targets(center=True).double(), test.y.numpy()


def _accuracy(f, labels):
    return float((f.argmax(-1) == labels).mean())


def test_float32_ridgeless_regression_scores_within_two_points_of_float64(trained_convnet_kernels):
    kernels, Y, labels = trained_convnet_kernels
    (K32, K32_test), (K64, K64_test) = kernels[torch.float32], kernels[torch.float64]
    acc64 = _accuracy(kernel_regression(K64, K64_test, Y, on_singular="ignore"), labels)
    with pytest.warns(IllConditionedKernelWarning, match="float32 rounding noise"):
        acc32 = _accuracy(kernel_regression(K32, K32_test, Y), labels)
    assert acc64 > 0.9
    assert abs(acc32 - acc64) <= 0.02
    # The float64 cut-off n·ε₆₄ on the same float32 kernel inverts its rounding noise: the failure fixed here.
    n_eps64 = 500 * np.finfo(np.float64).eps
    acc_old = _accuracy(kernel_regression(K32, K32_test, Y, rtol=n_eps64, on_singular="ignore"), labels)
    assert acc_old < acc64 - 0.3
    # A float64 copy of the float32 kernel is treated as float32 when told so.
    copy = kernel_regression(K32.double(), K32_test.double(), Y, kernel_dtype="float32", on_singular="ignore")
    assert _accuracy(copy, labels) == acc32


def test_noise_floor_drops_exactly_the_rounding_noise_of_a_singular_float32_kernel():
    rng = np.random.default_rng(0)
    n, rank = 200, 40
    G = rng.standard_normal((n, rank))
    K64 = G @ G.T  # rank 40: 160 zero eigenvalues
    K32 = torch.from_numpy(K64).float()
    w32 = np.linalg.eigvalsh(K32.double().numpy())
    floor = noise_floor(K64.diagonal().max(), n, torch.float32)
    # the float32 rounding moves the zero eigenvalues by less than the floor, the true ones sit far above it
    assert np.abs(w32[: n - rank]).max() < floor < w32[n - rank]
    Y = rng.standard_normal((n, 3))
    y_fit = G @ np.linalg.lstsq(G, Y, rcond=None)[0]  # the minimum-norm interpolant's fit on the train set
    with pytest.warns(IllConditionedKernelWarning, match=f"discards the {n - rank} of {n}"):
        f = kernel_regression(K32, K32, Y)
    assert np.allclose(f, y_fit, atol=1e-3)


def test_kernel_precision_reads_the_dtype_or_the_argument():
    assert kernel_precision(torch.zeros(2, 2, dtype=torch.bfloat16)) == torch.bfloat16
    assert kernel_precision(np.zeros((2, 2), dtype=np.float32)) == torch.float32
    assert kernel_precision(np.zeros((2, 2)), torch.float32) == torch.float32
    with pytest.raises(ValueError, match="kernel_dtype"):
        kernel_precision(np.zeros((2, 2)), "int32")


def test_condition_number_is_infinite_below_the_float32_noise_floor():
    rng = np.random.default_rng(1)
    G = rng.standard_normal((30, 10))
    K = torch.from_numpy(G @ G.T).float()  # singular: rank 10 of 30
    Theta = torch.kron(K, torch.eye(2)).reshape(30, 2, 30, 2).permute(0, 2, 1, 3)
    r = compare(Theta, K)
    assert r.cond_K == np.inf and r.cond_Theta == np.inf and r.noise_floor_K > 0


@pytest.mark.parametrize("ridge", [0.0, 0.5])
@pytest.mark.parametrize("matrix_valued", [False, True])
def test_device_path_matches_the_lapack_path(ridge, matrix_valued):
    """The torch solver used for kernels on a GPU, run here on CPU tensors, against the LAPACK path."""
    rng = np.random.default_rng(2)
    N, M, O, P = 12, 5, 3, 50
    J = rng.standard_normal((N + M, O, P))
    Theta = torch.from_numpy(np.einsum("nap,mbp->nmab", J, J[:N]))
    K = Theta.diagonal(dim1=2, dim2=3).mean(-1)
    train_k, test_k = (Theta[:N], Theta[N:]) if matrix_valued else (K[:N], K[N:])
    Y = rng.standard_normal((N, O))
    f0 = rng.standard_normal((N, O)), rng.standard_normal((M, O))
    expected = kernel_regression(train_k, test_k, Y, f0_train=f0[0], f0_test=f0[1], ridge=ridge)
    got = _kernel_regression_on_device(train_k, test_k, Y, f0[0], f0[1], ridge, None, OnSingular.RAISE, torch.float64)
    assert np.allclose(got, expected, rtol=1e-8, atol=1e-10)


def test_device_solver_warns_or_raises_on_a_singular_kernel():
    G = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    A, B = G @ G.T, torch.randn(10, 2, dtype=torch.float64)
    with pytest.warns(IllConditionedKernelWarning, match="discards the 7 of 10"):
        solve_torch(A, B, rtol=None, on_singular=OnSingular.WARN, kernel_dtype=torch.float64)
    with pytest.raises(pntk.analysis.IllConditionedKernelError):
        solve_torch(A, B, rtol=None, on_singular=OnSingular.RAISE, kernel_dtype=torch.float64)
