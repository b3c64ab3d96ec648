"""One measurement of ``bench_features.py`` in its own process (so that its peak memory is its own).

Jobs (JSON on stdin), all on the MLP 40-512-512-10 and MNIST-1D inputs, float32, pNTK gradients
``∇g = ∇ Σ_a f_a / √O``:

- ``{"task": "throughput", "tool": "pntk" | "vmap-grad" | "trak" | "dattri", "n", "k", "threads", ...}``: samples
  per second of a ``k``-dimensional sketch (``vmap-grad``: per-sample gradients alone), after a warm-up;
- ``{"task": "accuracy", "n", "n_test", "ks", "threads", "ridge_scale"}``: against the exact pNTK of ``n``
  training samples: ``‖Φ Φᵀ − K‖_F / ‖K‖_F`` and the top eigenvalues for each ``k``; test accuracy of exact
  pNTK regression, of the sketch's k-dimensional regression and of Nyström, and of the trained network;
- ``{"task": "million", "n", "k", "threads", "ridge_scales", "chunk", "method"}``: the sketch of ``n`` training
  samples (``method`` ``"kronecker"``, or ``"nystrom"`` with ``k`` uniform landmarks) streamed into a ridge
  regression in ``k`` dimensions, then test accuracy;
- ``{"task": "network", "n", "epochs", "threads"}``: the MLP trained on ``n`` training samples, its test accuracy.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

import harness  # noqa: E402
import pntk  # noqa: E402
from features_data import mlp, mnist1d, uniform_nystrom  # noqa: E402

#: The fraction of TRAK's whole projection matrix that ``trak-matrix`` holds and times.
SLICE = 8


def per_sample_gradients(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``∇_θ g(x_n)`` flattened, ``[B, P]``, by ``vmap(grad)`` (the torch.func recipe TRAK and dattri use)."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    O = 10

    def g(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).sum() / math.sqrt(O)

    grads = vmap(grad(g), in_dims=(None, 0))(params, x)
    return torch.cat([t.reshape(len(x), -1) for t in grads.values()], 1)


def throughput(job: dict) -> dict:
    tool, n, k = job["tool"], job["n"], job["k"]
    x = torch.from_numpy(mnist1d(job["dataset"])["x"][:n])
    net = mlp()
    P = sum(p.numel() for p in net.parameters())
    chunk = job.get("chunk", 512)
    result: dict = {"tool": tool, "n": n, "k": k, "P": P}
    if tool == "pntk":
        fmap = pntk.features.FeatureMap(net, k=k, seed=0, block=tuple(job.get("block", (8, 8))))
        fmap(x[:256])  # warm-up; draws the projection
        t0 = time.perf_counter()
        Phi = fmap(x)
        seconds = time.perf_counter() - t0
        result["state_bytes"] = fmap.state_bytes(x)
        result["checksum"] = float(Phi.double().square().sum())
    else:
        if tool == "trak":
            from trak.projectors import BasicProjector, ProjectionType

            projector = BasicProjector(
                grad_dim=P, proj_dim=k, seed=0, proj_type=ProjectionType.normal, device=torch.device("cpu")
            )
            project = lambda G: projector.project(G, model_id=0)  # noqa: E731
            result["state_bytes"] = projector.proj_matrix.numel() * 4
        elif tool == "dattri":
            from dattri.func.projection import random_project

            project = random_project(
                torch.zeros(chunk, P), chunk, proj_dim=k, proj_max_batch_size=32, proj_type="normal", device="cpu"
            )
            result["state_bytes"] = P * min(k, 100) * 4  # its BasicProjector's block of the matrix
        elif tool == "trak-matrix":
            # BasicProjector(block_size=k) holds the whole P × k matrix (4·P·k bytes, 4.7 GB here, over this
            # machine's per-process budget): timed on 1/SLICE of the rows, its product time scaled by SLICE.
            from trak.projectors import BasicProjector, ProjectionType

            rows = P // SLICE
            projector = BasicProjector(
                grad_dim=rows,
                proj_dim=k,
                seed=0,
                proj_type=ProjectionType.normal,
                device=torch.device("cpu"),
                block_size=k,
            )
            project_s = 0.0

            def project(G):
                nonlocal project_s
                t = time.perf_counter()
                projector.project(G[:, :rows].contiguous(), model_id=0)
                project_s += time.perf_counter() - t

            result["state_bytes"] = P * k * 4
            result["estimated_from_slice"] = SLICE
        else:
            project = lambda G: G  # noqa: E731
            result["state_bytes"] = 0
        project(per_sample_gradients(net, x[:16]))  # warm-up
        if tool == "trak-matrix":
            project_s = 0.0
        t0 = time.perf_counter()
        for s in range(0, n, chunk):
            project(per_sample_gradients(net, x[s : s + chunk]))
        seconds = time.perf_counter() - t0
        if tool == "trak-matrix":
            seconds += (SLICE - 1) * project_s
    result.update(seconds=seconds, samples_per_s=n / seconds)
    return result


def million(job: dict) -> dict:
    """Sketch ``n`` training samples chunk by chunk into a k-dimensional ridge regression; test accuracy.

    The ridge is chosen on held-out rows: the last ``job["validation"]`` training samples are sketched after
    the others are fitted, scored at every scale of ``job["ridge_scales"]`` (:meth:`FeatureRidge.predict_path`,
    one eigendecomposition of the Gram), then added to the fit; the test set is predicted at the chosen ridge
    (and, for the record, at every scale).
    """
    data = mnist1d(job["dataset"])
    n, k, chunk, held = job["n"], job["k"], job["chunk"], job.get("validation", 0)
    x, y = torch.from_numpy(data["x"][:n]), data["y"][:n]
    x_test, y_test = torch.from_numpy(data["x_test"][: job["n_test"]]), data["y_test"][: job["n_test"]]
    Y = np.eye(10)[y]
    net = mlp()
    t0 = time.perf_counter()
    if job.get("method", "kronecker") == "kronecker":
        fmap = pntk.features.FeatureMap(net, k=k, seed=0)
    else:  # k landmarks drawn uniformly from the fitted rows; their kernel and its eigendecomposition are timed
        fmap = uniform_nystrom(net, x[: n - held], k)
    landmarks_s = time.perf_counter() - t0
    ridge = pntk.features.FeatureRidge(0.0)
    sketch_s = gram_s = 0.0
    for s in range(0, n - held, chunk):
        rows = slice(s, min(s + chunk, n - held))
        t1 = time.perf_counter()
        Phi = fmap(x[rows])
        t2 = time.perf_counter()
        ridge.partial_fit(Phi, Y[rows])
        sketch_s, gram_s = sketch_s + t2 - t1, gram_s + time.perf_counter() - t2
    scale = ridge.mean_diagonal  # of K̂, over the fitted rows
    scales = job.get("ridge_scales", [job.get("ridge_scale", 1e-3)])
    result: dict = {
        "n": n,
        "k": k,
        "method": job.get("method", "kronecker"),
        "chunk": chunk,
        "validation": held,
        "ridge_scales": scales,
        "landmarks_s": landmarks_s,
    }
    t1 = time.perf_counter()
    if held:
        Phi_val = fmap(x[n - held :])
        path = ridge.predict_path(Phi_val, [c * scale for c in scales])
        val = [float((F.argmax(1) == y[n - held :]).mean()) for F in path]
        best = scales[int(np.argmax(val))]
        ridge.partial_fit(Phi_val, Y[n - held :])
        result["validation_accuracy"] = dict(zip(map(str, scales), val))
    else:
        best = scales[0]
    select_s = time.perf_counter() - t1
    ridge.ridge = best * scale
    t1 = time.perf_counter()
    W = ridge.coef
    solve_s = time.perf_counter() - t1
    fit_s = time.perf_counter() - t0
    Phi_test = fmap(x_test)
    F = ridge.predict(Phi_test)
    total_s = time.perf_counter() - t0
    path = ridge.predict_path(Phi_test, [c * scale for c in scales])
    result.update(
        ridge_scale=best,
        ridge=ridge.ridge,
        sketch_s=sketch_s,
        gram_s=gram_s,
        select_s=select_s,
        solve_s=solve_s,
        fit_s=fit_s,
        total_s=total_s,
        test_accuracy=float((F.argmax(1) == y_test).mean()),
        test_accuracy_by_scale={str(c): float((P.argmax(1) == y_test).mean()) for c, P in zip(scales, path)},
        n_test=int(len(y_test)),
        coef_norm=float(np.linalg.norm(W)),
    )
    return result


def network(job: dict) -> dict:
    """The MLP trained on ``n`` training samples (Adam, cross-entropy, ``job["epochs"]`` epochs): the network's
    test accuracy, beside the sketch's of the same samples."""
    data = mnist1d(job["dataset"])
    n = job["n"]
    x, y = torch.from_numpy(data["x"][:n]), torch.from_numpy(data["y"][:n])
    x_test, y_test = torch.from_numpy(data["x_test"][: job["n_test"]]), data["y_test"][: job["n_test"]]
    net = mlp()
    with torch.no_grad():
        initial = float((net(x_test).argmax(1).numpy() == y_test).mean())
    # A plain minibatch loop: pntk.train's loss on the whole training set after every epoch would hold the
    # activations of a million samples at once.
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    t0 = time.perf_counter()
    for _ in range(job["epochs"]):
        for batch in torch.randperm(n, generator=g).split(256):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        accuracy = float((net.eval()(x_test).argmax(1).numpy() == y_test).mean())
    return {
        "n": n,
        "epochs": job["epochs"],
        "seconds": seconds,
        "initial_accuracy": initial,
        "test_accuracy": accuracy,
        "n_test": int(len(y_test)),
    }


