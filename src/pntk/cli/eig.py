"""``pntk eig``: extreme eigenvalues of a kernel by block Lanczos, on a network (matrix-free) or a store."""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from ..kernels.api import device_of
from ..solvers import SolverOptions, effective_rank, eigsh
from .operands import add_source_arguments, check_source, emit, load_network, network_operator, refined, stored_operator

_EPILOG = """\
examples:
  pntk eig --model mlp --width 512 --dataset mnist1d --num-samples 20000 --top 10 --memory 2GB
  pntk eig --store k.zarr --top 5 --which SA --tol 1e-6 --json eig.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eig",
        help="extreme eigenvalues of a kernel by block Lanczos, without forming it (or streaming a store)",
        description="The largest or smallest eigenvalues of a network's NTK (never formed: products through "
        "its per-layer factors) or of a stored kernel (streamed), by block Lanczos with full "
        "reorthogonalisation and restarts. Prints JSON.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(p)
    e = p.add_argument_group("eigenvalues")
    e.add_argument("--top", "-k", type=int, default=10, help="how many eigenvalues (default: 10)")
    e.add_argument("--which", default="LA", choices=("LA", "SA"), help="largest (LA, default) or smallest (SA)")
    e.add_argument("--tol", type=float, default=1e-6, help="residual tolerance relative to λ_max (default: 1e-6)")
    e.add_argument("--maxiter", type=int, help="Lanczos restarts (default: 100)")
    e.add_argument("--block-size", type=int, help="columns per product (default: --top, at most 16)")
    e.add_argument("--krylov-dim", type=int, help="basis size before a restart")
    e.add_argument("--effective-rank", action="store_true", help="also tr K / λ_max and the entropy rank (SLQ)")
    e.add_argument(
        "--refine",
        action="store_true",
        help="a last Rayleigh–Ritz step with the same kernel's float64 products (--top more columns), so that "
        "the eigenvalues and residuals are those of the exact kernel rather than of float32 rounding; the "
        "float64 operator takes an eighth of --memory, the float32 one three quarters",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_source(args)
    if args.store:
        op, exact = refined(args, torch.device("cpu"), partial(stored_operator, args.store, args))
        source = {"store": args.store}
    else:
        model, x, _, _ = load_network(args)
        op, exact = refined(args, device_of(model), partial(network_operator, args, model, x))
        source = {"model": args.model, "dataset": args.dataset, "N": len(x), "kind": args.kind}
    options = SolverOptions(
        tol=args.tol,
        maxiter=args.maxiter,
        seed=args.seed,
        block_size=args.block_size,
        krylov_dim=args.krylov_dim,
        progress=args.progress,
    )
    start = time.perf_counter()
    pairs = eigsh(op, args.top, args.which, options=options, exact=exact)
    result = {
        **source,
        "shape": list(op.shape),
        "which": args.which,
        "eigenvalues": pairs.eigenvalues,
        "residuals": pairs.residuals,
        "iterations": pairs.iterations,
        "products": pairs.products,
        "converged": pairs.converged,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if args.effective_rank:
        rank = effective_rank(op, options=options)
        result["effective_rank"] = {"trace_ratio": rank.trace_ratio, "entropy": rank.entropy, "trace": rank.trace}
    emit(result, args)
    return 0 if pairs.converged else 1
