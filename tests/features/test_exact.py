"""Features against the float64 brute-force reference: ``Φ = J R / √k`` exactly, for every kind, method and
kind of layer, with ``R`` made explicit from the map's own random blocks; orthogonal projections that reach
``k = P`` give ``K`` exactly; rows do not depend on the chunking."""

import pytest
import torch
from explicit import reference_features
from torch import nn

import pntk
from pntk.features import FeatureMap
from pntk.models.layers import NTKConv2d, NTKLinear
from reference import reference_kernel
from zoo import make_case

KINDS = ["pntk", "trace", "entk"]


class Tokens(nn.Module):
    """An embedding (with a padding token) read by a dense layer over positions."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4, padding_idx=0)
        self.mix = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.mix(self.emb(ids))).mean(1))


class Scaled(nn.Module):
    """Grouped and NTK-scaled convolutions, an NTK-scaled dense layer and a parameter without a rule."""

    def __init__(self):
        super().__init__()
        self.conv = NTKConv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.fc = NTKLinear(4 * 4 * 4, 3)
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, 3))

    def forward(self, x):
        h = torch.relu(self.grouped(torch.relu(self.conv(x))))
        return self.fc(h.flatten(1)) * self.gain


def case(name: str, n: int = 5):
    g = torch.Generator().manual_seed(3)
    if name == "tokens":
        torch.manual_seed(0)
        return Tokens().eval(), torch.randint(0, 7, (n, 6), generator=g)
    if name == "scaled":
        torch.manual_seed(0)
        return Scaled().eval(), torch.randn(n, 2, 4, 4, generator=g)
    model, make = make_case(name)
    return model, make(n, g)


CASES = ["mlp", "cnn_pool", "residual", "batchnorm_eval", "group_layer_norm", "shared_layer", "two_inputs"]


def double(model, x):
    model = model.double()
    if isinstance(x, tuple):
        return model, tuple(t.double() for t in x)
    return model, (x.double() if x.is_floating_point() else x)


def call(fmap, x, **options):
    return fmap(x, **options)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CASES + ["tokens", "scaled"])
def test_kronecker_features_are_J_R(name, kind):
    model, x = double(*case(name))
    fmap = FeatureMap(model, k=64, kind=kind, seed=1, block=(4, 4))
    Phi = call(fmap, x, batch_size=2)
    expected = reference_features(fmap, model, x)
    assert Phi.dtype == torch.float64 and Phi.shape == expected.shape
    assert torch.allclose(Phi, expected, rtol=1e-10, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["mlp", "cnn_pool", "tokens"])
def test_dense_features_are_J_R(name, kind):
    model, x = double(*case(name))
    fmap = FeatureMap(model, k=48, kind=kind, method="dense", seed=2)
    Phi = call(fmap, x, batch_size=3)
    expected = reference_features(fmap, model, x)
    assert torch.allclose(Phi, expected, rtol=1e-10, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("distribution", ["rademacher", "orthogonal"])
def test_other_distributions_are_J_R(distribution):
    model, x = double(*case("scaled"))
    fmap = FeatureMap(model, k=32, kind="pntk", seed=4, block=(2, 4), distribution=distribution)
    assert torch.allclose(call(fmap, x), reference_features(fmap, model, x), rtol=1e-10, atol=1e-13)


def test_bias_only_layer_is_J_R():
    model, x = double(*case("mlp"))
    params = {n: p for n, p in model.named_parameters() if n != "2.weight"}
    fmap = FeatureMap(model, k=16, seed=0, block=(2, 2), params=params)
    Phi = call(fmap, x)
    assert torch.allclose(Phi, reference_features(fmap, model, x, list(params)), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_dense_projection_with_k_at_least_P_gives_the_kernel_exactly(kind):
    model, x = double(*case("cnn_pool", 6))
    P = sum(p.numel() for p in model.parameters())
    P *= 3 if kind == "trace" else 1  # the trace projects the O·P stacked Jacobian
    for k in (P, P + 5):
        Phi = pntk.features(model, x, k=k, kind=kind, method="dense", distribution="orthogonal", seed=3)
        K = torch.einsum("nak,mbk->nmab", Phi, Phi) if kind == "entk" else Phi @ Phi.T
        expected = reference_kernel(model, x, kind=kind)
        assert torch.allclose(K, expected, rtol=1e-11, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_kronecker_block_of_a_whole_layer_gives_its_kernel_exactly(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double().eval()
    x = torch.randn(7, 5, dtype=torch.float64)
    m = 3 * (3 if kind == "trace" else 1)  # the trace's output side stacks the O rows
    Phi = pntk.features(model, x, k=m * 6, kind=kind, block=(m, 6), distribution="orthogonal", seed=5)
    K = torch.einsum("nak,mbk->nmab", Phi, Phi) if kind == "entk" else Phi @ Phi.T
    assert torch.allclose(K, reference_kernel(model, x, kind=kind), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["kronecker", "dense"])
def test_rows_do_not_depend_on_the_chunking(method):
    model, x = case("cnn_pool", 11)
    fmap = FeatureMap(model, k=64, kind="entk", method=method, seed=9)
    whole = fmap(x)
    for batch_size in (1, 4, 7):
        assert torch.allclose(fmap(x, batch_size=batch_size), whole, rtol=1e-5, atol=1e-6 * whole.abs().max().item())
    # A fresh map with the same seed draws the same R; rows of a subset are the same rows.
    again = FeatureMap(model, k=64, kind="entk", method=method, seed=9)(x[3:8], batch_size=2)
    assert torch.allclose(again, whole[3:8], rtol=1e-5, atol=1e-6 * whole.abs().max().item())
    other = FeatureMap(model, k=64, kind="entk", method=method, seed=10)(x)
    assert not torch.allclose(other, whole, rtol=1e-2)


def test_rows_agree_to_rounding_for_any_batch_and_bitwise_for_the_same_batches():
    """The network's own passes round differently in batches of different sizes, so rows agree to rounding;
    the same chunks give the same bits (what a resumed run relies on)."""
    model, x = double(*case("mlp", 9))
    fmap = FeatureMap(model, k=64, seed=0)
    whole = fmap(x, batch_size=4)
    assert torch.equal(FeatureMap(model, k=64, seed=0)(x, batch_size=4), whole)
    for b in (1, 2, 5, 9):
        assert torch.allclose(fmap(x, batch_size=b), whole, rtol=1e-13, atol=1e-15)


def shared_case(name: str):
    """The structured engine's newer rules: ids shared by all samples (with a repeated position), a relative
    bias, tied embeddings and scales by parameters (their kernels are tested in tests/kernels)."""
    import shared_models as shared

    torch.manual_seed(0)
    model = {
        "positions": lambda: shared.Positions([0, 1, 2, 2, 3]),
        "relative_bias": shared.RelativeBias,
        "tied": shared.Tied,
        "tied_head": lambda: shared.TiedHead(rows=[0, 3, 5]),
        "two_tied_heads": shared.TwoTiedHeads,
        "scales": shared.Scales,
    }[name]()
    x = shared.images(5, 1) if name == "scales" else shared.tokens(5, 1)
    if isinstance(x, tuple):
        return model.double().eval(), tuple(t.double() if t.is_floating_point() else t for t in x)
    return model.double().eval(), x.double()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["kronecker", "dense"])
@pytest.mark.parametrize("name", ["positions", "relative_bias", "tied", "tied_head", "two_tied_heads", "scales"])
def test_features_on_shared_ids_tied_modules_and_scales_are_J_R(name, method, kind):
    model, x = shared_case(name)
    options = {"block": (4, 4)} if method == "kronecker" else {}
    fmap = FeatureMap(model, k=64, kind=kind, seed=1, method=method, **options)
    Phi = call(fmap, x, batch_size=2)
    expected = reference_features(fmap, model, x)
    assert torch.allclose(Phi, expected, rtol=1e-10, atol=1e-12 * expected.abs().max().item())
