"""Worker: time one PyTorch kernel computation (a pntk engine or the torch.func snippet) and print JSON.

Run by ``bench_kernels.py`` in a subprocess of the pntk virtual environment, one measurement per process, so
that each has a wall-time and memory guard and its own peak resident memory. The job is JSON on stdin::

    {"workload": "mlp", "sizes": null, "N": 256, "kind": "pntk", "implementation": "pntk:auto",
     "repeats": 3, "max_seconds": 60, "memory_bytes": 8e9, "dtype": "float32", "seed": 0,
     "threads": 2, "batch_size": null, "save_kernel": null, "export": null}

``implementation`` is ``"pntk:<engine>"`` (``pntk.kernel(..., engine=<engine>)``) or ``"torch.func"``.
``single: true`` times one call without warm-up (the memory check). ``export`` names an ``.npz`` file to
receive the model's parameters and the inputs (for a cross-check), ``save_kernel`` an ``.npy`` file to
receive the kernel. The result carries ``rss_before_bytes``, the resident memory before the first call.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call, jacrev, vmap  # noqa: E402

import harness  # noqa: E402
import models  # noqa: E402


def torch_func_ntk(model: torch.nn.Module, x: torch.Tensor, kind: str, memory_bytes: float) -> torch.Tensor:
    """The kernel of ``model`` on ``x`` the way the torch.func NTK tutorial writes it.

    Per-sample Jacobians by ``vmap(jacrev(f_single))`` over ``functional_call``, flattened per parameter
    and contracted with ``einsum``. The pNTK differentiates ``g = O^{-1/2} Σ_a f_a``; the trace contracts
    the output axis and divides by ``O``. Since ``x2 = x1`` the Jacobian of ``x`` is computed once when
    it fits ``memory_bytes`` (the tutorial computes it twice); otherwise samples are chunked into row and
    column blocks whose Jacobians fit, and each column block is recomputed for every row block.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    O = model(x[:1]).shape[-1]

    def fnet_single(params, x):
        out = functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)
        return out.sum(-1, keepdim=True) / math.sqrt(O) if kind == "pntk" else out

    def jacobian(xb: torch.Tensor) -> list[torch.Tensor]:
        jac = vmap(jacrev(fnet_single), (None, 0))(params, xb)
        return [j.flatten(2) for j in jac.values()]  # each [n, c, P_k]

    expr = "Naf,Mbf->NMab" if kind == "entk" else "Naf,Maf->NM"

    def contract(j1: list[torch.Tensor], j2: list[torch.Tensor]) -> torch.Tensor:
        result = torch.stack([torch.einsum(expr, a, b) for a, b in zip(j1, j2)]).sum(0)
        return result / O if kind == "trace" else result

    c = 1 if kind == "pntk" else O
    P = sum(p.numel() for p in params.values())
    per_sample = c * P * x.element_size()
    N = len(x)
    if N * per_sample <= memory_bytes:
        j = jacobian(x)
        return contract(j, j)
    chunk = max(1, int(memory_bytes // (2 * per_sample)))
    rows = []
    for x1 in x.split(chunk):
        j1 = jacobian(x1)
        rows.append(torch.cat([contract(j1, jacobian(x2)) for x2 in x.split(chunk)], dim=1))
    return torch.cat(rows, dim=0)


def auto_choice(model: torch.nn.Module, x: torch.Tensor, kind: str, batch_size: int | None) -> str:
    """The engine that ``engine="auto"`` picks here, as pntk reports it (``"?"`` if it cannot say)."""
    try:
        import pntk

        return pntk.plan(model, x, kind=kind, batch_size=batch_size).engine
    except Exception as err:  # noqa: BLE001 - reporting only
        return f"? ({type(err).__name__})"


def main() -> None:
    job = harness.read_job()
    torch.set_num_threads(int(job.get("threads", 2)))
    dtype = getattr(torch, job.get("dtype", "float32"))
    wl = (
        models.small_workload(job["workload"], **job["sizes"])
        if job.get("sizes")
        else models.get_workload(job["workload"])
    )
    model = models.build_torch(wl, seed=int(job.get("seed", 0))).to(dtype)
    x = models.sample_inputs(wl, int(job["N"]), seed=int(job.get("seed", 0)) + 1).to(dtype)
    kind, impl = job["kind"], job["implementation"]
    if job.get("export"):
        np.savez(job["export"], *models.torch_param_arrays(model), x=x.numpy())

    result: dict = {"implementation": impl, "P": models.num_params(model)}
    if impl == "torch.func":
        memory = float(job.get("memory_bytes", 8e9))
        fn = lambda: torch_func_ntk(model, x, kind, memory)  # noqa: E731
    elif impl.startswith("pntk:"):
        import pntk

        engine = impl.split(":", 1)[1]
        bs = job.get("batch_size")
        if engine == "auto":
            result["auto_engine"] = auto_choice(model, x, kind, bs)
        fn = lambda: pntk.kernel(model, x, kind=kind, engine=engine, batch_size=bs, progress=False)  # noqa: E731
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    out: dict = {}

    def run() -> None:
        out["K"] = fn()

    result["rss_before_bytes"] = harness.current_rss_bytes()
    if job.get("single"):
        t0 = time.perf_counter()
        run()
        elapsed = time.perf_counter() - t0
        timing = harness.Timing(elapsed, [elapsed], warmup_reused=True)
    else:
        timing = harness.time_calls(
            run,
            repeats=int(job.get("repeats", 3)),
            max_seconds=float(job.get("max_seconds", 60)),
            first_compiles=False,
        )
    K = out["K"]
    if job.get("save_kernel"):
        np.save(job["save_kernel"], K.detach().numpy())
    result.update(
        first_s=timing.first_s,
        times_s=timing.times_s,
        median_s=timing.median_s,
        warmup_reused=timing.warmup_reused,
        shape=list(K.shape),
        finite=bool(torch.isfinite(K).all()),
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
