"""The structured engine against the float64 brute-force reference, rule by rule.

Each model exercises one configuration a rule handles (or must refuse). The checks cover all three kinds,
symmetric and cross kernels over several tiles, mostly with the FLOP count's choice forced both ways (factored
Grams and materialised per-sample gradients), and assert which parameters were ruled, so that a silent
fallback cannot pass for a working rule.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pntk
from pntk.kernels import Inputs, Kind, functional_model
from pntk.kernels.structured import StructuredEngine, WorkingMemory, capture, rules
from pntk.kernels.structured import plan as structured_plan
from pntk.planning import resolve_engine
from reference import reference_kernel, rel_err

KINDS = ["entk", "trace", "pntk"]


@pytest.fixture(params=["factored", "materialised", "grouped"])
def form(request, monkeypatch):
    """Force every factorable layer into one form, whatever the FLOP count says; ``"grouped"`` materialises
    every ungrouped convolution's gradient by a grouped convolution backward pass, whatever its size."""
    cost = 0 if request.param == "factored" else math.inf
    monkeypatch.setattr(structured_plan, "factored_cost", lambda *args: cost)
    if request.param == "grouped":
        monkeypatch.setattr(rules, "GROUPED_FROM", 1)
    return request.param


def planned(model: nn.Module, x, names: list[str] | None = None, kind: Kind = Kind.PNTK):
    """``(ruled parameter names, fallback parameter names, layers)`` of the structured engine's plan."""
    X = Inputs.from_user(x)
    params = None if names is None else {n: p for n, p in model.named_parameters() if n in names}
    fm = functional_model(model, X[:2], params=params)
    layers, fallback = structured_plan.plan(fm, X, kind)
    return {n for layer in layers for n in layer.names}, set(fallback), layers


def check(model, x1, x2, *, names=None, kinds=KINDS, batch_size=2, dtype=torch.float64, tol=1e-10, options=None):
    """Structured kernels (symmetric and cross, tiled) equal the reference for every kind."""
    params = None if names is None else {n: p for n, p in model.named_parameters() if n in names}
    for kind in kinds:
        for a, b in ((x1, None), (x1, x2)):
            got = pntk.kernel(
                model, a, b, kind=kind, engine="structured", batch_size=batch_size, dtype=dtype, params=params,
                options=options or pntk.Options(),
            )  # fmt: skip
            ref = reference_kernel(model, a, b, kind, names=names)
            assert got.dtype == dtype and got.shape == ref.shape
            assert rel_err(got, ref) <= tol, (kind, b is None)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- dense layers ------------------------------------------------------------------------------------------


class Tokens(nn.Module):
    """``nn.Linear`` on ``[B, T, n]`` (T = 3 positions share the weight), then on ``[B, T·m]``."""

    def __init__(self, out: int):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.head = nn.Linear(15, out)

    def forward(self, x):
        return self.head(torch.tanh(self.inp(x)).flatten(1))


@pytest.mark.parametrize("out", [1, 10])
def test_linear_on_tokens(form, out):
    torch.manual_seed(0)
    model = Tokens(out).eval()
    x1, x2 = randn(5, 3, 4, seed=1), randn(3, 3, 4, seed=2)
    ruled, fallback, layers = planned(model, x1)
    assert fallback == set() and layers[0].shape.T == 3
    assert all(layer.factored == (form == "factored") for layer in layers)
    check(model, x1, x2)


