"""``pntk reproduce``: the paper's experiments in miniature, with JSON, figures and a report of its claims."""

from __future__ import annotations

import argparse

from ..experiments.claims import Verdict
from ..experiments.presets import PRESETS
from ..experiments.progress import printing_log
from ..experiments.report import claims_table, update_readme
from ..experiments.reproduce import reproduce
from ..experiments.runtime import default_device


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments and write JSON, figures and report.md",
        description="Run the width sweep, training, kernel regression and timing experiments of a preset, and "
        "write their JSON, PNG figures and a report.md that states each claim of the paper, the criterion that "
        "judges it, the measured interval and the verdict.",
        epilog="presets: " + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
    )
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--preset", default="demo", choices=tuple(PRESETS), help="which experiments (default: demo)")
    p.add_argument("--data-root", help="folder of file-based datasets, e.g. CIFAR-10's binary files for --preset paper")
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, ... (default here: {default_device()})")
    p.add_argument(
        "--readme",
        metavar="README",
        help="run nothing: write the claims table of OUT/summary.json into README between its table markers",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.readme:
        path = update_readme(f"{args.out}/summary.json", args.readme)
        print(f"wrote the claims table of {args.out}/summary.json into {path}")
        return 0
    summary = reproduce(args.out, args.preset, data_root=args.data_root, device=args.device, log=printing_log())
    items = summary.claims
    print()
    print(claims_table(items))
    counts = ", ".join(f"{sum(c.verdict is v for c in items)} {v.value}" for v in Verdict)
    print(
        f"\n{counts}; {summary.seconds / 60:.1f} min wall clock, {summary.cpu_seconds / 60:.1f} CPU-minutes. "
        f"Report: {summary.report}"
    )
    return 0
