"""``pntk sweep``: one width sweep at initialisation, eNTK against pNTK, written as JSON and a figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments.figures import width_sweep_figure
from ..experiments.reproduce import default_device
from ..experiments.results import write_json
from ..experiments.setup import analysis_threads, printing_log
from ..experiments.width_sweep import WidthSweep, width_sweep


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 16,32,64, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="compare eNTK and pNTK at initialisation across widths and seeds",
        description="For each width and seed, compute the eNTK Θ and the pNTK K of a zoo model on N inputs and "
        "compare them (relative Frobenius error and its parts, λ_max, λ_min, κ); write the results as JSON and "
        "a figure with fitted log-log slopes against width.",
        epilog="example: pntk sweep --dataset mnist1d --model mlp --widths 16,64,256,1024 --seeds 0,1,2 --n 64",
    )
    p.add_argument("--dataset", required=True, help="digits, mnist1d, cifar10, ... (file-based ones need --data-root)")
    p.add_argument("--model", required=True, help="mlp, convnet, resnet18 or wrn")
    p.add_argument("--widths", type=_ints, required=True, help="ascending widths, e.g. 16,32,64")
    p.add_argument("--seeds", type=_ints, default=(0, 1, 2), help="initialisation seeds (default: 0,1,2)")
    p.add_argument("--n", type=int, default=64, help="number of inputs N (default: 64)")
    p.add_argument("--depth", type=int, help="the model's depth (default: the model's)")
    p.add_argument("--parametrization", default="standard", choices=("standard", "ntk"))
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
        seeds=args.seeds,
        N=args.n,
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
    fit = result["fits"]["relative_error"]
    if fit is not None:
        print(f"‖Θ − K⊗I‖/‖Θ‖ ∝ width^({fit['slope']:.3f} ± {fit['stderr']:.3f})")
    print(f"wrote {path} and {png}")
    return 0
