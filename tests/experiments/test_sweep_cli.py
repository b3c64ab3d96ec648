"""`pntk sweep`: one width sweep from the command line, checked against the library on the same settings."""

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import compare
from pntk.cli import main
from pntk.data import load_dataset
from pntk.experiments import read_result
from pntk.models import build_model


def test_sweep_writes_json_and_figure_matching_the_library(tmp_path, capsys):
    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--widths",
        "16,32",
        "--seed",
        "0,1",
        "--data-seed",
        "0,1",
        "--num-samples",
        "8",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "rate: error ∝ width^" in out and "lambda_max_bound:" in out
    result = read_result(tmp_path / "width_sweep_digits_mlp.json")
    assert (tmp_path / "width_sweep_digits_mlp.png").stat().st_size > 10_000
    assert [(r.data_seed, r.width, r.seed) for r in result.runs] == [
        (d, w, s) for d in (0, 1) for w in (16, 32) for s in (0, 1)
    ]
    x = load_dataset("digits", n=8, seed=1).x  # the second input set
    model = build_model("mlp", width=32, in_shape=(1, 8, 8), num_classes=10, seed=1).eval()
    expected = compare(pntk.entk(model, x, dtype=torch.float64), pntk.pntk(model, x, dtype=torch.float64))
    run = result.runs[-1].comparison
    np.testing.assert_allclose(run.relative_error, expected.relative_error, rtol=1e-10)
    np.testing.assert_allclose(run.lambda_max_K, expected.lambda_max_K, rtol=1e-10)


@pytest.mark.parametrize("widths", ["32,16", "16,x"])
def test_sweep_refuses_widths_that_are_not_ascending_integers(tmp_path, widths, capsys):
    argv = ["sweep", "--dataset", "digits", "--model", "mlp", "--widths", widths, "--out", str(tmp_path)]
    if widths == "16,x":
        with pytest.raises(SystemExit):
            main(argv)
        assert "comma-separated integers" in capsys.readouterr().err
    else:
        assert main(argv) == 2
        assert "ascending" in capsys.readouterr().err
