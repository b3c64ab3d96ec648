"""``pntk reproduce``: the paper's experiments in miniature, with JSON, figures and a report of its claims."""

from __future__ import annotations

import argparse

from ..experiments.presets import PRESETS
from ..experiments.report import claims_table
from ..experiments.reproduce import default_device, reproduce
from ..experiments.setup import printing_log


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments and write JSON, figures and report.md",
        description="Run the width sweep, training trajectory, kernel regression and timing experiments of a "
        "preset, and write their JSON, PNG figures and a report.md that judges each claim of the paper.",
        epilog="presets: " + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
    )
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--preset", default="demo", choices=tuple(PRESETS), help="which experiments (default: demo)")
    p.add_argument("--data-root", help="folder of file-based datasets, e.g. CIFAR-10's binary files for --preset paper")
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, ... (default here: {default_device()})")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    summary = reproduce(args.out, args.preset, data_root=args.data_root, device=args.device, log=printing_log())
    items = summary["claims"]
    print()
    print(claims_table(items))
    held = sum(c["holds"] is True for c in items)
    judged = sum(c["holds"] is not None for c in items)
    print(f"\n{held} of {judged} claims hold; {summary['seconds'] / 60:.1f} min in all. Report: {summary['report']}")
    return 0
