"""`pntk eig` and `pntk regress`: matrix-free on a zoo model and dataset, or on stores; JSON results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pntk
from pntk import analysis
from pntk.cli import main
from pntk.data import load_dataset, one_hot_targets
from pntk.models import build_model
from pntk.solvers import ConvergenceWarning

NET = ["--model", "mlp", "--width", "16", "--dataset", "digits", "--dtype", "float64"]


@pytest.fixture(scope="module")
def digits():
    model = build_model("mlp", width=16, in_shape=(1, 8, 8), num_classes=10, seed=0).eval().double()
    train, test = load_dataset("digits", n=120), load_dataset("digits", split="test", n=40)
    return model, train.x.double(), train.y, test.x.double(), test.y


def run_json(argv, tmp_path, capsys, stderr=None):
    """``(exit code, printed JSON)``, the JSON checked against the file ``--json`` writes; what was written to
    stderr is appended to the list ``stderr`` if given."""
    out = tmp_path / "result.json"
    code = main([*argv, "--json", str(out)])
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text())
    if stderr is not None:
        stderr.append(captured.err)
    return code, printed


def test_eig_matrix_free_and_on_a_store(digits, tmp_path, capsys):
    model, x, *_ = digits
    dense = np.linalg.eigvalsh(pntk.pntk(model, x).numpy())[::-1][:4]
    code, result = run_json(["eig", *NET, "--num-samples", "120", "--top", "4", "--tol", "1e-10"], tmp_path, capsys)
    assert code == 0 and result["converged"] and result["N"] == 120
    np.testing.assert_allclose(result["eigenvalues"], dense, rtol=1e-8)
    pntk.compute(model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=50)
    code, result = run_json(
        ["eig", "--store", str(tmp_path / "k.zarr"), "--top", "4", "--tol", "1e-10"], tmp_path, capsys
    )
    assert code == 0 and result["iterations"] >= 1 and result["products"] >= 4
    np.testing.assert_allclose(result["eigenvalues"], dense, rtol=1e-8)


def test_eig_refine_gives_the_float64_eigenvalues_of_a_float32_network(digits, tmp_path, capsys):
    model, x, *_ = digits
    dense = np.linalg.eigvalsh(pntk.pntk(model, x).numpy())[::-1][:4]
    net32 = [a for a in NET if a not in ("--dtype", "float64")]
    argv = ["eig", *net32, "--num-samples", "120", "--top", "4", "--tol", "1e-6"]
    _, plain = run_json(argv, tmp_path, capsys)
    code, refined = run_json([*argv, "--refine", "--memory", "64MB"], tmp_path, capsys)
    assert code == 0 and refined["converged"]
    np.testing.assert_allclose(refined["eigenvalues"], dense, rtol=1e-10)
    assert np.abs(np.array(plain["eigenvalues"]) / dense - 1).max() > 1e-10  # float32 products alone do not


def test_regress_matches_the_dense_solve(digits, tmp_path, capsys):
    model, x, y, x_test, y_test = digits
    K, K_test = pntk.pntk(model, x), pntk.pntk(model, x_test, x)
    ridge = 1e-3 * K.diagonal().mean().item()
    predictions = analysis.kernel_regression(K, K_test, one_hot_targets(y, 10, dtype=torch.float64), ridge=ridge)
    accuracy = float((predictions.argmax(1) == y_test.numpy()).mean())
    argv = ["regress", *NET, "--num-samples", "120", "--num-test", "40", "--tol", "1e-10", "--rank", "30"]
    code, result = run_json(argv, tmp_path, capsys)
    assert code == 0 and result["converged"] and result["residual"] <= 2e-10
    assert result["ridge"] == pytest.approx(ridge, rel=1e-12)
    assert result["test_accuracy"] == accuracy and len(result["history"]) == result["iterations"] + 1

    pntk.compute(model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=50)
    pntk.compute(model, x_test, x, kind="pntk", out=tmp_path / "kt.zarr", batch_size=50)
    np.save(tmp_path / "y.npy", y.numpy())
    np.save(tmp_path / "yt.npy", y_test.numpy())
    argv = ["regress", "--store", str(tmp_path / "k.zarr"), "--test-store", str(tmp_path / "kt.zarr")]
    argv += ["--labels", str(tmp_path / "y.npy"), "--test-labels", str(tmp_path / "yt.npy"), "--tol", "1e-10"]
    code, result = run_json([*argv, "--ridge", str(ridge)], tmp_path, capsys)
    assert code == 0 and result["test_accuracy"] == accuracy


def test_regress_refines_a_float32_kernel_to_the_float64_solution(digits, tmp_path, capsys):
    """--refine reaches a tolerance that float32 products cannot (exit 1 without it), on a network and on a
    float32 store, with float64 residuals and predictions."""
    model, x, y, x_test, y_test = digits
    K, K_test = pntk.pntk(model, x), pntk.pntk(model, x_test, x)
    ridge = 1e-3 * K.diagonal().mean().item()
    predictions = analysis.kernel_regression(K, K_test, one_hot_targets(y, 10, dtype=torch.float64), ridge=ridge)
    accuracy = float((predictions.argmax(1) == y_test.numpy()).mean())
    net32 = [a for a in NET if a not in ("--dtype", "float64")]
    argv = ["regress", *net32, "--num-samples", "120", "--num-test", "40", "--tol", "1e-10", "--ridge", str(ridge)]
    err: list[str] = []
    with pytest.warns(ConvergenceWarning, match="rounding of the kernel's float32 products"):
        code, result = run_json(argv, tmp_path, capsys, stderr=err)
    assert code == 1 and not result["converged"] and result["residual"] > 1e-10
    assert "pass --refine" in err[0]
    code, result = run_json([*argv, "--refine", "--memory", "64MB"], tmp_path, capsys)
    assert code == 0 and result["converged"] and result["residual"] <= 1e-10 and result["refinements"] >= 1
    assert result["test_accuracy"] == accuracy

    pntk.compute(model.float(), x.float(), kind="pntk", out=tmp_path / "k.zarr", batch_size=50)
    np.save(tmp_path / "y.npy", y.numpy())
    argv = ["regress", "--store", str(tmp_path / "k.zarr"), "--labels", str(tmp_path / "y.npy"), "--tol", "1e-10"]
    code, result = run_json([*argv, "--ridge", str(ridge), "--refine"], tmp_path, capsys)
    assert code == 0 and result["converged"] and result["residual"] <= 1e-10


def test_source_errors(tmp_path, capsys):
    assert main(["eig", "--store", "k.zarr", *NET]) == 2
    assert "pass either --store PATH, or both --model and --dataset" in capsys.readouterr().err
    assert main(["regress", "--model", "mlp", "--width", "8"]) == 2
    assert main(["regress", "--store", str(tmp_path)]) == 2
    assert "--labels" in capsys.readouterr().err
