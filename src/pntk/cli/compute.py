"""``pntk compute``: a kernel larger than memory into a resumable Zarr store, on one process or under torchrun."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ..compute import compute
from ..store import StoreLockedError
from .resolve import load_inputs, load_model, load_weights

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

_EPILOG = """\
examples:
  pntk compute --model mlp --width 512 --dataset digits --kind pntk --out k.zarr --memory 4GB
  pntk compute --model net.py:make --weights net.safetensors --dataset x.npy --kind entk --out th.zarr
  torchrun --nproc-per-node 4 -m pntk compute --model mlp --width 512 --dataset cifar-dir \\
      --dataset-format cifar10 --num-samples 20000 --kind pntk --out k.zarr --memory 8GB

Rerun the same command after an interruption to resume; --overwrite starts again.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compute",
        help="compute a kernel tile by tile into a resumable Zarr store (torchrun-aware)",
        description="Compute an eNTK, trace NTK or pseudo-NTK into a Zarr store on disk, tile by tile under a "
        "memory budget. Rerunning the same command resumes; under torchrun the ranks share the tiles.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="a zoo name (mlp, convnet, resnet18, wrn) or path/to/file.py:factory")
    m.add_argument("--width", type=int, help="zoo models: width (hidden units, channels, widen factor)")
    m.add_argument("--depth", type=int, help="zoo models: depth (default: the model's)")
    m.add_argument("--num-classes", type=int, help="zoo models: outputs O (default: the dataset's, else 10)")
    m.add_argument("--parametrization", default="standard", choices=("standard", "ntk"), help="zoo models")
    m.add_argument("--seed", type=int, default=0, help="zoo models: initialisation seed; datasets: subset seed")
    m.add_argument("--weights", help="a .safetensors file or a torch checkpoint (read with weights_only=True)")
    m.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda:LOCAL_RANK if available)")
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        required=True,
        help="a built-in name (digits, mnist1d, ...), a directory of "
        "standard files (with --dataset-format), or a .npy/.pt file of inputs",
    )
    d.add_argument("--dataset-format", help="what a dataset directory holds: cifar10, cifar100, mnist, fashion-mnist")
    d.add_argument("--split", default="train", help="train, test or all (default: train)")
    # torchrun's own parser rejects "--n" anywhere on its command line as an ambiguous abbreviation of its
    # options, hence the long name.
    d.add_argument(
        "--num-samples",
        "--n",
        dest="n",
        type=int,
        metavar="N",
        help="use N samples: a stratified subset, or the first N rows of a file (--n for short, "
        "but not under torchrun, which takes it for one of its own options)",
    )
    d.add_argument("--dataset2", help="columns from another dataset (default: the same, symmetric kernel)")
    d.add_argument("--split2", help="split of --dataset2 (default: --split)")
    d.add_argument(
        "--num-samples2",
        "--n2",
        dest="n2",
        type=int,
        metavar="N2",
        help="samples of --dataset2 (default: --num-samples)",
    )
    k = p.add_argument_group("kernel and store")
    k.add_argument("--kind", required=True, choices=("entk", "trace", "pntk"))
    k.add_argument("--out", required=True, help="the store's directory, e.g. k.zarr")
    k.add_argument("--memory", help="memory budget for the tile work, e.g. 512MB, 4GB, 2GiB (default: 4GB)")
    k.add_argument("--tile", type=int, help="tile (and chunk) edge instead of one planned from --memory")
    k.add_argument("--engine", default="auto", help="auto, jacobian, vp, structured (default: auto)")
    k.add_argument("--dtype", choices=tuple(_DTYPES), help="compute and store in this dtype (default: the model's)")
    k.add_argument("--overwrite", action="store_true", help="replace whatever store is at --out")
    k.add_argument("--no-resume", action="store_true", help="refuse an existing store instead of finishing it")
    k.add_argument("--log-json", metavar="FILE", help="append one JSON line per finished tile to FILE")
    k.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    x1, classes = load_inputs(args.dataset, split=args.split, n=args.n, fmt=args.dataset_format, seed=args.seed)
    x2 = None
    if args.dataset2 is not None:
        x2, _ = load_inputs(
            args.dataset2,
            split=args.split2 or args.split,
            n=args.n2 if args.n2 is not None else args.n,
            fmt=args.dataset_format,
            seed=args.seed,
        )
    model = load_model(
        args.model,
        in_shape=tuple(x1.shape[1:]),
        num_classes=args.num_classes or classes or 10,
        width=args.width,
        depth=args.depth,
        parametrization=args.parametrization,
        seed=args.seed,
    )
    if args.weights:
        load_weights(model, args.weights)
    model.to(_device(args.device))
    try:
        store = compute(
            model,
            x1,
            x2,
            kind=args.kind,
            out=args.out,
            memory=args.memory,
            batch_size=args.tile,
            engine=args.engine,
            dtype=_DTYPES.get(args.dtype),
            resume=not args.no_resume,
            overwrite=args.overwrite,
            progress=args.progress,
            log_json=args.log_json,
        )
    except StoreLockedError as err:
        print(f"pntk compute: error: {err}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{store.path}: {store.kind.value} {list(store.shape)} {store.dtype}, complete")
    return 0


def _device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
