"""Every engine × kind × model of the zoo against the float64 brute-force reference."""

import pytest
import torch

import pntk
from pntk.kernels import ENGINES
from reference import reference_kernel
from zoo import CASES, make_case

KINDS = ["entk", "trace", "pntk"]
ENGINE_NAMES = [e.value for e in ENGINES] + ["auto"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(scope="module")
def references():
    """Zoo inputs and reference kernels, computed once: ``{case: (model, x1, x2, {kind: (sym, cross)})}``."""
    out = {}
    for name in CASES:
        model, make_inputs = make_case(name)
        g = torch.Generator().manual_seed(0)
        x1, x2 = make_inputs(5, g), make_inputs(3, g)
        refs = {k: (reference_kernel(model, x1, None, k), reference_kernel(model, x1, x2, k)) for k in KINDS}
        out[name] = (model, x1, x2, refs)
    return out


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_float64_matches_reference(references, case, kind, engine):
    model, x1, x2, refs = references[case]
    sym_ref, cross_ref = refs[kind]
    sym = pntk.kernel(model, x1, kind=kind, engine=engine, dtype=torch.float64, batch_size=2)
    cross = pntk.kernel(model, x1, x2, kind=kind, engine=engine, dtype=torch.float64, batch_size=2)
    assert sym.dtype == torch.float64 and sym.shape == sym_ref.shape and cross.shape == cross_ref.shape
    assert rel_err(sym, sym_ref) <= 1e-10
    assert rel_err(cross, cross_ref) <= 1e-10


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_float32_matches_reference(references, case, kind, engine):
    model, x1, x2, refs = references[case]
    cross = pntk.kernel(model, x1, x2, kind=kind, engine=engine, batch_size=4)
    assert cross.dtype == torch.float32
    assert rel_err(cross, refs[kind][1]) <= 1e-4


def test_shorthands_and_enums_agree():
    model, make_inputs = make_case("mlp")
    x = make_inputs(4, torch.Generator().manual_seed(3))
    options = dict(dtype=torch.float64, engine=pntk.Engine.JACOBIAN)
    assert torch.equal(pntk.entk(model, x, **options), pntk.kernel(model, x, kind=pntk.Kind.ENTK, **options))
    assert torch.equal(pntk.pntk(model, x, **options), pntk.kernel(model, x, kind="pntk", **options))
    assert torch.equal(pntk.trace_ntk(model, x, **options), pntk.kernel(model, x, kind="trace", **options))


def test_params_subset_and_replacement():
    """``params=`` differentiates only the given tensors, with the given values."""
    model, make_inputs = make_case("mlp")
    x = make_inputs(4, torch.Generator().manual_seed(4))
    last = {"4.weight": model[4].weight.detach() * 2, "4.bias": model[4].bias.detach()}
    got = pntk.entk(model, x, params=last, dtype=torch.float64)
    scaled = make_case("mlp")[0]
    with torch.no_grad():
        scaled[4].weight.mul_(2)
    ref = reference_kernel(scaled, x, None, "entk", names=["4.weight", "4.bias"])
    assert rel_err(got, ref) <= 1e-10


def test_module_and_inputs_untouched():
    model, make_inputs = make_case("batchnorm_eval")
    x = make_inputs(3, torch.Generator().manual_seed(5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_before = x.clone()
    pntk.pntk(model, x, dtype=torch.float64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32 and torch.equal(x, x_before)


def test_dict_inputs():
    model, make_inputs = make_case("two_inputs")
    x, z = make_inputs(3, torch.Generator().manual_seed(6))
    by_keyword = pntk.pntk(model, {"x": x, "z": z}, dtype=torch.float64)
    assert rel_err(by_keyword, reference_kernel(model, (x, z), None, "pntk")) <= 1e-10
