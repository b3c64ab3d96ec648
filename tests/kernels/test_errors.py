"""Every refusal names the problem and says what to do."""

import pytest
import torch
from torch import nn

import pntk
from zoo import make_case


@pytest.fixture
def mlp():
    return make_case("mlp")[0]


def x(n=3, d=5):
    return torch.randn(n, d)


def test_training_mode_batchnorm():
    model = make_case("batchnorm_eval")[0].train()
    with pytest.raises(ValueError, match=r"training mode and has BatchNorm.*call model.eval\(\)"):
        pntk.pntk(model, torch.randn(2, 2, 8, 8))


def test_training_mode_dropout():
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    with pytest.raises(ValueError, match=r"Dropout.*random.*call model.eval\(\)"):
        pntk.pntk(model, x())
    # p = 0 dropout is the identity and harmless
    model[1].p = 0.0
    assert pntk.pntk(model, x()).shape == (3, 3)


def test_batchnorm_without_running_statistics():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="batch statistics even in eval mode"):
        pntk.pntk(model, x())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs(mlp, bad):
    inputs = x()
    inputs[1, 2] = bad
    with pytest.raises(ValueError, match="x1 contains NaN or Inf"):
        pntk.pntk(mlp, inputs)
    with pytest.raises(ValueError, match="x2 contains NaN or Inf"):
        pntk.pntk(mlp, x(), inputs)


def test_nonfinite_parameters(mlp):
    with torch.no_grad():
        mlp[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"'0.weight' contains NaN or Inf"):
        pntk.pntk(mlp, x())


def test_sample_counts_disagree():
    model = make_case("two_inputs")[0]
    with pytest.raises(ValueError, match=r"disagree on the number of samples.*\[3, 4\], \[2, 2, 3\]"):
        pntk.pntk(model, (torch.randn(3, 4), torch.randn(2, 2, 3)))


def test_trailing_shapes_disagree(mlp):
    with pytest.raises(ValueError, match=r"disagree on the shape of one sample.*\[5\] vs \[6\]"):
        pntk.pntk(mlp, x(3, 5), x(3, 6))


def test_structures_disagree():
    model = make_case("two_inputs")[0]
    pair = (torch.randn(3, 4), torch.randn(3, 2, 3))
    with pytest.raises(ValueError, match="different structures"):
        pntk.pntk(model, pair, pair[0])


@pytest.mark.parametrize(
    "head, pattern",
    [
        (lambda: nn.Flatten(0), r"shape \[16\].*must be \[B, O\].*unsqueeze"),
        (lambda: nn.Unflatten(1, (2, 4)), r"shape \[2, 2, 4\].*must be \[B, O\]"),
    ],
)
def test_output_not_B_by_O(head, pattern):
    model = nn.Sequential(nn.Linear(5, 8), head()).eval()
    with pytest.raises(ValueError, match=pattern):
        pntk.pntk(model, x())


def test_output_not_a_tensor():
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(ValueError, match=r"tuple of 2 items.*must be \[B, O\].*output=lambda out: out\[0\]"):
        pntk.pntk(TupleOut(), x())


def test_no_trainable_parameters(mlp):
    mlp.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters.*requires_grad"):
        pntk.pntk(mlp, x())
    with pytest.raises(ValueError, match="no trainable parameters"):
        pntk.pntk(nn.ReLU(), x())


def test_unknown_params_name(mlp):
    with pytest.raises(ValueError, match=r"\['nope'\] are not parameters of the model"):
        pntk.pntk(mlp, x(), params={"nope": torch.zeros(1)})


def test_empty_inputs(mlp):
    with pytest.raises(ValueError, match=r"x1 is empty \(0 samples\)"):
        pntk.pntk(mlp, x(0))
    with pytest.raises(ValueError, match=r"x2 is empty \(0 samples\)"):
        pntk.pntk(mlp, x(), x(0))
    with pytest.raises(ValueError, match="holds no tensor"):
        pntk.pntk(mlp, ())


def test_not_a_tensor(mlp):
    with pytest.raises(TypeError, match="must be a tensor, a tuple of tensors or a dict"):
        pntk.pntk(mlp, [[1.0, 2.0]] and 3.0)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        pntk.pntk(lambda t: t, x())


def test_unknown_kind_lists_valid(mlp):
    with pytest.raises(ValueError, match=r"unknown kind 'ntk'; valid kinds are 'entk', 'trace', 'pntk'"):
        pntk.kernel(mlp, x(), kind="ntk")


def test_unknown_engine_lists_valid(mlp):
    with pytest.raises(ValueError, match=r"unknown engine 'fast'; valid engines are 'auto', 'jacobian', 'vp'"):
        pntk.pntk(mlp, x(), engine="fast")


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_batch_size(mlp, bad):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pntk.pntk(mlp, x(), batch_size=bad)


def test_mixed_dtypes(mlp):
    with pytest.raises(ValueError, match=r"mixes parameter dtypes.*pass dtype="):
        pntk.pntk(nn.Sequential(nn.Linear(5, 4).double(), nn.Linear(4, 2)), x())
    with pytest.raises(ValueError, match=r"x1 has dtype torch.float64 but the model computes in torch.float32"):
        pntk.pntk(mlp, x().double())
    # an explicit dtype casts everything
    assert pntk.pntk(mlp, x().double(), dtype=torch.float64).dtype == torch.float64


def test_integer_dtype_refused(mlp):
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        pntk.pntk(mlp, x(), dtype=torch.int64)


def test_mixed_devices(mlp):
    meta = torch.randn(3, 5, device="meta")
    with pytest.raises(ValueError, match=r"x1 is on the meta device, which holds shapes but no numbers"):
        pntk.pntk(mlp, meta)
    mlp[4].to("meta")
    with pytest.raises(ValueError, match=r"several devices.*model.to\(device\)"):
        pntk.pntk(mlp, x())
