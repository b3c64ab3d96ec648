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


def test_ridge_regression_streams_the_features_in_chunks_and_fits_what_the_whole_features_fit(tmp_path, capsys):
    """`--ridge` alone never holds Φ: chunks of samples go into ΦᵀΦ one by one (many under a small --memory).
    The fit is the one from the whole Φ (written with --out), up to the rounding of the chunked sums."""
    argv = ["features", "--model", "mlp", "--width", "32", "--dataset", "digits", "--num-samples", "300"]
    argv += ["--k", "256", "--ridge", "1e-3", "--dtype", "float64"]
    records = []
    for extra in (["--memory", "400KB"], ["--out", str(tmp_path / "phi.npy")]):
        assert main(argv + extra) == 0
        records.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    streamed, whole = records
    assert streamed["chunks"] == 300 // (400_000 // (4 * 256 * 8)) + 1 and whole["chunks"] == 1
    assert streamed["ridge"] == pytest.approx(whole["ridge"], rel=1e-10)
    assert streamed["test_accuracy"] == whole["test_accuracy"] > 0.6


@pytest.mark.parametrize("out", [None, "phi.npy", "phi.zarr"])
def test_several_ridge_scales_are_chosen_among_on_held_out_training_samples(tmp_path, capsys, out):
    """The last tenth of the training samples chooses the scale, then joins the fit: the result is the fit
    with the chosen scale alone, whether Φ is streamed, held or read from a store."""
    argv = ["features", "--model", "mlp", "--width", "32", "--dataset", "digits", "--num-samples", "300"]
    argv += ["--k", "128", "--dtype", "float64", "--batch-size", "64"]
    argv += [] if out is None else ["--out", str(tmp_path / out)]
    assert main([*argv, "--ridge", "1e-9", "1e-2", "1e4"]) == 0
    chosen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert chosen["held_out"] == 30 and list(chosen["validation_accuracy"]) == ["1e-09", "0.01", "10000.0"]
    best = max(chosen["validation_accuracy"], key=lambda c: chosen["validation_accuracy"][c])
    assert chosen["ridge_scale"] == float(best)
    assert chosen["validation_accuracy"]["10000.0"] < chosen["validation_accuracy"]["0.01"]  # λ ≫ K underfits
    argv = [a for a in argv if a not in ("--out", str(tmp_path / (out or "")))]
    assert main([*argv, "--ridge", best]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "validation_accuracy" not in alone and alone["ridge"] == pytest.approx(chosen["ridge"], rel=1e-9)
    assert alone["test_accuracy"] == chosen["test_accuracy"]


def test_ridge_scales_are_checked_before_any_work(capsys):
    argv = ["features", "--model", "mlp", "--width", "8", "--dataset", "digits", "--num-samples", "9", "--k", "64"]
    assert main([*argv, "--ridge", "1e-3", "1e-1"]) == 2
    assert "holds out a tenth of the 9 training samples" in capsys.readouterr().err
    assert main([*argv, "--ridge", "1e-3", "-1"]) == 2
    assert "must be non-negative" in capsys.readouterr().err


def test_nothing_to_do_is_an_error(capsys):
    assert main(["features", "--model", "mlp", "--dataset", "digits", "--k", "64"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_a_feature_store_and_regression_on_it(tmp_path, capsys):
    """`pntk features --out *.zarr` writes the rows pntk.compute_features writes; `pntk regress --features`
    streams them into the k-dimensional ridge regression that FeatureRidge solves in memory."""
    (tmp_path / "net.py").write_text(MODEL_FILE)
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(40, 6, generator=g), torch.randn(15, 6, generator=g)
    y, y_test = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (15,), generator=g)
    for name, array in {"x": x, "xt": x_test, "y": y, "yt": y_test}.items():
        np.save(tmp_path / f"{name}.npy", array.numpy())
    net = ["--model", f"{tmp_path / 'net.py'}:make", "--k", "64", "--feature-seed", "3", "--batch-size", "16"]
    for data, out in (("x", "phi.zarr"), ("xt", "phi_test.zarr")):
        assert main(["features", *net, "--dataset", str(tmp_path / f"{data}.npy"), "--out", str(tmp_path / out)]) == 0
    assert "phi_test.zarr: pntk features [15, 64] float32, complete" in capsys.readouterr().err
    store = pntk.open(tmp_path / "phi.zarr")
    assert store.complete and store.spec.tile == 16 and store.provenance["seeds"]["features"] == 3
    torch.manual_seed(123)
    model = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).eval()
    Phi, Phi_test = (pntk.features(model, inputs, k=64, seed=3, batch_size=16) for inputs in (x, x_test))
    np.testing.assert_array_equal(store.numpy(), Phi.numpy())

    ridge = 1e-2 * float(Phi.double().square().sum(1).mean())
    predictions = pntk.FeatureRidge(ridge).fit(Phi, torch.nn.functional.one_hot(y, 3).double()).predict(Phi_test)
    argv = ["regress", "--features", str(tmp_path / "phi.zarr"), "--test-features", str(tmp_path / "phi_test.zarr")]
    argv += ["--labels", str(tmp_path / "y.npy"), "--test-labels", str(tmp_path / "yt.npy"), "--ridge-rel", "1e-2"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["N"] == 40 and result["k"] == 64 and result["ridge"] == pytest.approx(ridge, rel=1e-6)
    assert result["test_accuracy"] == float((predictions.argmax(1) == y_test.numpy()).mean())
    assert main(["regress", "--features", str(tmp_path / "phi.zarr")]) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "phi.zarr")]) == 0
    assert main(["info", str(tmp_path / "phi.zarr")]) == 0
    info = capsys.readouterr().out
    assert "pntk feature store" in info and "kronecker, gaussian, seed 3, block 8 × 8" in info


def test_nystrom_features_with_rpcholesky_landmarks(tmp_path, capsys):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "phi.npy"
    argv = ["features", "--model", f"{tmp_path / 'net.py'}:make", "--dataset", str(tmp_path / "x.npy"), "--k", "8"]
    argv += ["--method", "nystrom", "--landmarks", "rpcholesky", "--feature-seed", "3", "--out", str(out)]
    assert main(argv) == 0
    torch.manual_seed(123)
    net = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).eval()
    expected = pntk.features(net, x, k=8, method="nystrom", landmarks="rpcholesky", seed=3)
    assert np.allclose(np.load(out, allow_pickle=False), expected.numpy(), rtol=1e-4, atol=1e-5)
    argv = ["features", "--model", f"{tmp_path / 'net.py'}:make", "--dataset", str(tmp_path / "x.npy"), "--k", "8"]
    assert main([*argv, "--landmarks", "rpcholesky", "--out", str(out)]) == 2
    assert "applies to --method nystrom only" in capsys.readouterr().err
