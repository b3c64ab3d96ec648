"""Worker: time neural-tangents' pNTK-vector products (``nt.empirical_ntk_vp_fn``) and print JSON.

Runs in the neural-tangents virtual environment (``benchmarks/nt-venv.sh .venv-nt``), one measurement per
process. The job is JSON on stdin::

    {"N": 10000, "columns": 16, "mode": "vmap", "load": "weights.npz", "repeats": 3, "max_seconds": 60,
     "save_product": null}

The network is the stax twin of bench_operators' MLP 40-512-512-10 with the PyTorch weights and inputs
from ``load`` (``arr_0 …`` the parameters in registration order, ``x`` the inputs); the pNTK is the NTK of
``g(x) = Σ_a f_a(x) / √O``. ``empirical_ntk_vp_fn(g, x, x, params)`` gives ``v ↦ K v``; one column is that
function under ``jax.jit``; ``columns > 1`` maps it over the columns with ``jax.vmap`` (``mode="vmap"``, one
compiled call) or calls it per column (``mode="loop"``). Compilation is done ahead of time and reported
apart. ``V`` is ``numpy.random.default_rng(0).standard_normal((N, columns))`` in float32, as in the PyTorch
worker, so ``save_product`` (an ``.npy`` path) allows a cross-check of the products.
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
    import jax.numpy as jnp
    import neural_tangents as nt
    import numpy as np

    import models

    N, k, mode = int(job["N"]), int(job["columns"]), job.get("mode", "vmap")
    wl = models.small_workload("mlp", width=512, depth=2, d_in=40)
    init_fn, apply_fn = models.build_stax(wl)
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 40))
    data = np.load(job["load"])
    params = models.stax_params_from_torch(params, [data[f"arr_{i}"] for i in range(len(data.files) - 1)])
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    x = jnp.asarray(data["x"][:N], jnp.float32)
    O = wl.num_outputs

    def g(p, x):
        return apply_fn(p, x).sum(-1) / math.sqrt(O)

    V = jnp.asarray(np.random.default_rng(0).standard_normal((N, k)).astype(np.float32))
    ntk_vp = nt.empirical_ntk_vp_fn(g, x, x, params)
    t0 = time.perf_counter()
    if k == 1:
        compiled = jax.jit(ntk_vp).lower(V[:, 0]).compile()
        fn = lambda: compiled(V[:, 0]).block_until_ready()  # noqa: E731
    elif mode == "vmap":
        compiled = jax.jit(jax.vmap(ntk_vp, in_axes=1, out_axes=1)).lower(V).compile()
        fn = lambda: compiled(V).block_until_ready()  # noqa: E731
    else:
        compiled = jax.jit(ntk_vp).lower(V[:, 0]).compile()
        fn = lambda: jnp.stack([compiled(V[:, j]) for j in range(k)], 1).block_until_ready()  # noqa: E731
    compile_s = time.perf_counter() - t0
    out: dict = {}

    def run() -> None:
        out["KV"] = fn()

    timing = harness.time_calls(
        run, repeats=int(job.get("repeats", 3)), max_seconds=float(job.get("max_seconds", 60)), first_compiles=False
    )
    if job.get("save_product"):
        np.save(job["save_product"], np.asarray(out["KV"]).reshape(N, k))
    harness.emit(
        {
            "method": f"nt_{mode}" if k > 1 else "nt",
            "compile_s": compile_s,
            "first_s": timing.first_s,
            "times_s": timing.times_s,
            "median_s": timing.median_s,
            "jax": jax.__version__,
            "neural_tangents": nt.__version__,
        }
    )


if __name__ == "__main__":
    main()
