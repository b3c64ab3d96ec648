"""``pntk features``: random features ``Φ`` of a network's NTK (``E[Φ Φᵀ] = K``), and regression on them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import DatasetName, train_test
from ..features import (
    FeatureMap,
    FeatureRidge,
    FeatureStore,
    Nystrom,
    compute_features,
    rpcholesky_landmarks,
)
from ..kernels.inputs import Inputs
from ..planning import memory_budget
from .flags import KERNEL_FLAGS, add_common_flags, torch_dtype
from .operands import targets
from .provenance import run_record
from .resolve import load_inputs, load_model, load_weights

_EPILOG = """\
examples:
  pntk features --model mlp --width 512 --dataset mnist1d --k 4096 --out phi.npy
  pntk features --model mlp --width 512 --dataset mnist1d --num-samples 100000 --k 4096 --out phi.zarr
  pntk features --model mlp --width 512 --dataset mnist1d --num-samples 1000000 --k 4096 --method nystrom --ridge 0.1
  pntk features --model mlp --width 512 --dataset mnist1d --split test --k 4096 --out phi_test.zarr
  pntk regress --features phi.zarr --test-features phi_test.zarr --labels y.npy --test-labels y_test.npy
  pntk features --model mlp --width 512 --dataset mnist1d --k 4096 --ridge 1e-3 1e-2 1e-1 1  # λ chosen, test accuracy
  pntk features --model net.py:make --weights net.safetensors --dataset x.npy --kind entk --k 1024 --out phi.npy
  pntk features --model mlp --width 512 --dataset mnist1d --k 1024 --method nystrom --landmarks rpcholesky --ridge 1e-2