class Shared(nn.Module):
    """One ``nn.Linear`` called at two places and one convolution called on two image sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)
        self.hidden = nn.Linear(3, 3)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).mean(-1) + torch.tanh(self.conv(F.avg_pool1d(x, 2))).mean(-1)
        h = torch.tanh(self.hidden(torch.tanh(self.hidden(h))))
        return self.head(h)


def test_weight_shared_layers_sum_over_calls(form):
    torch.manual_seed(0)
    model = Shared().eval()
    x1, x2 = randn(4, 2, 6, seed=1), randn(3, 2, 6, seed=2)
    ruled, fallback, layers = planned(model, x1)
    assert fallback == set()
    assert {layer.module: layer.shape.T for layer in layers} == {model.conv: 6 + 3, model.hidden: 2, model.head: 1}
    check(model, x1, x2)


# --- convolutions ------------------------------------------------------------------------------------------


def convnet(dim: int, padding_mode: str) -> nn.Module:
    """Stride, ``"same"`` with an odd total (asymmetric), dilation, groups, no bias, a padding mode."""
    Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    return nn.Sequential(
        Conv(2, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        Conv(4, 4, 2, padding="same"),
        nn.Tanh(),
        Conv(4, 6, 2, dilation=2, groups=2, bias=False),
        nn.Tanh(),
        Conv(6, 3, 3, padding=1, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Flatten(),
        nn.LazyLinear(3),
    )


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize(
    ("dim", "size", "padding_mode"),
    [
        (1, (9,), "reflect"),
        (2, (6, 5), "circular"),
        (3, (7, 6, 7), "replicate"),
        (2, (5, 5), "zeros"),
    ],
)
def test_convolutions(form, dim, size, padding_mode, monkeypatch):
    grouped_calls = []
    weight_gradient = rules._conv_weight_gradient
    monkeypatch.setattr(rules, "_conv_weight_gradient", lambda *a: grouped_calls.append(1) or weight_gradient(*a))
    torch.manual_seed(0)
    model = convnet(dim, padding_mode)
    x1, x2 = randn(4, 2, *size, seed=1), randn(3, 2, *size, seed=2)
    model(x1)  # materialise the lazy head
    model.eval()
    ruled, fallback, layers = planned(model, x1)
    assert fallback == set() and len(layers) == 5
    assert [layer.shape.G for layer in layers[:4]] == [1, 1, 2, 1]
    # float64 conv3d is slow in torch; the contraction of every kind is covered by the 1-d and 2-d cases.
    check(model, x1, x2, kinds=KINDS if dim < 3 else ["entk"])
    assert bool(grouped_calls) is (form == "grouped")


def test_2d_convolution_with_rectangular_kernel_and_stride(form):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 2),
    ).eval()
    x1, x2 = randn(4, 3, 5, 5, seed=1), randn(2, 3, 5, 5, seed=2)
    assert planned(model, x1)[1] == set()
    check(model, x1, x2)


class ViewFlatten(nn.Module):
    """Flattens with ``.view``, which refuses channels-last activations."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        return self.head(h.view(h.shape[0], -1))


@pytest.mark.parametrize(
    ("model", "converted"),
    [
        (ViewFlatten(), False),
        (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(48, 2)), True),
    ],
)
def test_channels_last_passes_only_where_the_model_allows_them(form, model, converted):
    x1, x2 = randn(4, 2, 4, 4, seed=1), randn(3, 2, 4, 4, seed=2)
    model.eval()
    X = Inputs.from_user(x1)
    fm = functional_model(model, X[:2])
    layers, _ = structured_plan.plan(fm, X, Kind.PNTK)
    got = capture.channels_last(fm, X, layers, Kind.PNTK)
    assert (got is not None) is converted
    assert capture.channels_last(fm, X, layers, Kind.ENTK) is None  # vmap-batched backward passes
    if converted:
        assert got.tensors[0].is_contiguous(memory_format=torch.channels_last)
    check(model, x1, x2)


# --- embeddings and normalisation layers ------------------------------------------------------------------


class Embed(nn.Module):
    def __init__(self, out: int = 3):
        super().__init__()
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.head = nn.Linear(5, out)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)).mean(1))


def test_embedding_with_padding(form):
    torch.manual_seed(0)
    model = Embed().eval()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randint(0, 7, (5, 4), generator=g), torch.randint(0, 7, (3, 4), generator=g)
    x1[0, :2] = 0  # padding tokens, which have no gradient
    assert planned(model, x1)[1] == set()
    check(model, x1, x2)


