"""Self-describing stores: ``compute(provenance=...)`` is kept in the store, resuming keeps the first record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pntk
from pntk.store import KernelStore


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()


def test_provenance_round_trips_through_the_store(tmp_path) -> None:
    record = {"dataset": {"name": "toy", "indices": [0, 2, 5]}, "seeds": {"model": 0, "data": None}, "v": 1.5}
    K = pntk.compute(_net(), torch.randn(6, 3), kind="pntk", out=tmp_path / "k.zarr", tile=3, provenance=record)
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
        pntk.compute(net, x, kind="trace", out=out, tile=3, provenance=first)
    monkeypatch.setattr(KernelStore, "_record", record)
    assert pntk.open(out).provenance == first and not pntk.open(out).complete

    second = {"command": ["pntk", "compute", "second"], "dataset": "b"}
    K = pntk.compute(net, x, kind="trace", out=out, tile=3, provenance=second)
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
