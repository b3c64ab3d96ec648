"""`pntk features`: features written to .npy equal the library's, and ridge regression on a built-in dataset."""

import json

import numpy as np
import pytest
import torch

import pntk
from pntk.cli import main

MODEL_FILE = """
import torch

def make():
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
"""


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_features_of_a_user_model_and_tensor_file(tmp_path, kind):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "phi.npy"
    argv = ["features", "--model", f"{tmp_path / 'net.py'}:make", "--dataset", str(tmp_path / "x.npy")]
    argv += ["--kind", kind, "--k", "64", "--feature-seed", "3", "--out", str(out)]
    assert main(argv) == 0
    torch.manual_seed(123)
    net = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).eval()
    expected = pntk.features(net, x, k=64, kind=kind, seed=3)
    assert np.allclose(np.load(out, allow_pickle=False), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_ridge_regression_on_digits_reports_test_accuracy(capsys):
    argv = ["features", "--model", "mlp", "--width", "32", "--dataset", "digits", "--num-samples", "300"]
    assert main(argv + ["--k", "256", "--ridge", "1e-3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_train"] == 300 and result["n_test"] == 355 and result["test_accuracy"] > 0.6


def test_nothing_to_do_is_an_error(capsys):
    assert main(["features", "--model", "mlp", "--dataset", "digits", "--k", "64"]) == 2
    assert "nothing to do" in capsys.readouterr().err