def with_statistics(model: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics, eval mode."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        for p in m.parameters(recurse=False):
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                p.data.uniform_(-0.5, 1.5, generator=g)
    return model.eval()


class Elementwise(nn.Module):
    """Every elementwise rule: BatchNorm 1d on [B, C, L] and [B, C], 2d, 3d; GroupNorm; LayerNorm with and
    without bias over tokens; RMSNorm; PReLU with one slope per channel and one for all."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn2, self.gn, self.prelu4, self.prelu = nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.PReLU(4), nn.PReLU()
        self.bn3, self.bn1 = nn.BatchNorm3d(4), nn.BatchNorm1d(4)
        self.ln, self.ln_nobias, self.rms = nn.LayerNorm(4), nn.LayerNorm([4, 4], bias=False), nn.RMSNorm(4)
        self.fc, self.bn0 = nn.Linear(16, 6), nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.prelu4(self.gn(self.bn2(self.conv(x))))  # [B, 4, 4, 4]
        h = torch.tanh(self.bn3(h.unsqueeze(2)).squeeze(2))
        h = torch.tanh(self.bn1(h.flatten(2)))  # [B, 4, 16]: channels × positions
        h = torch.tanh(self.ln_nobias(self.ln(h.reshape(-1, 4, 4, 4).transpose(1, 3))))
        h = torch.tanh(self.rms(h)).mean(1).flatten(1)  # [B, 16]
        return self.head(self.prelu(self.bn0(self.fc(h))))


def test_elementwise_parameters(form):
    torch.manual_seed(0)
    model = with_statistics(Elementwise())
    x1, x2 = randn(4, 2, 4, 4, seed=1), randn(3, 2, 4, 4, seed=2)
    assert planned(model, x1)[1] == set()
    check(model, x1, x2)


# --- NTK parametrisation and subclasses ---------------------------------------------------------------------


class ScaledLinear(nn.Linear):
    """NTK-parametrised: ``forward = F.linear(x, weight·weight_scale, bias·bias_scale)``."""

    def __init__(self, n: int, m: int):
        super().__init__(n, m)
        self.weight_scale, self.bias_scale = 1.7 / math.sqrt(n), 0.1

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_scale, self.bias * self.bias_scale)


class ScaledConv2d(nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_scale, self.bias_scale = 1.3 / math.sqrt(self.weight[0].numel()), 0.2

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.weight_scale, self.bias * self.bias_scale)


class SineLinear(nn.Linear):
    """A subclass with another forward: not a ``nn.Linear`` for the rules."""

    def forward(self, x):
        return F.linear(x, torch.sin(self.weight), self.bias)


def test_ntk_scaled_subclasses_and_other_subclasses(form):
    torch.manual_seed(0)
    model = nn.Sequential(
        ScaledConv2d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        ScaledLinear(27, 5),
        nn.Tanh(),
        SineLinear(5, 4),
        nn.Tanh(),
        ScaledLinear(4, 10),
    ).eval()
    x1, x2 = randn(4, 2, 3, 3, seed=1), randn(3, 2, 3, 3, seed=2)
    ruled, fallback, _ = planned(model, x1)
    assert fallback == {"5.weight", "5.bias"} and ruled == {
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
    }
    check(model, x1, x2)


# --- what the rules must refuse ------------------------------------------------------------------------------


class Attention(nn.Module):
    """Self-attention over ``[T, B, E]`` (sequence first) with a raw ``in_proj`` parameter (ruled by operation:
    ``F.linear`` with its samples on axis 1) and an ``out_proj`` layer whose weight the parent reads instead of
    calling it."""

    def __init__(self, E: int):
        super().__init__()
        self.in_proj = nn.Parameter(torch.randn(3 * E, E) / math.sqrt(E))
        self.out_proj = nn.Linear(E, E)

    def forward(self, s):
        q, k, v = F.linear(s, self.in_proj).transpose(0, 1).chunk(3, dim=-1)  # [B, T, E] each
        o = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1) @ v
        return F.linear(o.transpose(0, 1), self.out_proj.weight, self.out_proj.bias)


class Mixed(nn.Module):
    """Ruled layers next to parameters no rule covers, and ruled types used in ways a rule cannot read."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.gain = nn.Parameter(torch.rand(4) + 0.5)  # a raw parameter added in forward (no rule; a product is one)
        self.attn = Attention(4)
        self.seq_first = nn.Linear(4, 4)  # called on [T, B, n]
        self.batch_second = nn.Linear(4, 4)  # called on [1, B, n]
        self.inplace = nn.Linear(4, 4)  # followed by ReLU(inplace=True)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        h = self.emb(ids) + self.gain  # [B, T, 4]
        s = self.attn(h.transpose(0, 1))  # [T, B, 4]
        s = torch.tanh(self.seq_first(s)).transpose(0, 1).mean(1)  # [B, 4]
        s = self.batch_second(s.unsqueeze(0)).squeeze(0)
        s = F.relu(self.inplace(s), inplace=True)
        return self.head(s) + (s @ self.emb.weight.T)[:, :3]  # tied: emb.weight is read here too


@pytest.mark.parametrize("capture_bytes", [WorkingMemory().capture_bytes, 1])
def test_unsupported_uses_fall_back_exactly(capture_bytes):
    """Also with one pass per sample, the factors, gradients and fallback gradients put together."""
    options = pntk.Options(working=WorkingMemory(capture_bytes=capture_bytes))
    torch.manual_seed(0)
    model = Mixed().eval()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randint(0, 6, (4, 3), generator=g), torch.randint(0, 6, (2, 3), generator=g)
    ruled, fallback, layers = planned(model, x1)
    assert ruled == {"inplace.weight", "inplace.bias", "head.weight", "head.bias", "attn.in_proj"}
    assert fallback == {
        "emb.weight",
        "gain",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "seq_first.weight",
        "seq_first.bias",
        "batch_second.weight",
        "batch_second.bias",
    }
    assert [layer.clone_output for layer in layers] == [True, False, False]
    check(model, x1, x2, options=options)


class Checkpointed(nn.Module):
    """A layer under activation checkpointing, recomputed in the backward pass."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.utils.checkpoint.checkpoint(lambda t: torch.tanh(self.inner(t)), x, use_reentrant=False)
        return self.head(h)


class Unrecorded(nn.Module):
    """A layer called without grad (its parameters have zero gradient) and a layer with a forward hook of the
    user's that rescales its output (no module rule; its ``F.linear`` is ruled by operation, whose cotangent
    is taken before the hook)."""

    def __init__(self):
        super().__init__()
        self.frozen, self.hooked, self.head = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)
        self.hooked.register_forward_hook(lambda module, args, output: 2.0 * output)

    def forward(self, x):
        with torch.no_grad():
            h = self.frozen(x)
        return self.head(torch.tanh(h + self.hooked(x)))


def test_checkpointing_is_refused():
    """The recomputation would run with the module's own parameters, not those given in ``params``."""
    model = Checkpointed().eval()
    params = {n: p.detach() * 2 for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="checkpointing"):
        pntk.pntk(model, randn(4, 3), engine="structured", params=params)


