"""``pntk info``: what a kernel store holds, where it came from, and how far it got."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from typing import Any

from ..store import open as open_store
from ..tiling import format_bytes

#: Indices and labels shown before ``…`` in the table (``--json`` gives them all).
_SHOWN = 8


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a kernel or feature store: provenance, completeness, size on disk",
        description="Describe a kernel store written by `pntk compute`: kind and shape, completeness, tiles, "
        "engine, fingerprints, versions, size on disk, and where its inputs and model came from (dataset, "
        "split, rows, labels, normalisation, model, weights and their sha256, seeds, command line).",
    )
    p.add_argument("store", help="the store's directory, e.g. k.zarr")
    p.add_argument("--json", action="store_true", help="print one JSON object (every index and label) instead")
    p.set_defaults(run=run)


def run(args) -> int:
    store = open_store(args.store)
    attrs, spec = store.attrs, store.spec
    total, missing = len(spec.plan()), len(store.missing_tiles)
    summary = {
        "path": str(store.path),
        **attrs,
        "shape": list(store.shape),
        "tiles": total,
        "missing_tiles": missing,
        "complete": missing == 0,
        "nbytes": store.nbytes,
        "size_on_disk": store.size_on_disk(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if store.spec.FORMAT.startswith("pntk-feature-store/"):
        rows = [
            ("features", f"{spec.kind.value} {list(store.shape)} {spec.dtype}"),
            ("complete", "yes" if missing == 0 else f"no: {missing} of {total} blocks missing"),
            ("blocks", f"{total} of {spec.tile} rows"),
            ("map", f"{spec.method}, {spec.distribution}, seed {spec.seed}, block {spec.block[0]} × {spec.block[1]}"),
            ("model", spec.model),
            ("data", spec.data),
            ("versions", ", ".join(f"{k} {v}" for k, v in attrs["versions"].items())),
            ("created", attrs["created"]),
            ("on disk", f"{format_bytes(summary['size_on_disk'])} (array {format_bytes(store.nbytes)})"),
        ]
        print(f"{store.path}: pntk feature store")
        _table(rows)
        record = store.provenance
        if record:
            print("provenance")
            _table(provenance_rows(record))
        return 0
    layout = "symmetric: upper tiles computed, mirrored" if spec.symmetric else "rectangular"
    rows = [
        ("kind", f"{spec.kind.value} {list(store.shape)} {spec.dtype}"),
        ("complete", "yes" if missing == 0 else f"no: {missing} of {total} tiles missing"),
        ("tiles", f"{total} of edge {spec.tile} ({layout})"),
        ("engine", spec.engine),
        ("params", spec.params or "not recorded (all trainable parameters unless chosen otherwise)"),
        ("output", spec.output or "the model's output"),
        ("model", spec.model),
        ("data1", spec.data1),
        ("data2", spec.data2 or "same as data1"),
        ("versions", ", ".join(f"{k} {v}" for k, v in attrs["versions"].items())),
        ("created", attrs["created"]),
        ("on disk", f"{format_bytes(summary['size_on_disk'])} (array {format_bytes(store.nbytes)})"),
    ]
    print(f"{store.path}: pntk kernel store")
    _table(rows)
    record = store.provenance
    print("provenance" if record else "provenance: none recorded (made without one: pntk.compute(provenance=...))")
    if record:
        _table(provenance_rows(record))
    return 0


def provenance_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The table ``pntk info`` prints for a provenance record made by ``pntk compute`` (other keys as JSON)."""
    rows: list[tuple[str, str]] = []
    shown = {"dataset", "dataset2", "model", "weights", "seeds", "command", "config", "resumed"}
    for key in ("dataset", "dataset2"):
        if record.get(key):
            rows += _data_rows("rows" if key == "dataset" else "columns", record[key])
    if "model" in record:
        rows.append(("model", _model(record["model"])))
    if "weights" in record:
        weights = record["weights"]
        rows.append(("weights", "none (as initialised)" if not weights else f"{weights['path']} {weights['sha256']}"))
    if "seeds" in record:
        rows.append(("seeds", ", ".join(f"{k} {v}" for k, v in record["seeds"].items())))
    if "command" in record:
        rows.append(("command", shlex.join(record["command"])))
    if record.get("config"):
        rows.append(("config", f"{record['config']['path']}: {shlex.join(record['config']['flags'])}"))
    for run in record.get("resumed", []):
        rows.append(("resumed", f"{run['time']}: {shlex.join(run['command'])}" if "command" in run else run["time"]))
    rows += [(key, _value(value)) for key, value in record.items() if key not in shown]
    return rows


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    return json.dumps(value)


def _data_rows(axis: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    indices, labels = data.get("indices"), data.get("labels")
    if data.get("source") == "file":
        rows = [(axis, f"file {data['path']} ({data['format']}) {data['sha256']}")]
    else:
        where = f" from {data['path']} ({data['format']})" if data.get("path") else " (built in)"
        subset = (
            f", stratified subset of {data['num_samples']} (data seed {data['data_seed']})"
            if data.get("num_samples")
            else ", all rows"
        )
        rows = [(axis, f"{data['name']}{where}, split {data['split']}{subset}")]
    if indices is not None:
        rows.append(("  indices", f"{_some(indices)} ({len(indices)} rows of the split)"))
    if labels is not None:
        counts = Counter(labels)
        rows.append(("  labels", f"{_some(labels)}; per class {dict(sorted(counts.items()))}"))
    norm = data.get("normalization")
    if norm:
        text = f"x/{norm['scale']:g}"
        if norm.get("mean") is not None:
            mean = ", ".join(f"{v:.4g}" for v in norm["mean"])
            std = ", ".join(f"{v:.4g}" for v in norm["std"])
            text = f"({text} − mean)/std per channel, mean [{mean}], std [{std}] (of the training split)"
        rows.append(("  normalise", text))
    if data.get("shape"):
        rows.append(("  shape", str(data["shape"])))
    return rows


def _model(model: dict[str, Any]) -> str:
    if "zoo" in model:
        options = ", ".join(f"{k} {v}" for k, v in model.items() if k != "zoo")
        return f"zoo {model['zoo']}: {options}"
    if "file" in model:
        return f"{model['file']}:{model['factory']} {model['sha256']}"
    return json.dumps(model)


def _some(values: list[Any]) -> str:
    head = ", ".join(map(str, values[:_SHOWN]))
    return f"[{head}{', …' if len(values) > _SHOWN else ''}]"


def _table(rows: list[tuple[str, str]]) -> None:
    for name, value in rows:
        print(f"  {name:<11} {value}")
