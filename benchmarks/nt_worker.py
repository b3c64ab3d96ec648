"""Worker: time one neural-tangents kernel computation and print JSON.

Runs in the neural-tangents virtual environment (JAX is not in pntk's), one measurement per process. Make
that environment with ``benchmarks/nt-venv.sh .venv-nt`` (neural-tangents 0.6.5, jax 0.4.23). The
job is JSON on stdin::

    {"workload": "mlp", "sizes": null, "N": 256, "kind": "pntk",
     "implementation": "structured_derivatives", "repeats": 3, "max_seconds": 60, "batch_size": 0,
     "x64": false, "seed": 0, "load": null, "save_kernel": null}

The kernels, for the stax twin of the PyTorch network (:func:`models.build_stax`), all with
``vmap_axes=0`` (samples are independent) and ``diagonal_axes=()``:

- ``entk``: ``nt.empirical_ntk_fn(f, trace_axes=())``, ``[N, N, O, O]``;
- ``trace``: ``trace_axes=(-1,)``; neural-tangents 0.6.5 divides the trace by the traced size
  (``_trace_and_diagonal``), so this is already ``(1/O) tr Θ``, pntk's convention;
- ``pntk``: not built in; the NTK of ``g(x) = f(x) · 1/√O`` (a fixed summing dense layer on top) with
  ``trace_axes=()``, ``[N, N]``.

``implementation`` is the lower-case name of an ``nt.NtkImplementation``. ``batch_size > 0`` tiles the
kernel with ``nt.batch`` (to bound memory; it must divide ``N``); otherwise the whole kernel is one
``jax.jit``-compiled call, compiled ahead of time so that ``compile_s`` is measured on its own. Under
``nt.batch`` (which compiles on the first call) ``compile_s`` is the first call minus the median.

``load`` names an ``.npz`` from ``torch_worker.py`` (``export``): its parameters replace the stax
initialisation and its inputs are used (for the numerical cross-check, with ``x64``).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main() -> None:
    job = harness.read_job()
    import jax

    if job.get("x64"):
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    import numpy as np

    import models

    wl = (
        models.small_workload(job["workload"], **job["sizes"])
        if job.get("sizes")
        else models.get_workload(job["workload"])
    )
    dtype = jnp.float64 if job.get("x64") else jnp.float32
    N, kind, O = int(job["N"]), job["kind"], wl.num_outputs
    init_fn, apply_fn = models.build_stax(wl)
    _, params = init_fn(jax.random.PRNGKey(int(job.get("seed", 0))), (-1, *models.stax_input_shape(wl)))
    if job.get("load"):
        data = np.load(job["load"])
        arrays = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        params = models.stax_params_from_torch(params, arrays)
        x = models.stax_input(data["x"])[:N]
    else:
        x = np.random.default_rng(int(job.get("seed", 0)) + 1).standard_normal((N, *models.stax_input_shape(wl)))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    x = jnp.asarray(x, dtype)

    if kind == "pntk":
        f, trace_axes = (lambda p, x: apply_fn(p, x).sum(-1) / math.sqrt(O)), ()
    elif kind == "entk":
        f, trace_axes = apply_fn, ()
    elif kind == "trace":
        f, trace_axes = apply_fn, (-1,)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    implementation = nt.NtkImplementation[job["implementation"].upper()]
    ntk_fn = nt.empirical_ntk_fn(f, trace_axes=trace_axes, diagonal_axes=(), vmap_axes=0, implementation=implementation)
    repeats, max_seconds = int(job.get("repeats", 3)), float(job.get("max_seconds", 60))
    B = int(job.get("batch_size") or 0)
    out: dict = {}
    result: dict = {"implementation": f"nt:{job['implementation']}", "batch_size": B or N}

    if B and B < N:
        batched = nt.batch(ntk_fn, batch_size=B, store_on_device=True)

        def run() -> None:
            out["K"] = batched(x, None, params).block_until_ready()

        timing = harness.time_calls(run, repeats=repeats, max_seconds=max_seconds, first_compiles=True)
        compile_s = max(0.0, timing.first_s - timing.median_s)
        result["compile_note"] = "first call minus median (nt.batch compiles inside)"
    else:
        t0 = time.perf_counter()
        compiled = jax.jit(lambda x1, p: ntk_fn(x1, None, p)).lower(x, params).compile()
        compile_s = time.perf_counter() - t0

        def run() -> None:
            out["K"] = compiled(x, params).block_until_ready()

        timing = harness.time_calls(run, repeats=repeats, max_seconds=max_seconds, first_compiles=False)
    K = np.asarray(out["K"])
    if job.get("save_kernel"):
        np.save(job["save_kernel"], K)
    result.update(
        P=sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params)),
        compile_s=compile_s,
        first_s=timing.first_s,
        times_s=timing.times_s,
        median_s=timing.median_s,
        warmup_reused=timing.warmup_reused,
        shape=list(K.shape),
        finite=bool(np.isfinite(K).all()),
        jax=jax.__version__,
        neural_tangents=nt.__version__,
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