def test_unrecorded_and_hooked_layers_fall_back():
    torch.manual_seed(0)
    model = Unrecorded().eval()
    x1, x2 = randn(4, 3, seed=1), randn(3, 3, seed=2)
    ruled, fallback, _ = planned(model, x1)
    assert ruled == {"head.weight", "head.bias", "hooked.weight", "hooked.bias"}
    assert fallback == {"frozen.weight", "frozen.bias"}
    check(model, x1, x2)


class ModifiedInput(nn.Module):
    """A layer whose input the model modifies in place after the call (or, as a twin, out of place)."""

    def __init__(self, inplace: bool):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.inplace = inplace

    def forward(self, x):
        h = x * 2.0
        z = self.a(h)
        h = h.mul_(3.0) if self.inplace else h * 3.0
        return self.b(torch.tanh(z)) + h[:, :2]


def test_input_modified_in_place_is_kept_as_it_was(form):
    """Autograd refuses this model (the layer's saved input changed), but its gradient is well defined."""
    torch.manual_seed(0)
    model = ModifiedInput(inplace=True).eval()
    twin = ModifiedInput(inplace=False).eval()
    twin.load_state_dict(model.state_dict())
    x1, x2 = randn(4, 3, seed=1), randn(3, 3, seed=2)
    _, fallback, layers = planned(model, x1)
    assert fallback == set() and layers[0].clone_input
    for kind in KINDS:
        got = pntk.kernel(model, x1, x2, kind=kind, engine="structured", batch_size=2, dtype=torch.float64)
        assert rel_err(got, reference_kernel(twin, x1, x2, kind)) <= 1e-10


