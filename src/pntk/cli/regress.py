"""``pntk regress``: kernel ridge regression by preconditioned conjugate gradients, matrix-free or on stores."""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np
import torch

from ..kernels.api import device_of
from ..solvers import Preconditioner, SolverOptions, ridge_regression
from .features import regress_features
from .operands import (
    add_source_arguments,
    check_source,
    emit,
    load_network,
    network_operator,
    refined,
    stored_operator,
    targets,
)

_EPILOG = """\
examples:
  pntk regress --model mlp --width 512 --dataset mnist1d --num-samples 20000 --num-test 2000 --ridge-rel 1e-3
  pntk regress --model mlp --width 512 --dataset mnist1d --kind entk --num-samples 2000 --tol 1e-4
  pntk regress --store train.zarr --test-store test_train.zarr --labels y.npy --test-labels y_test.npy --ridge 0.1

Targets are one-hot labels (--labels: a .npy file of [N] integer labels or [N, O] targets); the prediction of
a test sample is its row of K(x_test, X) times (K + λI)⁻¹ Y, and the accuracy the share of argmax hits.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regress",
        help="kernel ridge regression by preconditioned CG, without forming the kernel (or streaming stores)",
        description="Kernel ridge regression f(x) = K(x, X) (K(X, X) + λI)⁻¹ Y with a network's NTK (never "
        "formed) or stored kernels, by conjugate gradients with a pivoted-Cholesky (default), Nyström or Kronecker "
        "preconditioner. Prints JSON: iterations, residuals, accuracy.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(p)
    t = p.add_argument_group("test set")
    t.add_argument("--test-split", default="test", help="the dataset's split to predict (default: test)")
    t.add_argument("--num-test", type=int, help="test samples (default: all of the split)")
    t.add_argument("--test-store", help="with --store: the cross kernel K(x_test, X)")
    t.add_argument("--labels", help="with --store: .npy file of train labels [N] or targets [N, O]")
    t.add_argument("--test-labels", help="with --store: .npy file of test labels [M], for the accuracy")
    f = p.add_argument_group("or features (pntk features --out phi.zarr): ridge regression in k dimensions")
    f.add_argument("--features", help="a feature store of the training inputs, streamed block by block")
    f.add_argument("--test-features", help="with --features: the test inputs' store, of the same map")
    r = p.add_argument_group("solver")
    r.add_argument("--ridge", type=float, help="λ (default: --ridge-rel times the mean diagonal of K)")
    r.add_argument("--ridge-rel", type=float, default=1e-3, help="λ relative to the mean diagonal (default: 1e-3)")
    r.add_argument("--tol", type=float, default=1e-4, help="relative residual (default: 1e-4)")
    r.add_argument("--maxiter", type=int, help="iterations (default: 1000)")
    defaults = SolverOptions()
    r.add_argument(
        "--preconditioner",
        default=Preconditioner(defaults.preconditioner).value,
        choices=[p.value for p in Preconditioner],
        help=f"(default: {Preconditioner(defaults.preconditioner).value}: kronecker, the trace NTK's ⊗ I_O, for the "
        "entk, else pivoted_cholesky)",
    )
    r.add_argument(
        "--rank", type=int, default=defaults.rank, help=f"rank of the preconditioner (default: {defaults.rank})"
    )
    r.add_argument(
        "--refine",
        action="store_true",
        help="iterative refinement: iterations on the kernel's own products, residuals and predictions from the "
        "same kernel with float64 products, so that the solve reaches --tol where float32 rounding stops it "
        "(relative residuals near 1e-4 to 1e-3 at N = 100,000); the two float64 operators take an eighth of "
        "--memory each, the others three quarters",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.features:
        if args.store or args.model or args.dataset:
            raise ValueError("pass --features alone, without --store, --model or --dataset")
        emit({**regress_features(args), "seconds": round(time.perf_counter() - start, 3)}, args)
        return 0
    check_source(args)
    if args.store:
        if args.labels is None:
            raise ValueError("--store needs --labels (a .npy file of train labels [N] or targets [N, O])")
        cpu = torch.device("cpu")
        op, exact = refined(args, cpu, partial(stored_operator, args.store, args))
        cross, exact_test = (
            refined(args, cpu, partial(stored_operator, args.test_store, args)) if args.test_store else (None, None)
        )
        Y, labels = targets(np.load(args.labels, allow_pickle=False), None)
        test_labels = torch.as_tensor(np.load(args.test_labels, allow_pickle=False)) if args.test_labels else None
        source = {"store": args.store, "test_store": args.test_store}
    else:
        model, x, labels, O = load_network(args)
        _, x_test, test_labels, _ = load_network(args, split=args.test_split, n=args.num_test)
        if labels is None:
            raise ValueError("a file of inputs has no labels; use a dataset, or compute stores and pass --labels")
        Y, labels = targets(labels, O)
        op, exact = refined(args, device_of(model), partial(network_operator, args, model, x))
        cross, exact_test = refined(args, device_of(model), partial(network_operator, args, model, x_test, x))
        source = {"model": args.model, "dataset": args.dataset, "kind": args.kind, "N": len(x), "M": len(x_test)}
    ridge = args.ridge
    if ridge is None:
        ridge = args.ridge_rel * float(op.diagonal().double().mean())
    options = SolverOptions(
        tol=args.tol,
        maxiter=args.maxiter,
        preconditioner=args.preconditioner,
        rank=args.rank,
        seed=args.seed,
        progress=args.progress,
    )
    result = ridge_regression(op, cross, Y, ridge=ridge, options=options, exact=exact, exact_test=exact_test)
    out = {
        **source,
        "ridge": ridge,
        "iterations": result.cg.iterations,
        "refinements": result.cg.refinements,
        "residual": result.cg.residual.max().item(),
        "history": result.cg.history,
        "converged": result.cg.converged,
        "products": result.cg.products,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if result.predictions is not None and test_labels is not None:
        predicted = result.predictions.argmax(-1).cpu()
        out["test_accuracy"] = float((predicted == test_labels.cpu()).double().mean())
    emit(out, args)
    if result.cg.rounding_limited and not args.refine:
        print(
            "pntk regress: the rounding of the kernel's products stopped the solve above --tol; pass --refine to "
            "take residuals in float64 and go on",
            file=sys.stderr,
        )
    return 0 if result.cg.converged else 1
