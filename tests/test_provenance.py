"""Self-describing stores: ``compute(provenance=...)`` is kept in the store, resuming keeps the first record."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

import pntk
from pntk.store import KernelStore

# The tile edge of a store: compute's ``tile=`` is being renamed ``batch_size=``; accept either while both exist.
TILE = "batch_size" if "batch_size" in inspect.signature(pntk.compute).parameters else "tile"


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()


def test_provenance_round_trips_through_the_store(tmp_path) -> None:
    record = {"dataset": {"name": "toy", "indices": [0, 2, 5]}, "seeds": {"model": 0, "data": None}, "v": 1.5}
    K = pntk.compute(_net(), torch.randn(6, 3), kind="pntk", out=tmp_path / "k.zarr", provenance=record, **{TILE: 3})
    assert K.provenance == record
    assert pntk.open(tmp_path / "k.zarr").provenance == record
    # Any Zarr reader sees it as a plain attribute.
    attrs = json.loads((tmp_path / "k.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["provenance"] == record


def test_no_provenance_reads_as_none(tmp_path) -> None:
    assert pntk.compute(_net(), torch.randn(4, 3), kind="pntk", out=tmp_path / "k.zarr").provenance is None


def test_resuming_keeps_the_first_record_and_notes_the_command(tmp_path, monkeypatch) -> None:
    net, x, out = _net(), torch.randn(9, 3), tmp_path / "k.zarr"
    record, calls = KernelStore._record, []

    def stop_after_two(self, tile, entry):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(tile)
        record(self, tile, entry)

    monkeypatch.setattr(KernelStore, "_record", stop_after_two)
    first = {"command": ["pntk", "compute", "first"], "dataset": "a"}
    with pytest.raises(KeyboardInterrupt):
        pntk.compute(net, x, kind="trace", out=out, provenance=first, **{TILE: 3})
    monkeypatch.setattr(KernelStore, "_record", record)
    assert pntk.open(out).provenance == first and not pntk.open(out).complete

    second = {"command": ["pntk", "compute", "second"], "dataset": "b"}
    K = pntk.compute(net, x, kind="trace", out=out, provenance=second, **{TILE: 3})
    assert K.complete
    assert {k: v for k, v in K.provenance.items() if k != "resumed"} == first
    assert [run["command"] for run in K.provenance["resumed"]] == [second["command"]]
    np.testing.assert_array_equal(K.numpy(), pntk.trace_ntk(net, x, batch_size=3).numpy())


def test_a_store_without_a_record_takes_the_resuming_runs(tmp_path) -> None:
    net, x, out = _net(), torch.randn(5, 3), tmp_path / "k.zarr"
    pntk.compute(net, x, kind="pntk", out=out)
    assert pntk.compute(net, x, kind="pntk", out=out, provenance={"dataset": "x"}).provenance == {"dataset": "x"}


@pytest.mark.parametrize("bad", [{"x": torch.zeros(2)}, {"x": np.float32(1.0)}, {"x": float("nan")}])
def test_values_json_cannot_hold_are_refused_before_anything_is_written(tmp_path, bad) -> None:
    with pytest.raises(TypeError, match="provenance must hold only JSON values"):
        pntk.compute(_net(), torch.randn(4, 3), kind="pntk", out=tmp_path / "k.zarr", provenance=bad)
    assert not (tmp_path / "k.zarr").exists()


def test_a_cli_store_and_its_provenance_alone_rebuild_the_targets_for_regression(tmp_path) -> None:
    """Acceptance: from what ``pntk compute`` wrote, and nothing known of how the CLI works, rebuild the
    training and test targets and run kernel regression."""
    from pntk.analysis import kernel_regression
    from pntk.cli import main
    from pntk.data import Normalization, load_dataset, one_hot_targets, read_digits
    from pntk.models import build_model
    from pntk.sources import fingerprint, row_source

    train, test = tmp_path / "train.zarr", tmp_path / "test.zarr"
    common = ["--model", "mlp", "--width", "64", "--kind", "pntk", "--dtype", "float64", "--seed", "1"]
    common += ["--data-seed", "3", "--dataset", "digits"]
    assert main(["compute", *common, "--num-samples", "300", "--out", str(train)]) == 0
    assert (
        main(
            ["compute", *common, "--split", "test", "--num-samples", "100", "--dataset2", "digits", "--split2", "train"]
            + ["--num-samples2", "300", "--out", str(test)]
        )
        == 0
    )

    # From here on only the stores and the public loaders.
    K_train_train, K_test_train = pntk.open(train), pntk.open(test)
    train_record, test_record = K_train_train.provenance["dataset"], K_test_train.provenance["dataset"]
    assert K_test_train.provenance["dataset2"]["indices"] == train_record["indices"]  # columns = training rows

    def rebuild(record: dict, data_fingerprint: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels a record names, checked against the store's fingerprint of its inputs."""
        full = load_dataset(record["name"], root=record["path"], split=record["split"])
        rows = torch.tensor(record["indices"])
        x, y = full.x[rows], full.y[rows]
        assert y.tolist() == record["labels"]
        assert fingerprint(row_source(x, "x")) == data_fingerprint
        # The recorded normalisation, applied to the raw values, gives the same inputs bit for bit.
        raw, _ = read_digits(record["split"])
        assert torch.equal(Normalization(**record["normalization"]).apply(raw[rows.numpy()]), x)
        return x, y

    x_train, y_train = rebuild(train_record, K_train_train.spec.data1)
    x_test, y_test = rebuild(test_record, K_test_train.spec.data1)
    assert rebuild(K_test_train.provenance["dataset2"], K_test_train.spec.data2)[1].tolist() == y_train.tolist()

    # The targets equal those of the subset the CLI drew.
    drawn = load_dataset("digits", n=300, seed=3)
    assert torch.equal(y_train, drawn.y) and torch.equal(x_train, drawn.x)
    Y_train = one_hot_targets(y_train, train_record["num_classes"], center=True, dtype=torch.float64)

    # The model record rebuilds the model: a block of the kernel recomputed from it matches the store.
    spec = dict(K_train_train.provenance["model"])
    model = build_model(spec.pop("zoo"), **spec).eval()
    block = pntk.kernel(model, x_train[:7], x_train[:7], kind="pntk", dtype=torch.float64).numpy()
    np.testing.assert_allclose(K_train_train[:7, :7], block, rtol=1e-10, atol=1e-12)

    predictions = kernel_regression(K_train_train.numpy(), K_test_train.numpy(), Y_train.numpy())
    accuracy = float((predictions.argmax(1) == y_test.numpy()).mean())
    assert predictions.shape == (100, 10) and accuracy > 0.8, accuracy