# --- parameter subsets, dtypes, tiling -------------------------------------------------------------------------


def mlp(out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, out)).eval()


@pytest.mark.parametrize(
    "names",
    [
        ["0.weight", "2.bias", "4.weight", "4.bias"],  # a weight without its bias; a bias alone
        ["2.weight"],
    ],
)
def test_params_subset(form, names):
    torch.manual_seed(0)
    model = mlp(4)
    x1, x2 = randn(5, 5, seed=1), randn(3, 5, seed=2)
    ruled, fallback, _ = planned(model, x1, names)
    assert ruled == set(names) and fallback == set()
    check(model, x1, x2, names=names)


@pytest.mark.parametrize("out", [1, 10])
def test_float32(form, out):
    torch.manual_seed(0)
    model = with_statistics(
        nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64, 8),
            nn.LayerNorm(8),
            nn.Tanh(),
            nn.Linear(8, out),
        )
    )
    check(model, randn(6, 2, 4, 4, seed=1), randn(4, 2, 4, 4, seed=2), batch_size=4, dtype=torch.float32, tol=1e-4)


def test_chunked_contraction_and_unfolding(form):
    """Chunks of a tile (and of a diagonal tile's upper half), of the passes that prepare a block, and of the
    unfolded inputs change nothing."""
    # 2 samples per pass for the pNTK, 1 for the others; Grams and unfolded inputs of one sample at a time.
    working = WorkingMemory(unfold_bytes=1, capture_bytes=1100, contract_bytes=1, symmetric_chunk=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 4)).eval()
    check(model, randn(7, 2, 6, seed=1), randn(5, 2, 6, seed=2), batch_size=5, options=pntk.Options(working=working))


# --- memory estimate and the "auto" choice ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_block_bytes_matches_a_prepared_dense_block(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 40), nn.Tanh(), nn.Linear(40, 3)).eval()
    X = Inputs.from_user(randn(16, 30))
    fm = functional_model(model, X[:2])
    eng = StructuredEngine()
    block = eng.prepare(fm, X, kind)
    held = sum(f.A.nbytes + f.D.nbytes for f in block.factors) + sum(g.nbytes for g in block.J)
    assert held > 0 and abs(eng.block_bytes(fm, 16, kind) - held) <= 0.05 * held


def test_auto_chooses_structured_unless_most_parameters_fall_back():
    X = Inputs.from_user(randn(4, 5))
    dense = functional_model(mlp(3), X[:2])
    assert resolve_engine("auto", dense, Kind.PNTK, 10**9, buffers=3).name == "structured"

    class Mostly(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Parameter(torch.randn(5, 200))
            self.head = nn.Linear(200, 3)

        def forward(self, x):
            return self.head(torch.tanh(torch.einsum("bi,ij->bj", x, self.big)))  # no rule reads einsum

    other = functional_model(Mostly().eval(), X[:2])
    assert StructuredEngine().ruled_fraction(other) < 0.5
    assert resolve_engine("auto", other, Kind.PNTK, 10**9, buffers=3).name == "jacobian"
