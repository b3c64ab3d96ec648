"""`pntk compute` and `pntk info`: zoo and user models, datasets and tensor files, weights, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pntk
import pntk.store
from pntk.cli import main
from pntk.cli.resolve import load_model
from pntk.data import load_dataset
from pntk.models import build_model
from pntk.store import KernelStore

MODEL_FILE = """
import torch

def make():
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
"""


def test_zoo_model_on_builtin_dataset_then_info(tmp_path, capsys):
    out, log = tmp_path / "k.zarr", tmp_path / "tiles.jsonl"
    argv = [
        "compute",
        "--model",
        "mlp",
        "--width",
        "16",
        "--dataset",
        "digits",
        "--num-samples",
        "40",
        "--kind",
        "pntk",
        "--out",
        str(out),
        "--batch-size",
        "16",
        "--log-json",
        str(log),
    ]
    assert main(argv) == 0
    model = build_model("mlp", width=16, in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = load_dataset("digits", n=40).x
    expected = pntk.kernel(model, x, kind="pntk", batch_size=16).numpy()
    np.testing.assert_array_equal(pntk.store.open(out).numpy(), expected)
    assert len(log.read_text().splitlines()) == 6  # 3 × 3 tiles, upper ones only

    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "complete    yes" in text and "pntk [40, 40] float32" in text and "edge 16" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["missing_tiles"], info["tiles"], info["complete"]) == (0, 6, True)
    assert info["size_on_disk"] > 0 and info["fingerprints"]["model"].startswith("sha256:")


@pytest.mark.parametrize("weights_format", ["safetensors", "pt"])
def test_model_file_weights_and_tensor_files(tmp_path, weights_format):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    trained, record = load_model(f"{tmp_path / 'net.py'}:make", in_shape=(6,), num_classes=3)
    assert record["factory"] == "make" and record["sha256"].startswith("sha256:")
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(-2.0)
    state = trained.state_dict()
    if weights_format == "safetensors":
        weights = tmp_path / "w.safetensors"
        save_file(state, str(weights))
    else:
        weights = tmp_path / "w.pt"
        torch.save({"state_dict": state, "epoch": 3}, weights)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(9, 6, generator=g), torch.randn(5, 6, generator=g)
    np.save(tmp_path / "x1.npy", x1.numpy())
    torch.save(x2, tmp_path / "x2.pt")
    out = tmp_path / "k.zarr"
    argv = [
        "compute",
        "--model",
        f"{tmp_path / 'net.py'}:make",
        "--weights",
        str(weights),
        "--dataset",
        str(tmp_path / "x1.npy"),
        "--dataset2",
        str(tmp_path / "x2.pt"),
        "--kind",
        "entk",
        "--out",
        str(out),
        "--memory",
        "20kB",
        "--dtype",
        "float64",
    ]
    assert main(argv) == 0
    K = pntk.store.open(out)
    expected = pntk.kernel(trained.eval(), x1, x2, kind="entk", batch_size=K.spec.tile, dtype=torch.float64)
    assert K.shape == (9, 5, 3, 3) and K.spec.tile < 9 and K.dtype == np.float64
    np.testing.assert_array_equal(K.numpy(), expected.numpy())


def test_errors_say_what_to_do(tmp_path, capsys):
    out = tmp_path / "k.zarr"
    base = [
        "compute",
        "--model",
        "mlp",
        "--width",
        "8",
        "--dataset",
        "digits",
        "--num-samples",
        "12",
        "--out",
        str(out),
    ]
    assert main([*base, "--kind", "pntk"]) == 0
    capsys.readouterr()
    assert main([*base, "--kind", "trace"]) == 2
    assert "kind: store has 'pntk', this call 'trace'" in capsys.readouterr().err
    assert main([*base, "--kind", "trace", "--overwrite"]) == 0
    assert pntk.store.open(out).kind.value == "trace"

    (tmp_path / "cifar").mkdir()
    assert main([*base[:5], "--dataset", str(tmp_path / "cifar"), "--kind", "pntk", "--out", str(out)]) == 2
    assert "--dataset-format" in capsys.readouterr().err
    assert main([*base[:3], "--dataset", "digits", "--kind", "pntk", "--out", str(tmp_path / "a.zarr")]) == 2
    assert "needs --width" in capsys.readouterr().err
    assert main([*base[:5], "--dataset", str(tmp_path / "missing.npy"), "--kind", "pntk", "--out", str(out)]) == 2
    assert "no input file" in capsys.readouterr().err


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickles_are_never_loaded(tmp_path, capsys):
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    np.save(tmp_path / "evil.npy", np.array([Evil()], dtype=object))
    for path in ("evil.pt", "evil.npy"):
        argv = [
            "compute",
            "--model",
            "mlp",
            "--width",
            "8",
            "--dataset",
            str(tmp_path / path),
            "--kind",
            "pntk",
            "--out",
            str(tmp_path / "k.zarr"),
        ]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert "unpickled!" not in captured.out and "unsafe to unpickle" in captured.err
    torch.save({"x": Evil()}, tmp_path / "w.pt")
    argv = [
        "compute",
        "--model",
        "mlp",
        "--width",
        "8",
        "--dataset",
        "digits",
        "--num-samples",
        "4",
        "--weights",
        str(tmp_path / "w.pt"),
        "--kind",
        "pntk",
        "--out",
        str(tmp_path / "k.zarr"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unsafe to unpickle" in err and "save_file(model.state_dict()" in err and "weights_only=False" not in err


def test_info_of_an_interrupted_store(tmp_path, capsys, monkeypatch):
    record, calls = KernelStore._record, []

    def stop_after_two(self, tile, entry):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(tile)
        record(self, tile, entry)

    monkeypatch.setattr(KernelStore, "_record", stop_after_two)
    out = tmp_path / "k.zarr"
    argv = ["compute", "--model", "mlp", "--width", "8", "--dataset", "digits", "--num-samples", "30"]
    assert main([*argv, "--kind", "trace", "--batch-size", "10", "--out", str(out)]) == 130
    assert "interrupted; the store keeps its finished tiles: rerun the same command" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    assert "complete    no: 4 of 6 tiles missing" in capsys.readouterr().out
