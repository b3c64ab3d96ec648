"""``pntk info``: what a kernel store holds, where it came from, and how far it got."""

from __future__ import annotations

import json

from ..store import open as open_store
from ..tiling import format_bytes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a kernel store: provenance, completeness, size on disk",
        description="Describe a kernel store written by `pntk compute`: kind and shape, provenance (engine, "
        "tile, fingerprints, versions), finished and missing tiles, size on disk.",
    )
    p.add_argument("store", help="the store's directory, e.g. k.zarr")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
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
    layout = "symmetric: upper tiles computed, mirrored" if spec.symmetric else "rectangular"
    rows = [
        ("kind", f"{spec.kind.value} {list(store.shape)} {spec.dtype}"),
        ("complete", "yes" if missing == 0 else f"no: {missing} of {total} tiles missing"),
        ("tiles", f"{total} of edge {spec.tile} ({layout})"),
        ("engine", spec.engine),
        ("model", spec.model),
        ("data1", spec.data1),
        ("data2", spec.data2 or "same as data1"),
        ("versions", ", ".join(f"{k} {v}" for k, v in attrs["versions"].items())),
        ("created", attrs["created"]),
        ("on disk", f"{format_bytes(summary['size_on_disk'])} (array {format_bytes(store.nbytes)})"),
    ]
    print(f"{store.path}: pntk kernel store")
    for name, value in rows:
        print(f"  {name:<9} {value}")
    return 0
