"""`pntk info` on a store made by `pntk compute`: the dataset, rows, labels, model, weights hash and command."""

from __future__ import annotations

import hashlib
import json
import shlex

import numpy as np
import torch
from safetensors.torch import save_file

import pntk
from pntk.cli import main
from pntk.data import load_dataset

MODEL = """
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
"""


def test_info_prints_where_the_store_came_from(tmp_path, capsys) -> None:
    (tmp_path / "net.py").write_text(MODEL)
    weights = tmp_path / "w.safetensors"
    torch.manual_seed(1)
    save_file({"1.weight": torch.randn(5, 64), "1.bias": torch.randn(5), "3.weight": torch.randn(3, 5)}, str(weights))
    # The file lacks 3.bias: refused. Then a complete one.
    out = tmp_path / "k.zarr"
    argv = ["compute", "--model", f"{tmp_path / 'net.py'}:make", "--weights", str(weights), "--dataset", "digits"]
    argv += ["--split", "test", "--num-samples", "12", "--data-seed", "4", "--kind", "trace", "--out", str(out)]
    assert main(argv) == 2
    assert "do not fit the model" in capsys.readouterr().err
    save_file(
        {
            "1.weight": torch.randn(5, 64),
            "1.bias": torch.randn(5),
            "3.weight": torch.randn(3, 5),
            "3.bias": torch.ones(3),
        },
        str(weights),
    )
    assert main(argv) == 0
    capsys.readouterr()

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    drawn = load_dataset("digits", split="test", n=12, seed=4)
    sha = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    net_sha = "sha256:" + hashlib.sha256((tmp_path / "net.py").read_bytes()).hexdigest()
    first = ", ".join(map(str, drawn.indices[:8].tolist()))
    for expected in [
        "rows        digits (built in), split test, stratified subset of 12 (data seed 4)",
        f"indices   [{first}, …] (12 rows of the split)",
        f"labels    [{', '.join(map(str, drawn.y[:8].tolist()))}, …]",
        "normalise (x/16 − mean)/std per channel",
        f"model       {tmp_path / 'net.py'}:make {net_sha}",
        f"weights     {weights} {sha}",
        "seeds       model 0, data 4",
        f"command     {shlex.join(['pntk', *argv])}",
    ]:
        assert expected in text, f"{expected!r} not in\n{text}"

    assert main(["info", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["provenance"]
    assert record["dataset"]["indices"] == drawn.indices.tolist() and record["dataset"]["labels"] == drawn.y.tolist()
    assert record["weights"]["sha256"] == sha and record["model"]["factory"] == "make"
    np.testing.assert_allclose(
        record["dataset"]["normalization"]["mean"], drawn.normalization.mean, rtol=0, atol=0
    )  # JSON keeps floats exactly


def test_rerunning_resumes_and_notes_the_command(tmp_path, capsys) -> None:
    out = tmp_path / "k.zarr"
    argv = ["compute", "--model", "mlp", "--width", "4", "--dataset", "digits", "--num-samples", "10"]
    argv += ["--kind", "pntk", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--progress"]) == 0
    record = pntk.open(out).provenance
    assert record["command"] == ["pntk", *argv]
    assert [run["command"] for run in record["resumed"]] == [["pntk", *argv, "--progress"]]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert f"resumed     {record['resumed'][0]['time']}: {shlex.join(['pntk', *argv, '--progress'])}" in (
        capsys.readouterr().out
    )


def test_info_of_a_store_made_without_provenance(tmp_path, capsys) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    pntk.compute(net, torch.randn(4, 3), kind="pntk", out=tmp_path / "k.zarr")
    assert main(["info", str(tmp_path / "k.zarr")]) == 0
    assert "provenance: none recorded" in capsys.readouterr().out


def test_tensor_files_are_recorded_with_their_hash_rows_and_labels(tmp_path, capsys) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 6, generator=g), torch.arange(9) % 3
    np.save(tmp_path / "x.npy", x.numpy())
    torch.save((x[:5], y[:5]), tmp_path / "pair.pt")
    out = tmp_path / "k.zarr"
    argv = ["compute", "--model", "mlp", "--width", "4", "--dataset", str(tmp_path / "x.npy"), "--num-samples", "7"]
    argv += ["--dataset2", str(tmp_path / "pair.pt"), "--num-samples2", "4", "--kind", "pntk", "--out", str(out)]
    assert main(argv) == 0
    record = pntk.open(out).provenance
    sha = "sha256:" + hashlib.sha256((tmp_path / "x.npy").read_bytes()).hexdigest()
    assert record["dataset"] == {
        "source": "file",
        "path": str(tmp_path / "x.npy"),
        "format": "npy",
        "sha256": sha,
        "indices": list(range(7)),
        "labels": None,
        "shape": [7, 6],
    }
    assert record["dataset2"]["labels"] == [0, 1, 2, 0] and record["dataset2"]["format"] == "torch"
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"rows        file {tmp_path / 'x.npy'} (npy) {sha}" in text and "labels    [0, 1, 2, 0]" in text
