"""FeatureKernel, ridge regression in k dimensions and Nyström features, against dense float64 computations."""

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import IllConditionedKernelWarning, extreme_eigenvalues, kernel_regression, kernel_regression_cg
from pntk.features import FeatureKernel, FeatureMap, FeatureRidge, Nystrom, feature_regression
from reference import reference_kernel
from zoo import make_case


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("O", [1, 3])
def test_feature_kernel_products_equal_the_dense_kernel(O):
    Phi1 = rand(7, O, 5) if O > 1 else rand(7, 5)
    Phi2 = rand(4, O, 5, seed=1) if O > 1 else rand(4, 5, seed=1)
    op = FeatureKernel(Phi1, Phi2)
    dense = Phi1.reshape(-1, 5) @ Phi2.reshape(-1, 5).T
    assert op.shape == (7 * O, 4 * O) and op.dtype == torch.float64 and op.device.type == "cpu"
    assert torch.allclose(op.to_dense(), dense)
    v = rand(4 * O, seed=2)
    assert torch.allclose(op @ v, dense @ v)
    V = rand(4 * O, 3, seed=3)
    assert torch.allclose(op @ V, dense @ V)
    assert np.allclose(op @ V.numpy(), (dense @ V).numpy())
    assert np.allclose(op.to_scipy() @ V.numpy(), (dense @ V).numpy())
    assert np.allclose(op.to_scipy().T @ rand(7 * O).numpy(), (dense.T @ rand(7 * O)).numpy())
    assert torch.allclose(op.T.to_dense(), dense.T)
    if O > 1:  # the eNTK's [N, O] and [N, O, c] layouts
        assert torch.allclose(op @ V.reshape(4, O, 3), (dense @ V).reshape(7, O, 3))
        assert torch.allclose(op @ v.reshape(4, O), (dense @ v).reshape(7, O))
    with pytest.raises(ValueError, match="cannot multiply"):
        op @ rand(5)
    with pytest.raises(ValueError, match="not square"):
        op.diagonal()


def test_feature_kernel_diagonal_and_spectrum():
    Phi = rand(9, 4)
    op = FeatureKernel(Phi)
    K = Phi @ Phi.T
    assert torch.allclose(op.diagonal(), K.diagonal())
    lam = torch.linalg.eigvalsh(K).flip(0)
    assert torch.allclose(op.eigenvalues(), lam[:4], atol=1e-12)  # the other five are zero
    assert torch.allclose(FeatureKernel(Phi[:3]).eigenvalues(), torch.linalg.eigvalsh(K[:3, :3]).flip(0).clamp(min=0))
    assert np.allclose(extreme_eigenvalues(op, 2), lam[:2].numpy())
    with pytest.raises(ValueError, match="different"):
        FeatureKernel(Phi, rand(3, 5))


def test_ridge_in_k_dimensions_equals_kernel_ridge_regression():
    Phi, Phi_test, Y = rand(30, 8), rand(6, 8, seed=1), rand(30, 3, seed=2)
    f0, f0_test = rand(30, 3, seed=3), rand(6, 3, seed=4)
    K, K_test = Phi @ Phi.T, Phi_test @ Phi.T
    expected = kernel_regression(K, K_test, Y, f0_train=f0, f0_test=f0_test, ridge=0.5)
    got = feature_regression(Phi, Phi_test, Y, f0_train=f0, f0_test=f0_test, ridge=0.5)
    assert np.allclose(got, expected, rtol=1e-10)
    # The same through the operator and conjugate gradients.
    cg = kernel_regression_cg(
        FeatureKernel(Phi), FeatureKernel(Phi_test, Phi), Y, f0_train=f0, f0_test=f0_test, ridge=0.5
    )
    assert np.allclose(cg, expected, rtol=1e-6)
    # Rows streamed in chunks give the same model.
    r = FeatureRidge(0.5)
    for rows in (slice(0, 7), slice(7, 20), slice(20, 30)):
        r.partial_fit(Phi[rows], Y[rows], f0[rows])
    assert np.allclose(r.predict(Phi_test, f0_test), expected, rtol=1e-10)
    one = feature_regression(Phi, Phi_test, Y[:, 0], ridge=0.5)
    assert one.shape == (6,) and np.allclose(one, kernel_regression(K, K_test, Y[:, 0], ridge=0.5), rtol=1e-10)


def test_the_gram_accumulates_over_chunks_in_float64_and_a_refit_forgets_it():
    """Each chunk's triangle is multiplied in the features' dtype and summed in float64; the symmetric Gram is
    formed once, on use, and a later chunk or a fresh ``fit`` replaces it."""
    Phi, Y = rand(50, 7).float(), rand(50, 2, seed=1)
    r = FeatureRidge(0.1)
    assert r.gram is None
    for rows in (slice(0, 13), slice(13, 14), slice(14, 50)):
        r.partial_fit(Phi[rows], Y[rows])
    G = Phi.double().T @ Phi.double()
    assert r.gram is not None and r.gram.dtype == np.float64
    np.testing.assert_array_equal(r.gram, r.gram.T)
    np.testing.assert_allclose(r.gram, G.numpy(), rtol=1e-5, atol=1e-5 * float(G.abs().max()))
    np.testing.assert_allclose(r.rhs, (Phi.double().T @ Y).numpy(), rtol=1e-5, atol=1e-5)
    first = r.coef
    r.partial_fit(Phi[:5], Y[:5])  # the Gram seen by the next solve includes these rows
    np.testing.assert_allclose(r.gram, (G + Phi[:5].double().T @ Phi[:5].double()).numpy(), rtol=1e-5, atol=1e-4)
    assert not np.allclose(r.coef, first)
    r.fit(Phi[:5], Y[:5])
    np.testing.assert_allclose(r.gram, (Phi[:5].double().T @ Phi[:5].double()).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(20, 6), (20, 3, 6)])