def accuracy(job: dict) -> dict:
    """Sketches against the exact pNTK at ``n`` training samples (kernel in float32, solves in float64)."""
    from pntk.analysis import extreme_eigenvalues, kernel_regression

    data = mnist1d(job["dataset"])
    n, n_test, top = job["n"], job["n_test"], job.get("top", 10)
    x, y = torch.from_numpy(data["x"][:n]), data["y"][:n]
    x_test, y_test = torch.from_numpy(data["x_test"][:n_test]), data["y_test"][:n_test]
    Y = np.eye(10)[y]
    net = mlp()
    t0 = time.perf_counter()
    K = pntk.pntk(net, x)
    K_test = pntk.pntk(net, x_test, x)
    exact_s = time.perf_counter() - t0
    K_norm = float(K.double().norm())
    ridge = job["ridge_scale"] * float(K.diagonal().double().mean())
    lam_exact = extreme_eigenvalues(K, top)
    F = kernel_regression(K, K_test, Y, ridge=ridge)
    result: dict = {
        "n": n,
        "n_test": n_test,
        "ridge": ridge,
        "exact_seconds": exact_s,
        "exact_top_eigenvalues": lam_exact.tolist(),
        "exact_accuracy": float((F.argmax(1) == y_test).mean()),
        "sketches": [],
    }
    for k in job["ks"]:
        for method in ("kronecker", "nystrom"):
            if method == "nystrom" and k > job.get("nystrom_max", 2048):
                continue
            t0 = time.perf_counter()
            if method == "kronecker":
                fmap = pntk.features.FeatureMap(net, k=k, seed=0)
                Phi, Phi_test = fmap(x), fmap(x_test)
            else:
                nys = uniform_nystrom(net, x, k)
                Phi, Phi_test = nys(x), nys(x_test)
            seconds = time.perf_counter() - t0
            err2 = 0.0
            for s in range(0, n, 1000):  # ‖Φ Φᵀ − K‖_F by row blocks
                err2 += float((Phi[s : s + 1000] @ Phi.T - K[s : s + 1000]).double().square().sum())
            lam = pntk.features.FeatureKernel(Phi).eigenvalues()[:top].numpy()
            F = pntk.features.feature_regression(Phi, Phi_test, Y, ridge=ridge)
            result["sketches"].append(
                {
                    "method": method,
                    "k": k,
                    "seconds": seconds,
                    "relative_error": math.sqrt(err2) / K_norm,
                    "top_eigenvalues": lam.tolist(),
                    "top_eigenvalue_relative_error": float(np.abs(lam - lam_exact).max() / lam_exact[0]),
                    "accuracy": float((F.argmax(1) == y_test).mean()),
                }
            )
            del Phi, Phi_test
    # The network itself, trained on the same samples (Adam, cross-entropy).
    trained = mlp()
    config = pntk.TrainConfig(
        loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=job.get("epochs", 30), batch_size=256
    )
    pntk.train(trained.train(), x, torch.from_numpy(y), config)
    with torch.no_grad():
        result["network_accuracy"] = float((trained.eval()(x_test).argmax(1).numpy() == y_test).mean())
    return result


def main() -> None:
    job = harness.read_job()
    torch.set_num_threads(job.get("threads", 1))
    task = {"throughput": throughput, "accuracy": accuracy, "million": million, "network": network}[job["task"]]
    harness.emit(task(job))


if __name__ == "__main__":
    main()
