"""`pntk verify`: every finished tile checked, damage listed by tile, exit status 1; --repair forgets it."""

import json

from pntk.cli import main
from pntk.compute import compute
from store_worker import make_problem


def test_verify_lists_damage_and_repair_forgets_it(tmp_path, capsys):
    model, x = make_problem(12)
    store = compute(model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=5)
    assert main(["verify", str(store.path)]) == 0
    assert "6 finished tiles of 6 checked, intact" in capsys.readouterr().out

    chunk = store.path / store.array.metadata.encode_chunk_key((1, 2))
    data = bytearray(chunk.read_bytes())
    data[3] ^= 1
    chunk.write_bytes(bytes(data))
    (store.path / store.array.metadata.encode_chunk_key((0, 0))).unlink()
    assert main(["verify", str(store.path)]) == 1
    out = capsys.readouterr().out
    assert "2 damaged" in out and "tile (0, 0) (chunk c/0/0): missing" in out
    assert "tile (1, 2) (chunk c/1/2): damaged (checksum mismatch)" in out and "rerun the same `pntk compute`" in out

    assert main(["verify", str(store.path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and {(d["i"], d["j"]) for d in report["damage"]} == {(0, 0), (1, 2)}

    assert main(["verify", str(store.path), "--repair"]) == 1
    assert "they are forgotten" in capsys.readouterr().out
    assert main(["verify", str(store.path)]) == 0
    assert "4 finished tiles of 6 checked, intact" in capsys.readouterr().out


def test_verify_of_something_else_is_an_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert "pntk verify: error:" in capsys.readouterr().err