def test_setting_the_ridge_refits_and_the_mean_diagonal_is_that_of_the_feature_kernel(shape):
    Phi, Y = rand(*shape), rand(20, 3, seed=1)
    r = FeatureRidge(0.5).fit(Phi, Y)
    assert r.mean_diagonal == pytest.approx(float(FeatureKernel(Phi).diagonal().mean()), rel=1e-12)
    at_half = r.coef
    r.ridge = 2.0 * r.mean_diagonal  # a stale solution would survive this
    np.testing.assert_allclose(r.coef, FeatureRidge(r.ridge).fit(Phi, Y).coef, rtol=1e-12)
    assert not np.allclose(r.coef, at_half)
    with pytest.raises(ValueError, match="non-negative"):
        r.ridge = -1.0
    with pytest.raises(ValueError, match="no data"):
        _ = FeatureRidge().mean_diagonal


def test_ridge_with_entk_features_equals_the_entk_solve():
    Phi, Phi_test, Y = rand(10, 3, 12), rand(4, 3, 12, seed=1), rand(10, 3, seed=2)
    Theta = torch.einsum("nak,mbk->nmab", Phi, Phi)
    Theta_test = torch.einsum("nak,mbk->nmab", Phi_test, Phi)
    expected = kernel_regression(Theta, Theta_test, Y, ridge=0.1)
    assert np.allclose(feature_regression(Phi, Phi_test, Y, ridge=0.1), expected, rtol=1e-9)


def test_ridgeless_singular_gram_gives_the_minimum_norm_interpolant():
    Phi = rand(4, 6)  # k > N: ΦᵀΦ is singular, Φ Φᵀ is not
    Y = rand(4, 2, seed=1)
    with pytest.warns(IllConditionedKernelWarning):
        F = feature_regression(Phi, Phi, Y)
    assert np.allclose(F, Y.numpy(), atol=1e-8)
    with pytest.raises(pntk.analysis.IllConditionedKernelError):
        _ = FeatureRidge(0.0, on_singular="raise").fit(Phi, Y).coef
    with pytest.raises(ValueError, match="ridge"):
        FeatureRidge(-1.0)
    with pytest.raises(ValueError, match="no data"):
        _ = FeatureRidge(1.0).coef


def test_sketched_regression_approaches_exact_pntk_regression():
    model, make = make_case("mlp_O10")
    model = model.double()
    g = torch.Generator().manual_seed(0)
    x, x_test = make(40, g).double(), make(10, g).double()
    Y = torch.nn.functional.one_hot(torch.arange(40) % 10).double()
    K = reference_kernel(model, x, kind="pntk")
    K_test = reference_kernel(model, x_test, x, kind="pntk")
    ridge = 1e-2 * K.diagonal().mean().item()
    exact = kernel_regression(K, K_test, Y, ridge=ridge)
    errors = []
    for k in (256, 2048):
        fmap = FeatureMap(model, k=k, seed=0)
        F = feature_regression(fmap(x), fmap(x_test), Y, ridge=ridge)
        errors.append(np.linalg.norm(F - exact) / np.linalg.norm(exact))
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.15


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
def test_nystrom_with_every_sample_a_landmark_is_exact(kind):
    model, make = make_case("cnn_pool")
    model = model.double()
    x = make(6, torch.Generator().manual_seed(0)).double()
    K = reference_kernel(model, x, kind=kind)
    Phi = pntk.features(model, x, k=6, kind=kind, method="nystrom", dtype=torch.float64)
    got = torch.einsum("nak,mbk->nmab", Phi, Phi) if kind == "entk" else Phi @ Phi.T
    assert torch.allclose(got, K, rtol=1e-8, atol=1e-10 * K.abs().max().item())


def test_nystrom_is_exact_on_its_landmarks_and_below_the_kernel_elsewhere():
    model, make = make_case("mlp")
    model = model.double()
    x = make(12, torch.Generator().manual_seed(0)).double()
    K = reference_kernel(model, x, kind="pntk")
    nys = Nystrom(model, x[:4])
    Phi = nys(x)
    assert torch.allclose(Phi[:4] @ Phi[:4].T, K[:4, :4], atol=1e-10)
    gap = torch.linalg.eigvalsh(K - Phi @ Phi.T)
    assert gap.min() > -1e-10 and gap.max() > 1e-3  # K − Φ Φᵀ ⪰ 0, and not zero
    with pytest.raises(ValueError, match="landmarks"):
        pntk.features(model, x, k=13, method="nystrom")


def test_predict_path_equals_a_fit_for_each_ridge():
    g = torch.Generator().manual_seed(0)
    Phi, Phi_test = torch.randn(50, 12, generator=g, dtype=torch.float64), torch.randn(7, 12, generator=g).double()
    Y = torch.randn(50, 3, generator=g, dtype=torch.float64)
    ridges = [1e-3, 0.5, 20.0]
    path = FeatureRidge().fit(Phi, Y).predict_path(Phi_test, ridges)
    assert path.shape == (3, 7, 3)
    for lam, F in zip(ridges, path):
        np.testing.assert_allclose(F, FeatureRidge(lam).fit(Phi, Y).predict(Phi_test), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        FeatureRidge().fit(Phi, Y).predict_path(Phi_test, [-1.0])
