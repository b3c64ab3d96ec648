"""``pntk verify``: check every finished tile of a kernel store against its checksums."""

from __future__ import annotations

import json
import sys

from ..errors import PntkError
from ..store import StoreLock, store_type


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a kernel or feature store's tiles against their checksums",
        description="Read every finished tile of a kernel store written by `pntk compute` (or every block of rows "
        "of a feature store written by `pntk features --out`) and check it against "
        "the checksums recorded when it was written. Damaged, truncated or missing chunks are listed by tile; "
        "rerunning the same `pntk compute` computes them again. Exit status: 0 when every finished tile is "
        "intact, 1 when some are damaged, 2 on error.",
    )
    p.add_argument("store", help="the store's directory, e.g. k.zarr")
    p.add_argument(
        "--repair",
        action="store_true",
        help="also forget the damaged tiles and rebuild a lost ledger from the chunks that verify, so that "
        "`pntk info` and readers see the truth (needs write access; the next `pntk compute` does this too)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        if args.repair:
            lock = StoreLock(args.store)
            try:
                store = store_type(args.store)(args.store, writable=True)
                store.discard_partial_writes()
                report = store.repair()
            finally:
                lock.release()
        else:
            store = store_type(args.store)(args.store)
            report = store.verify()
    except (PntkError, FileNotFoundError, ValueError) as err:
        print(f"pntk verify: error: {err}", file=sys.stderr)
        return 2
    total = len(store.spec.plan())
    if args.json:
        summary = {
            "path": str(store.path),
            "ok": report.ok,
            "tiles": total,
            "checked": report.checked,
            "missing": report.missing,
            "rebuilt": report.rebuilt,
            "damage": [{"i": d.i, "j": d.j, "chunk": d.chunk, "problem": d.problem} for d in report.damage],
        }
        print(json.dumps(summary, indent=2))
        return 0 if report.ok else 1
    state = "intact" if report.ok else f"{len(report.damaged_tiles)} damaged"
    print(f"{store.path}: {report.checked} finished tiles of {total} checked, {state}")
    for damage in report.damage:
        print(f"  {damage}")
    if report.rebuilt:
        print(f"  {report.rebuilt} ledger entries rebuilt from chunks that verify")
    if not report.ok:
        fix = "they are forgotten; " if args.repair else ""
        print(f"  {fix}rerun {store.RERUN} to compute them again")
    return 0 if report.ok else 1
