"""``pntk compute``: a kernel larger than memory into a resumable Zarr store, on one process or under torchrun."""

from __future__ import annotations

import argparse
import os

from ..compute import compute
from ..kernels.outputs import output_key
from .flags import COMMON_FLAGS, KERNEL_FLAGS, add_common_flags, positive_int, resolve_device, torch_dtype
from .provenance import run_record
from .resolve import check_forward, check_materialized, load_inputs, load_model, load_weights

_EPILOG = """\
examples:
  pntk compute --model mlp --width 512 --dataset digits --kind pntk --out k.zarr --memory 4G
  pntk compute --model net.py:make --weights net.safetensors --dataset x.npy --kind entk --out th.zarr
  pntk compute --config run.toml --num-samples 500      # the file's options, one of them overridden
  pntk compute --model lm.py:make --dataset prompts.pt --kind entk --output 3,7@-1 --params 'head.*' --out k.zarr
  torchrun --nproc-per-node 4 -m pntk compute --model mlp --width 512 --dataset cifar-dir \\
      --dataset-format cifar10 --num-samples 20000 --kind pntk --out k.zarr --memory 8G

Rerun the same command after an interruption to resume; --overwrite starts again. The store records where
its inputs and model came from (dataset, rows, labels, normalisation, model, weights' sha256, seeds, command):
`pntk info k.zarr` prints it.
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
    add_common_flags(p, flags=COMMON_FLAGS + KERNEL_FLAGS)
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="a zoo name (mlp, convnet, resnet18, wrn) or path/to/file.py:factory")
    m.add_argument("--width", type=int, help="zoo models: width (hidden units, channels, widen factor)")
    m.add_argument("--depth", type=int, help="zoo models: depth (default: the model's)")
    m.add_argument("--num-classes", type=int, help="zoo models: outputs O (default: the dataset's, else 10)")
    m.add_argument("--parametrization", default="standard", choices=("standard", "ntk"), help="zoo models")
    m.add_argument("--weights", help="a .safetensors file or a torch checkpoint (read with weights_only=True)")
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        required=True,
        help="a built-in name (digits, mnist1d, ...), a directory of "
        "standard files (with --dataset-format), or a .npy/.pt file of inputs",
    )
    d.add_argument("--dataset-format", help="what a dataset directory holds: cifar10, cifar100, mnist, fashion-mnist")
    d.add_argument("--split", default="train", help="train, test or all (default: train)")
    d.add_argument("--dataset2", help="columns from another dataset (default: the same, symmetric kernel)")
    d.add_argument("--split2", help="split of --dataset2 (default: --split)")
    d.add_argument(
        "--num-samples2", type=positive_int, metavar="N2", help="samples of --dataset2 (default: --num-samples)"
    )
    k = p.add_argument_group("kernel and store")
    k.add_argument("--kind", required=True, choices=("entk", "trace", "pntk"))
    k.add_argument("--out", required=True, help="the store's directory, e.g. k.zarr")
    k.add_argument("--engine", default="auto", help="auto, jacobian, vp, structured (default: auto)")
    k.add_argument("--overwrite", action="store_true", help="replace whatever store is at --out")
    k.add_argument("--no-resume", action="store_true", help="refuse an existing store instead of finishing it")
    k.add_argument("--log-json", metavar="FILE", help="append one JSON line per finished tile to FILE")
    k.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)")
    p.set_defaults(run=run, on_interrupt="the store keeps its finished tiles: rerun the same command to resume")


def run(args: argparse.Namespace) -> int:
    # Checked before any data is read: a wrong option should fail at once.
    dtype = torch_dtype(args.dtype)
    if args.dtype == "bfloat16":
        raise ValueError(
            "--dtype bfloat16: a kernel store holds NumPy numbers and NumPy has no bfloat16; use --dtype float16 "
            "(half precision, which NumPy holds) or float32, or compute in memory with "
            "pntk.kernel(..., dtype=torch.bfloat16)"
        )
    device = resolve_device(args.device)
    inputs1 = load_inputs(
        args.dataset, split=args.split, n=args.num_samples, fmt=args.dataset_format, seed=args.data_seed
    )
    inputs2 = None
    if args.dataset2 is not None:
        inputs2 = load_inputs(
            args.dataset2,
            split=args.split2 or args.split,
            n=args.num_samples2 if args.num_samples2 is not None else args.num_samples,
            fmt=args.dataset_format,
            seed=args.data_seed,
        )
    model, model_record = load_model(
        args.model,
        in_shape=tuple(inputs1.x.shape[1:]),
        num_classes=args.num_classes or inputs1.num_classes or 10,
        width=args.width,
        depth=args.depth,
        parametrization=args.parametrization,
        seed=args.seed,
    )
    weights_record = load_weights(model, args.weights) if args.weights else None
    check_materialized(model)
    model.to(device)
    check_forward(model, inputs1.x, device)
    if inputs2 is not None:
        check_forward(model, inputs2.x, device, "--dataset2")
    provenance = {
        **run_record(args),
        "dataset": inputs1.record,
        "dataset2": None if inputs2 is None else inputs2.record,
        "model": model_record,
        "weights": weights_record,
        "seeds": {"model": args.seed, "data": args.data_seed},
        "kind": args.kind,
        "dtype": args.dtype,
        "device": str(device),
        "params": args.params,
        "output": output_key(args.output),
    }
    store = compute(
        model,
        inputs1.x,
        None if inputs2 is None else inputs2.x,
        kind=args.kind,
        out=args.out,
        memory=args.memory,
        batch_size=args.batch_size,
        engine=args.engine,
        dtype=dtype,
        resume=not args.no_resume,
        overwrite=args.overwrite,
        progress=args.progress,
        log_json=args.log_json,
        provenance=provenance,
        params=args.params,
        output=args.output,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{store.path}: {store.kind.value} {list(store.shape)} {store.dtype}, complete")
    return 0
