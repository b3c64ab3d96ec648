"""``pntk sweep``: one width sweep at initialisation, eNTK against pNTK, written as JSON and a figure."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..experiments.claims import sweep_claims
from ..experiments.figures import width_sweep_figure
from ..experiments.progress import printing_log
from ..experiments.results import write_json
from ..experiments.runtime import analysis_threads, default_device
from ..experiments.width_sweep import WidthSweep, width_sweep
from .flags import positive_int, seed


def _list_of(item: Callable[[str], int], example: str) -> Callable[[str], tuple[int, ...]]:
    """An ``argparse`` type: comma-separated values, each checked by ``item`` (a positive integer, a seed)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(item(v) for v in text.split(","))
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers like {example}, got {text!r} ({err})"
            ) from None

    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="compare eNTK and pNTK at initialisation across widths, seeds and input sets",
        description="For each width, model seed and input set, compute the eNTK Θ and the pNTK K of a zoo model "
        "on N inputs and compare them (relative Frobenius error and its parts, λ_max, λ_min, κ); write the "
        "results as JSON and a figure, and print the fitted rates with bootstrap intervals and their verdicts.",
        epilog="example: pntk sweep --dataset mnist1d --model mlp --widths 64,256,1024 --seed 0,1,2 "
        "--data-seed 0,1 --num-samples 50",
    )
    p.add_argument("--dataset", required=True, help="digits, mnist1d, cifar10, ... (file-based ones need --data-root)")
    p.add_argument("--model", required=True, help="mlp, convnet, resnet18 or wrn")
    widths, seeds = _list_of(positive_int, "16,32,64"), _list_of(seed, "0,1,2")
    p.add_argument("--widths", type=widths, required=True, help="ascending widths, e.g. 16,32,64")
    p.add_argument("--seed", type=seeds, default=(0, 1, 2), help="model initialisation seeds (default: 0,1,2)")
    p.add_argument("--data-seed", type=seeds, default=(0, 1), help="seeds of the input sets (default: 0,1)")
    p.add_argument(
        "--num-samples", type=positive_int, default=64, help="number of inputs N per input set (default: 64)"
    )
    p.add_argument("--depth", type=positive_int, help="the model's depth (default: the model's)")
    p.add_argument(
        "--parametrization",
        default="standard",
        choices=("standard", "ntk", "torch"),
        help="standard (He-scaled), ntk, or torch (PyTorch's default initialisation)",
    )
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="kernel dtype (default: float64)")
    p.add_argument("--data-root", help="folder of file-based datasets")
    p.add_argument("--device", default=None, help=f"cpu, cuda, ... (default here: {default_device()})")
    p.add_argument("--out", default="sweep", help="output folder (default: sweep)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if list(args.widths) != sorted(set(args.widths)):
        raise ValueError(f"--widths must be distinct and ascending, got {','.join(map(str, args.widths))}")
    spec = WidthSweep(
        args.dataset,
        args.model,
        widths=args.widths,
        seeds=args.seed,
        data_seeds=args.data_seed,
        N=args.num_samples,
        depth=args.depth,
        parametrization=args.parametrization,
        dtype=args.dtype,
    )
    device = args.device or default_device()
    with analysis_threads(device):
        result = width_sweep(spec, device=device, data_root=args.data_root, log=printing_log())
    out = Path(args.out)
    path = write_json(out / f"{spec.name}.json", result)
    png = width_sweep_figure(result, out / f"{spec.name}.png")
    for claim in sweep_claims(result, spec.name):
        print(f"{claim.key}: {claim.measured} — {claim.verdict.value} ({claim.detail})")
    print(f"wrote {path} and {png}")
    return 0
