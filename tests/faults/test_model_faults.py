"""Models pntk cannot vouch for, refused with the likely cause: a changed forward on resume, samples that are
random or depend on their batch, an output laid out [O, B]; and the API's clear errors for bad inputs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pntk
import pntk.store
from pntk.compute import compute
from pntk.errors import InputError, ModelError, PntkError, StoreMismatchError
from pntk.kernels import functional_model
from pntk.kernels.inputs import Inputs
from pntk.probe import behaviour, behaviour_difference
from pntk.store import KernelStore

x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    """Two dense layers; ``forward`` is replaced by the tests to change the code but not the weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def relu_forward(self, x):
    return self.b(torch.relu(self.a(x)))


# --- a changed forward -----------------------------------------------------------------------------------


def test_a_changed_forward_is_refused_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "k.zarr"
    write, written = KernelStore.write_tile, []

    def stop_after_two(self, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        write(self, *args, **kwargs)
        written.append(1)

    monkeypatch.setattr(KernelStore, "write_tile", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        compute(Net(), x, kind="pntk", out=out, batch_size=2)
    monkeypatch.undo()

    monkeypatch.setattr(Net, "forward", relu_forward)  # same class, same weights, other code
    with pytest.raises(
        StoreMismatchError, match="model behaviour: the model's behaviour changed.*outputs differ"
    ) as err:
        compute(Net(), x, kind="pntk", out=out, batch_size=2)
    assert "model fingerprint" not in str(err.value)  # the weights are the same
    monkeypatch.undo()
    K = compute(Net(), x, kind="pntk", out=out, batch_size=2)  # the original code resumes
    torch.testing.assert_close(torch.from_numpy(K.numpy()), pntk.pntk(Net(), x, batch_size=2), rtol=0, atol=0)


def test_the_probe_tolerates_rounding_but_not_other_code():
    X = Inputs((x,))
    fm = functional_model(Net(), X)
    probe = behaviour(fm, X)
    assert probe["dtype"] == "float64" and len(probe["outputs"]) == 4 and len(probe["jvp"][0]) == 2
    assert behaviour_difference(probe, behaviour(fm, X)) is None
    nudged = {**probe, "outputs": [[v * (1 + 1e-12) for v in row] for row in probe["outputs"]]}
    assert behaviour_difference(probe, nudged) is None
    other = Net()
    other.forward = relu_forward.__get__(other)
    changed = behaviour(functional_model(other, X), X)
    assert "outputs differ" in behaviour_difference(probe, changed)
    # The same outputs with another derivative: the JVP sees it.
    derivative = {**probe, "jvp": [[2 * v for v in row] for row in probe["jvp"]]}
    assert "directional derivative differ" in behaviour_difference(probe, derivative)


# --- samples that are not independent ----------------------------------------------------------------------


class FunctionalDropout(Net):
    def forward(self, x):
        return self.b(F.dropout(torch.tanh(self.a(x)), p=0.2, training=True))


class BatchMean(Net):
    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h - h.mean(0))


class ByPosition(Net):
    """Adds each sample's position in the batch: the same samples, in another order, give other outputs."""

    def forward(self, x):
        return super().forward(x) + torch.arange(len(x), dtype=x.dtype).unsqueeze(1)


class OutputsFirst(Net):
    def forward(self, x):
        return super().forward(x).T  # [O, B]


class BatchNormWithoutStatistics(Net):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(8, track_running_stats=False).eval()

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


class Attention(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, dropout=dropout, batch_first=True)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h, _ = self.attn(x, x, x)
        return self.out(h.mean(1))


SAMPLE_DEPENDENCE = {
    "functional dropout": (FunctionalDropout, "random.*F.dropout"),
    "batch mean": (BatchMean, "depends on the other samples.*batch statistics"),
    "batch position": (ByPosition, "depends on the other samples"),
    "output [O, B]": (OutputsFirst, r"first axis is not the sample axis.*\[O, B\]"),
    "BatchNorm without statistics": (BatchNormWithoutStatistics, "BatchNorm.*running statistics"),
}


@pytest.mark.parametrize("case", SAMPLE_DEPENDENCE)
@pytest.mark.parametrize("path", ["kernel", "compute"])
def test_sample_dependence_is_refused_on_every_path(case, path, tmp_path):
    make, message = SAMPLE_DEPENDENCE[case]
    model = make()
    state = torch.random.get_rng_state()
    with pytest.raises(ModelError, match=message) as err:
        if path == "kernel":
            pntk.pntk(model, x)
        else:
            compute(model, x, kind="entk", out=tmp_path / "k.zarr")
    assert isinstance(err.value, ValueError)
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe leaves the caller's generator alone
    assert not (tmp_path / "k.zarr" / "zarr.json").exists()


def test_one_sample_is_checked_too():
    with pytest.raises(ModelError, match="depends on the other samples"):
        pntk.pntk(BatchMean(), x[:1])
    with pytest.raises(ModelError, match="first axis"):
        pntk.pntk(OutputsFirst(), x[:1])


def test_a_model_that_passes_costs_two_more_forward_passes():
    """The output on the probe batch comes from the model's first forward; the check adds the first sample
    alone and the batch reversed, and runs more passes only to name a failure."""
    calls = []
    model = Net()
    model.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    functional_model(model, Inputs((x[:2],)), check_samples=False)
    assert calls == [2]
    calls.clear()
    functional_model(model, Inputs((x[:2],)))
    assert calls == [2, 1, 2]


def test_check_samples_false_skips_the_check():
    """For those who know better: the batch-mean model then gives a kernel that depends on batch_size."""
    whole = pntk.pntk(BatchMean(), x, check_samples=False, batch_size=6)
    tiled = pntk.pntk(BatchMean(), x, check_samples=False, batch_size=2)
    assert not torch.allclose(whole, tiled)  # what the check protects against


def test_multihead_attention_dropout_in_training_mode():
    tokens = torch.randn(3, 5, 4)
    with pytest.raises(ModelError, match="MultiheadAttention.*dropout=0.1.*model.eval"):
        pntk.pntk(Attention(0.1).train(), tokens)
    assert pntk.pntk(Attention(0.1).eval(), tokens).shape == (3, 3)


# --- the API's clear errors --------------------------------------------------------------------------------


def test_integer_inputs_to_a_float_model():
    with pytest.raises(InputError, match=r"dtype torch.int64.*x.to\(torch.float32\)"):
        pntk.pntk(Net(), torch.randint(0, 5, (4, 3)))


def test_embedding_models_take_integer_inputs():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    assert pntk.pntk(net, torch.randint(0, 10, (5, 2))).shape == (5, 5)


def test_a_forward_that_fails_says_what_the_inputs_were():
    with pytest.raises(ModelError, match=r"forward failed on 2 samples of x1 \(\[2, 4\] torch.float32\)"):
        pntk.pntk(Net(), torch.randn(4, 4))


def test_a_model_on_the_meta_device():
    with torch.device("meta"):
        net = Net()
    with pytest.raises(ModelError, match="meta device.*to_empty"):
        pntk.pntk(net, x.to("meta"))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"a.weight": torch.zeros(3, 8)}, r"params\['a.weight'\] has shape \[3, 8\].*has shape \[8, 3\]"),
        ({"a.weight": [[0.0] * 3] * 8}, r"params\['a.weight'\] is a list, not a tensor"),
        ({"a.weight": torch.zeros(8, 3, dtype=torch.int64)}, "floating"),
        ({"nope": torch.zeros(1)}, r"\['nope'\] are not parameters"),
        ([torch.zeros(8, 3)], "must be a dict of tensors by name, a name pattern"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(InputError, match=message):
        pntk.pntk(Net(), x, params=params)


def test_dtype_as_a_string_is_accepted():
    K = pntk.pntk(Net(), x, dtype="float64")
    assert K.dtype == torch.float64
    torch.testing.assert_close(K, pntk.pntk(Net(), x, dtype=torch.float64), rtol=0, atol=0)
    with pytest.raises(InputError, match="unknown dtype 'float63'; use a floating dtype"):
        pntk.pntk(Net(), x, dtype="float63")


def test_every_refusal_is_a_pntk_error():
    for make in (FunctionalDropout, BatchMean, OutputsFirst):
        with pytest.raises(PntkError):
            pntk.pntk(make(), x)
