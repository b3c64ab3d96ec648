"""One plan for every path: the tile edge fits the budget, the engine is resolved once, and the in-memory
kernel and the store run the same plan to the same bits."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pntk
from pntk.kernels import ENGINES, Kind, functional_model
from pntk.kernels.inputs import Inputs
from pntk.planning import DEFAULT_OPTIONS, Options, make_plan, memory_budget, resolve_engine, tile_memory


def mlp(n_in: int = 100, width: int = 100, O: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, O))


def fm_of(model: nn.Module, n_in: int):
    return functional_model(model, Inputs((torch.randn(2, n_in),)))


@pytest.mark.parametrize("executor", ["kernel", "store"])
@pytest.mark.parametrize("kind", list(Kind))
def test_the_tile_is_the_largest_that_fits_the_budget(kind, executor):
    fm = fm_of(mlp(), 100)
    budget = 2_000_000
    plan = make_plan(fm, kind, 500, 300, symmetric=False, engine="jacobian", memory=budget, executor=executor)
    buffers = DEFAULT_OPTIONS.kernel_buffers if executor == "kernel" else DEFAULT_OPTIONS.store_buffers

    def need(t: int) -> int:
        return tile_memory(fm, ENGINES[pntk.Engine.JACOBIAN], kind, t, buffers=buffers, options=DEFAULT_OPTIONS)

    assert plan.tile_bytes == need(plan.tile) <= budget
    # The largest edge that fits, evened out over as few tiles per side as it needs.
    per_side = -(-500 // plan.tile)
    assert need(-(-500 // (per_side - 1)) if per_side > 1 else 500) > budget
    assert plan.memory == budget and plan.engine == "jacobian"
    assert {(t.r0, t.r1, t.c0, t.c1) for t in plan.tiles} == {
        (r, min(r + plan.tile, 500), c, min(c + plan.tile, 300))
        for r in range(0, 500, plan.tile)
        for c in range(0, 300, plan.tile)
    }


def test_options_replace_the_knobs_without_patching():
    """A larger safety factor gives smaller tiles; the options travel with the call."""
    fm = fm_of(mlp(), 100)
    plain = make_plan(fm, "pntk", 2000, 2000, symmetric=False, engine="jacobian", memory="20MB")
    careful = make_plan(
        fm, "pntk", 2000, 2000, symmetric=False, engine="jacobian", memory="20MB", options=Options(safety=6.0)
    )
    assert careful.tile < plain.tile


def test_a_symmetric_kernel_whose_one_block_fits_is_one_tile():
    fm = fm_of(mlp(), 100)
    n, eng = 300, ENGINES[pntk.Engine.JACOBIAN]
    one_block = tile_memory(
        fm, eng, Kind.PNTK, n, buffers=DEFAULT_OPTIONS.kernel_buffers, blocks=1, options=DEFAULT_OPTIONS
    )
    assert make_plan(fm, "pntk", n, n, symmetric=True, engine="jacobian", memory=one_block).tile == n
    assert make_plan(fm, "pntk", n, n, symmetric=False, engine="jacobian", memory=one_block).tile < n / 1.9


def test_bad_budgets_and_batch_sizes_are_refused():
    fm = fm_of(mlp(), 100)
    with pytest.raises(ValueError, match="too small for even a 1 × 1 tile"):
        make_plan(fm, "entk", 10, 10, symmetric=True, engine="jacobian", memory="1kB")
    with pytest.raises(ValueError, match="more than memory"):
        make_plan(fm, "entk", 100, 100, symmetric=True, engine="jacobian", memory="1MB", batch_size=100)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            make_plan(fm, "pntk", 10, 10, symmetric=True, batch_size=bad)
    with pytest.raises(ValueError, match="unknown engine"):
        make_plan(fm, "pntk", 10, 10, symmetric=True, engine="fastest")


def test_the_default_budget_is_a_share_of_the_machine():
    budget = memory_budget(torch.device("cpu"))
    assert 0 < budget <= DEFAULT_OPTIONS.default_memory_cap
    assert memory_budget(torch.device("cpu"), options=Options(default_memory_cap=1000)) == 1000
    assert memory_budget(torch.device("cpu"), "4G") == 4 * 10**9


def test_auto_resolves_once_by_rules_and_memory():
    dense = fm_of(mlp(), 100)
    assert resolve_engine("auto", dense, Kind.PNTK, 10**9, buffers=3).name == "structured"

    class Scaled(nn.Module):  # an added parameter (no rule; a product would be a scale) holds nearly all of P
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2000))
            self.b = nn.Parameter(torch.zeros(2))

        def forward(self, x):
            h = torch.tanh(self.w + x.sum(1, keepdim=True))
            return h.reshape(len(x), 2, 1000).sum(-1) + self.b

    fm = functional_model(Scaled(), Inputs((torch.randn(2, 3),)))
    assert resolve_engine("auto", fm, Kind.PNTK, 10**9, buffers=3).name == "jacobian"
    assert resolve_engine("auto", fm, Kind.ENTK, 10_000, buffers=3).name == "vp"


@pytest.mark.parametrize("kind", list(Kind))
def test_kernel_and_compute_run_one_plan_to_the_same_bits(tmp_path, kind):
    model = mlp(8, 16, 3).double()
    x = torch.randn(13, 8, dtype=torch.float64)
    memory = "40kB" if kind is Kind.ENTK else "12kB"
    in_memory = pntk.plan(model, x, kind=kind, memory=memory, executor="store")
    stored = pntk.compute(model, x, kind=kind, out=tmp_path / "k.zarr", memory=memory)
    assert (stored.spec.engine, stored.spec.tile) == (in_memory.engine, in_memory.tile)
    assert len(in_memory.tiles) > 1
    # The same plan: the same engine, tile edge and budget (which bounds the engine's working memory too).
    direct = pntk.kernel(model, x, kind=kind, memory=memory, batch_size=in_memory.tile, engine=in_memory.engine)
    np.testing.assert_array_equal(stored.numpy(), direct.numpy())


def test_every_kernel_function_takes_what_compute_takes():
    """Tensors, NumPy arrays, Datasets and DataLoaders give the same kernel."""
    model = mlp(8, 16, 3).double()
    x = torch.randn(9, 8, dtype=torch.float64)
    expected = pntk.pntk(model, x)
    for data in (x.numpy(), TensorDataset(x, torch.zeros(9)), DataLoader(TensorDataset(x), batch_size=4)):
        torch.testing.assert_close(pntk.pntk(model, data), expected, rtol=0, atol=0)
    rectangular = pntk.pntk(model, x, x[:4])
    torch.testing.assert_close(pntk.pntk(model, x, x[:4].numpy()), rectangular, rtol=0, atol=0)


def test_the_plan_describes_itself():
    model = mlp(8, 16, 3)
    plan = pntk.plan(model, torch.randn(50, 8), kind="entk", memory="100kB")
    text = str(plan)
    assert "entk kernel [50, 50, 3, 3]" in text and f"{len(plan.tiles)} of edge {plan.tile}" in text
    assert plan.P == sum(p.numel() for p in model.parameters()) and plan.O == 3
    # Every row block is prepared once; every tile off the diagonal prepares its column block.
    off_diagonal = sum(1 for t in plan.tiles if not t.on_diagonal)
    assert plan.prepared_samples == 50 + sum(t.c1 - t.c0 for t in plan.tiles if not t.on_diagonal)
    assert off_diagonal > 0


def test_device_moves_the_computation_not_the_model():
    model = mlp(8, 16, 3)
    K = pntk.pntk(model, torch.randn(5, 8), device="cpu", dtype=torch.float64)
    assert K.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32


def test_a_measured_plan_predicts_a_time_from_its_counts():
    model = mlp(8, 16, 3)
    x = torch.randn(300, 8)
    plan = pntk.plan(model, x, kind="pntk", batch_size=100, measure_time=True)
    assert plan.seconds is not None and 0 < plan.seconds < 600 and "time: about" in str(plan)
    # Pairs of samples computed: the upper triangle of each diagonal tile, whole tiles above it.
    assert plan.pairs == 3 * (100 * 101 // 2) + 3 * 100 * 100
    assert pntk.plan(model, x, kind="pntk").seconds is None