--ridge without --out never holds Φ: chunks of samples (a quarter of --memory each) go into the k × k Gram ΦᵀΦ
one by one, so a million samples fit in a few GB (MNIST-1D beyond its standard 4,000 training samples is
generated at the size asked for, a minute or more for a million). The features of new inputs under the same
--feature-seed (and model, kind, k, method) share the map: Φ_test Φᵀ estimates K(x_test, X) without bias. An
--out ending in .zarr is a feature store, written a block of rows at a time with checksums: rerun the same
command after an interruption to resume it (--overwrite starts again); under torchrun the ranks share the
blocks.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "features",
        help="random features Φ with E[ΦΦᵀ] = K (a sketch of the NTK), and ridge regression on them",
        description="Sketch the eNTK, trace NTK or pseudo-NTK of a network as random features Φ ([N, k], "
        "[N, O, k] for the eNTK) from the structured engine's per-layer factors, and optionally fit kernel ridge "
        "regression in k dimensions on a built-in dataset's training split and report its test accuracy.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(p, flags=("num-samples", "batch-size", "dtype", "seed", "data-seed", "memory", *KERNEL_FLAGS))
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="a zoo name (mlp, convnet, resnet18, wrn) or path/to/file.py:factory")
    m.add_argument("--width", type=int, help="zoo models: width")
    m.add_argument("--depth", type=int, help="zoo models: depth")
    m.add_argument("--num-classes", type=int, help="zoo models: outputs O (default: the dataset's, else 10)")
    m.add_argument("--parametrization", default="standard", choices=("standard", "ntk"), help="zoo models")
    m.add_argument("--weights", help="a .safetensors file or a torch checkpoint (read with weights_only=True)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, help="a built-in name, a dataset directory, or a .npy/.pt file")
    d.add_argument("--dataset-format", help="what a dataset directory holds: cifar10, cifar100, mnist, fashion-mnist")
    d.add_argument("--split", default="train", help="train, test or all (default: train)")
    f = p.add_argument_group("features")
    f.add_argument("--k", type=int, required=True, help="number of features (for nystrom: of landmarks)")
    f.add_argument("--kind", default="pntk", choices=("entk", "trace", "pntk"))
    f.add_argument("--method", default="kronecker", choices=("kronecker", "dense", "nystrom"))
    f.add_argument(
        "--landmarks",
        default="uniform",
        choices=("uniform", "rpcholesky"),
        help="--method nystrom: draw the k landmarks uniformly or by randomly pivoted Cholesky",
    )
    f.add_argument("--distribution", default="gaussian", choices=("gaussian", "rademacher", "orthogonal"))
    f.add_argument("--feature-seed", type=int, default=0, help="the seed of the projection (or the landmarks)")
    f.add_argument(
        "--out",
        help="write Φ of the chosen split to this .npy file, or to a resumable feature store if it ends in .zarr",
    )
    f.add_argument("--overwrite", action="store_true", help="with --out *.zarr: replace the store there")
    f.add_argument(
        "--ridge",
        type=float,
        nargs="+",
        metavar="SCALE",
        help="fit ridge regression with λ = SCALE · mean diag K̂ on the training split of a built-in dataset "
        "and report test accuracy (JSON); several scales are chosen among on held-out training samples; "
        "without --out, Φ is streamed in chunks and never held",
    )
    f.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)")
    p.set_defaults(run=run, on_interrupt="a feature store keeps its finished blocks: rerun the same command")


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.ridge is None:
        raise ValueError("nothing to do: give --out phi.npy to write the features, or --ridge to fit a regression")
    classes: int | None
    loaded: torch.Tensor | np.ndarray
    if args.ridge is not None:
        train, test = train_test(DatasetName(args.dataset), n_train=args.num_samples, seed=args.data_seed)
        loaded, classes = train.x, train.num_classes
    else:
        inputs = load_inputs(
            args.dataset, split=args.split, n=args.num_samples, fmt=args.dataset_format, seed=args.data_seed
        )
        loaded, classes = inputs.x, inputs.num_classes
    # A writable copy of a memory-mapped file.
    x = loaded if isinstance(loaded, torch.Tensor) else torch.from_numpy(np.array(loaded))
    if args.ridge is not None and not all(scale >= 0 for scale in args.ridge):
        raise ValueError(f"--ridge scales must be non-negative; got {args.ridge}")
    if args.ridge is not None and len(args.ridge) > 1 and len(x) < 10:
        raise ValueError(f"choosing among --ridge scales holds out a tenth of the {len(x)} training samples; give one")
    model, model_record = load_model(
        args.model,
        in_shape=tuple(x.shape[1:]),
        num_classes=args.num_classes or classes or 10,
        width=args.width,
        depth=args.depth,
        parametrization=args.parametrization,
        seed=args.seed,
    )
    weights_record = load_weights(model, args.weights) if args.weights else None
    model.eval()
    dtype = torch_dtype(args.dtype)
    store = args.out is not None and Path(args.out).suffix == ".zarr"
    if store and args.method == "nystrom":
        raise ValueError("--method nystrom writes no feature store; use --out phi.npy, or --method kronecker/dense")
    if args.landmarks != "uniform" and args.method != "nystrom":
        raise ValueError(f"--landmarks {args.landmarks} applies to --method nystrom only")
    if args.method == "nystrom":
        if args.landmarks == "uniform":
            L = Nystrom.choose_landmarks(_inputs(x), args.k, args.feature_seed)
        else:
            index = rpcholesky_landmarks(
                model,
                x,
                args.k,
                kind=args.kind,
                seed=args.feature_seed,
                params=args.params,
                dtype=dtype,
                batch_size=args.batch_size,
                memory=args.memory,
                output=args.output,
            )
            L = _inputs(x)[index]
        nys = Nystrom(
            model,
            L.tensors[0],
            kind=args.kind,
            dtype=dtype,
            batch_size=args.batch_size,
            params=args.params,
            output=args.output,
        )

        def sketch(inputs, progress=args.progress):
            return nys(inputs, progress=progress)

    else:
        fmap = FeatureMap(
            model,
            k=args.k,
            kind=args.kind,
            method=args.method,
            seed=args.feature_seed,
            distribution=args.distribution,
            dtype=dtype,
            params=args.params,
            output=args.output,
        )

        def sketch(inputs, progress=args.progress):
            return fmap(inputs, batch_size=args.batch_size, memory=args.memory, progress=progress)

    Phi: torch.Tensor | FeatureStore | None = None  # None: --ridge alone, Φ streamed and never held
    if store:
        provenance = {
            **run_record(args),
            "dataset": {"name": args.dataset, "split": "train" if args.ridge is not None else args.split},
            "model": model_record,
            "weights": weights_record,
            "seeds": {"model": args.seed, "data": args.data_seed, "features": args.feature_seed},
        }
        Phi = compute_features(
            model,
            x,
            k=args.k,
            out=args.out,
            kind=args.kind,
            method=args.method,
            seed=args.feature_seed,
            distribution=args.distribution,
            dtype=dtype,
            batch_size=args.batch_size,
            memory=args.memory,
            params=args.params,
            output=args.output,
            overwrite=args.overwrite,
            progress=args.progress,
            provenance=provenance,
        )
        print(f"{args.out}: {args.kind} features {list(Phi.shape)} {Phi.dtype}, complete", file=sys.stderr)
    elif args.out:
        Phi = in_memory = sketch(x)
        np.save(Path(args.out), in_memory.detach().cpu().numpy(), allow_pickle=False)
        print(f"{args.out}: {args.kind} features {list(Phi.shape)} {Phi.dtype}", file=sys.stderr)
    if args.ridge is not None:
        O = train.num_classes if args.kind == "entk" else 1
        itemsize = (dtype or next(model.parameters()).dtype).itemsize
        # Chunks of samples whose features take a quarter of the budget: the sketch's own work takes the rest.
        rows = max(1, memory_budget(torch.device("cpu"), args.memory) // (4 * args.k * O * itemsize))
        print(json.dumps(_regress(args, Phi, sketch, x, train, test, rows)))
    return 0


def _regress(args: argparse.Namespace, Phi, sketch, x: torch.Tensor, train, test, rows: int) -> dict:
    """Ridge regression in ``k`` dimensions on the training split, ``λ = scale · mean diag K̂``, and its test
    accuracy. With several ``--ridge`` scales, the last tenth of the training samples (at most 10,000) is held
    out to choose among them, then added to the fit. ``Φ`` comes from ``Phi`` (a tensor or store) when there is
    one, else from ``sketch`` a chunk of ``rows`` samples at a time, and is never held whole.

    Returns:
        The JSON record: sizes, the chosen scale and ``λ``, the chunks, validation and test accuracies.
    """
    Y = torch.nn.functional.one_hot(torch.as_tensor(train.y), train.num_classes).double()
    labels = np.asarray(train.y)
    scales = args.ridge
    held = min(len(x) // 10, 10_000) if len(scales) > 1 else 0
    fitted = len(x) - held
    ridge, chunks = FeatureRidge(0.0), 0
    for part, block in _blocks(args, Phi, sketch, x, fitted, rows):
        ridge.partial_fit(block, Y[part])
        chunks += 1
    record: dict = {"n_train": len(x), "n_test": len(test.y), "k": args.k}
    best = scales[0]
    if held:
        Phi_held = _features_of(Phi, sketch, x, slice(fitted, len(x)))
        path = ridge.predict_path(Phi_held, [c * ridge.mean_diagonal for c in scales])
        accuracy = [float((F.argmax(1) == labels[fitted:]).mean()) for F in path]
        best = scales[int(np.argmax(accuracy))]
        ridge.partial_fit(Phi_held, Y[fitted:])
        record.update(held_out=held, validation_accuracy=dict(zip(map(str, scales), accuracy)))
    ridge.ridge = best * ridge.mean_diagonal
    x_test = torch.as_tensor(np.asarray(test.x))
    F = np.concatenate([ridge.predict(sketch(x_test[s : s + rows])) for s in range(0, len(x_test), rows)])
    record.update(ridge_scale=best, ridge=ridge.ridge, chunks=chunks)
    record["test_accuracy"] = float((F.argmax(1) == np.asarray(test.y)).mean())
    return record


def _blocks(args: argparse.Namespace, Phi, sketch, x: torch.Tensor, stop: int, rows: int):
    """``(rows, Φ[rows])`` for the samples before ``stop``: the blocks of a store, a tensor's rows, or
    sketched a chunk at a time (with a progress bar)."""
    if isinstance(Phi, FeatureStore):
        for part, block in Phi.blocks():
            if part.start < stop:
                yield slice(part.start, min(part.stop, stop)), block[: stop - part.start]
    elif Phi is not None:
        yield slice(0, stop), Phi[:stop]
    else:
        starts = range(0, stop, rows)
        progress = args.progress if args.progress is not None else len(starts) > 1 and sys.stderr.isatty()
        for s in tqdm(starts, desc=f"{args.kind} features → ΦᵀΦ", unit="chunk", disable=not progress):
            part = slice(s, min(s + rows, stop))
            yield part, sketch(x[part], progress=False)


def _features_of(Phi, sketch, x: torch.Tensor, part: slice) -> torch.Tensor:
    """``Φ[part]``: read from a store or tensor, or sketched."""
    if isinstance(Phi, FeatureStore):
        return torch.from_numpy(Phi[part])
    return Phi[part] if Phi is not None else sketch(x[part], progress=False)


def _inputs(x):
    return Inputs.from_user(x, "x")


def regress_features(args: argparse.Namespace) -> dict:
    """``pntk regress --features``: ridge regression in ``k`` dimensions on a feature store, streamed.

    Returns:
        The JSON record: the stores, ``N``, ``k``, ``ridge``, ``seconds`` and, with ``--test-features`` and
        ``--test-labels``, ``test_accuracy``.
    """
    if args.labels is None:
        raise ValueError("--features needs --labels (a .npy file of train labels [N] or targets [N, O])")
    Phi = FeatureStore(args.features)
    Y, _ = targets(np.load(args.labels, allow_pickle=False), None)
    model = FeatureRidge(0.0).fit(Phi, Y)  # one pass over the store; λ is set from its Gram after
    model.ridge = args.ridge if args.ridge is not None else args.ridge_rel * model.mean_diagonal
    out = {"features": args.features, "test_features": args.test_features, "N": len(Phi), "k": Phi.k}
    out["ridge"] = model.ridge
    if args.test_features:
        F = model.predict(FeatureStore(args.test_features))
        if args.test_labels:
            labels = np.load(args.test_labels, allow_pickle=False)
            out["test_accuracy"] = float((F.argmax(-1) == labels).mean())
    return out
