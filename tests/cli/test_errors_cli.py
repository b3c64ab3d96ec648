"""No raw traceback from the CLI: each bad input ends in one message that says what to do, and an exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pntk
from pntk.cli import main
from pntk.cli.resolve import load_model, load_weights
from pntk.data import load_dataset

GOOD_MODEL = """
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
"""


def _compute(tmp_path, model: str, *extra: str) -> list[str]:
    out = str(tmp_path / "k.zarr")
    return [
        "compute",
        "--model",
        model,
        "--dataset",
        "digits",
        "--num-samples",
        "6",
        "--kind",
        "pntk",
        "--out",
        out,
    ] + [*extra]


def _fails(capsys, argv: list[str], status: int = 2) -> str:
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith(f"pntk {argv[0]}: error: ") and "Traceback" not in captured.err, captured.err
    return captured.err


@pytest.mark.parametrize(
    "source, message",
    [
        ("def make(:\n    pass\n", "net.py, line 1: syntax error: "),
        ("import torch\nraise ImportError('no module named foo')\n", "importing {net} failed at line 2: ImportError"),
        ("def make():\n    return 1 / 0\n", "{net}:make() raised ZeroDivisionError at line 2: division by zero"),
        ("def make():\n    return 'a model'\n", "{net}:make() returned a str, not a torch.nn.Module"),
        ("x = 1\n", "{net} defines no function 'make'"),
    ],
)
def test_model_files_that_do_not_run(tmp_path, capsys, source, message) -> None:
    net = tmp_path / "net.py"
    net.write_text(source)
    err = _fails(capsys, _compute(tmp_path, f"{net}:make"))
    assert message.format(net=net) in err


def test_a_model_that_does_not_fit_the_data(tmp_path, capsys) -> None:
    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL.replace("Linear(64, 5)", "Linear(10, 5)"))
    err = _fails(capsys, _compute(tmp_path, f"{net}:make"))
    assert "the model cannot run on the inputs of --dataset (a batch of shape [2, 1, 8, 8]" in err
    assert "mat1 and mat2 shapes cannot be multiplied" in err


def test_integer_inputs_to_a_float_model(tmp_path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.arange(6 * 64).reshape(6, 64))
    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL)
    argv = ["compute", "--model", f"{net}:make", "--dataset", str(tmp_path / "x.npy"), "--kind", "pntk"]
    err = _fails(capsys, [*argv, "--out", str(tmp_path / "k.zarr")])
    assert "the model cannot run on the inputs of --dataset (a batch of shape [2, 64], torch.int64)" in err


def test_a_model_on_the_meta_device(tmp_path, capsys) -> None:
    net = tmp_path / "net.py"
    net.write_text(
        GOOD_MODEL.replace("torch.manual_seed(0)", "torch.set_default_device('meta')").replace(
            "    return torch", "    model = torch"
        )
        + "    torch.set_default_device('cpu')\n    return model\n"
    )
    err = _fails(capsys, _compute(tmp_path, f"{net}:make"))
    assert "the model's tensors 1.weight, 1.bias, 3.weight, ... are on the meta device" in err
    # Weights fill a meta model: its kernel is that of the weights.
    path = _weights(tmp_path, "safetensors")
    assert main(_compute(tmp_path, f"{net}:make", "--weights", str(path))) == 0
    (tmp_path / "real.py").write_text(GOOD_MODEL)
    model, _ = load_model(f"{tmp_path / 'real.py'}:make", in_shape=(1, 8, 8), num_classes=3)
    load_weights(model, path)
    K = pntk.open(tmp_path / "k.zarr")
    expected = pntk.kernel(model, load_dataset("digits", n=6).x, kind="pntk", batch_size=K.spec.tile)
    np.testing.assert_array_equal(K.numpy(), expected.numpy())


def _weights(tmp_path, kind: str):
    """A weights file for GOOD_MODEL, damaged in the way ``kind`` says."""
    state = {"1.weight": torch.randn(5, 64), "1.bias": torch.randn(5), "3.weight": torch.randn(3, 5)}
    state["3.bias"] = torch.randn(3)
    if kind.endswith("safetensors"):
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save(state, path)
    data = path.read_bytes()
    if kind.startswith("truncated"):
        path.write_bytes(data[: len(data) // 2])
    elif kind.startswith("garbage"):
        path.write_bytes(b"\x00\x01 this is not a weights file \xff" * 20)
    elif kind.startswith("empty"):
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated safetensors", "is not a readable safetensors file"),
        ("garbage safetensors", "is not a readable safetensors file"),
        ("empty safetensors", "is not a readable safetensors file"),
        ("truncated pt", "is not a readable torch file"),
        ("garbage pt", "is not a readable torch file"),
        ("empty pt", "is not a readable torch file"),
    ],
)
def test_damaged_weights_files(tmp_path, capsys, kind, message) -> None:
    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL)
    path = _weights(tmp_path, kind)
    err = _fails(capsys, _compute(tmp_path, f"{net}:make", "--weights", str(path)))
    assert f"{path} {message}" in err and ("save_file" in err or "save it again" in err)
    assert "weights_only" not in err


def test_good_weights_are_recorded_with_their_hash(tmp_path, capsys) -> None:
    import hashlib

    import pntk

    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL)
    path = _weights(tmp_path, "safetensors")
    assert main(_compute(tmp_path, f"{net}:make", "--weights", str(path))) == 0
    weights = pntk.open(tmp_path / "k.zarr").provenance["weights"]
    assert weights == {
        "path": str(path.resolve()),
        "format": "safetensors",
        "sha256": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
    }


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refused_pickle_says_unsafe_and_how_to_convert(tmp_path, capsys) -> None:
    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL)
    torch.save({"1.weight": Evil()}, tmp_path / "w.pt")
    err = _fails(capsys, _compute(tmp_path, f"{net}:make", "--weights", str(tmp_path / "w.pt")))
    assert "unsafe to unpickle" in err and "save_file(model.state_dict(), 'weights.safetensors')" in err
    # Never how to bypass the check.
    assert "weights_only" not in err and "add_safe_globals" not in err and "trust" not in err.lower()


def test_missing_dataset_directory_and_files(tmp_path, capsys) -> None:
    base = ["compute", "--model", "mlp", "--width", "4", "--kind", "pntk", "--out", str(tmp_path / "k.zarr")]
    missing = tmp_path / "cifar"
    err = _fails(capsys, [*base, "--dataset", str(missing), "--dataset-format", "cifar10"])
    assert f"no dataset directory {missing}" in err
    (tmp_path / "empty").mkdir()
    err = _fails(capsys, [*base, "--dataset", str(tmp_path / "empty"), "--dataset-format", "cifar10"])
    assert str(tmp_path / "empty") in err and "data_batch_1.bin" in err
    err = _fails(capsys, [*base, "--dataset", str(tmp_path / "x.npy")])
    assert f"no input file {tmp_path / 'x.npy'}" in err
    err = _fails(capsys, [*base, "--dataset", "imagenet"])
    assert "unknown dataset 'imagenet'; valid names are digits" in err
    assert not (tmp_path / "k.zarr").exists()


def test_unexpected_errors_give_one_line_and_a_way_to_the_traceback(tmp_path, capsys, monkeypatch) -> None:
    net = tmp_path / "net.py"
    net.write_text(GOOD_MODEL)

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr("pntk.cli.compute.compute", broken)
    argv = _compute(tmp_path, f"{net}:make")
    err = _fails(capsys, argv, status=1)
    assert "RuntimeError: something inside broke" in err and "PNTK_TRACEBACK=1" in err
    monkeypatch.setenv("PNTK_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(argv)


def test_info_on_what_is_not_a_store(tmp_path, capsys) -> None:
    err = _fails(capsys, ["info", str(tmp_path / "nothing.zarr")])
    assert "is not a kernel store (no zarr.json there)" in err


def test_info_into_a_closed_pipe_is_quiet(tmp_path) -> None:
    """`pntk info k.zarr | head`: the reader goes away; no traceback, no 'Exception ignored' noise."""
    out = tmp_path / "k.zarr"
    assert (
        main(["compute", "--model", "mlp", "--width", "4", "--dataset", "digits", "--kind", "pntk", "--out", str(out)])
        == 0
    )
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before pntk writes a byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pntk", "info", str(out), "--json"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(writer)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_a_store_another_process_writes_to(tmp_path, capsys) -> None:
    from pntk.store import StoreLock

    out = tmp_path / "k.zarr"
    lock = StoreLock(out)  # as another writer would hold it
    try:
        argv = ["compute", "--model", "mlp", "--width", "4", "--dataset", "digits", "--num-samples", "6"]
        err = _fails(capsys, [*argv, "--kind", "pntk", "--out", str(out)], status=3)
    finally:
        lock.release()
    assert f"is writing to {out}; wait for it to finish or stop it" in err
