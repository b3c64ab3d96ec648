"""Cost of the pNTK against the eNTK: wall time and kernel bytes against ``N`` and against ``O``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kernels import entk, pntk
from .results import jsonable
from .setup import Log, load_split, log_line, make_model, num_parameters, timed, torch_dtype
from .stats import loglog_slope


@dataclass(frozen=True)
class Timing:
    """Timings of both kernels of one model, on growing ``N`` and with growing ``O``.

    Attributes:
        dataset: a dataset name whose training inputs are used.
        model: a zoo name.
        width: the model's width.
        Ns: ascending numbers of inputs, at the dataset's ``O``.
        Os: ascending numbers of outputs (the readout is resized), at ``N_for_O`` inputs.
        N_for_O: inputs of the runs against ``O``.
        repeats: each time is the best of this many runs, after one warm-up run.
        seed: the initialisation seed.
        depth: the model's depth; ``None`` for its default.
        dtype: the dtype the kernels are computed in.
    """

    dataset: str
    model: str
    width: int
    Ns: tuple[int, ...] = (16, 32, 64, 128)
    Os: tuple[int, ...] = (1, 2, 5, 10, 20)
    N_for_O: int = 64
    repeats: int = 1
    seed: int = 0
    depth: int | None = None
    dtype: str = "float32"

    @property
    def name(self) -> str:
        """A file-name stem, e.g. ``timing_mnist1d_mlp``."""
        return f"timing_{self.dataset}_{self.model}"


def timing(spec: Timing, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None) -> dict:
    """Time ``pntk.entk`` and ``pntk.pntk`` against ``N`` and against ``O``, and the bytes of their results.

    Times are the best of ``spec.repeats`` runs after a warm-up on the smallest size; they are wall-clock
    times on whatever machine runs this, to be read as ratios. The kernel bytes are exact: ``N²·O²`` against
    ``N²`` numbers.

    Args:
        spec: what to time.
        device: where models, data and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per size.

    Returns:
        A JSON-able dict: ``spec``; ``against_N`` and ``against_O``, lists of dicts with ``N``, ``O``, ``P``,
        ``seconds_entk``, ``seconds_pntk``, ``bytes_entk``, ``bytes_pntk``; ``fits``: power laws
        ``{slope, intercept, points}`` of each time against ``N`` (``entk_vs_N``, ``pntk_vs_N``) and against
        ``O`` (``entk_vs_O``, ``pntk_vs_O``); ``seconds``.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=max(*spec.Ns, spec.N_for_O), data_root=data_root, device=device)
    dt = torch_dtype(spec.dtype)

    def measure(N: int, O: int) -> dict:
        model = make_model(
            spec.model,
            width=spec.width,
            depth=spec.depth,
            data=data,
            parametrization="standard",
            seed=spec.seed,
            device=device,
            num_classes=O,
        )
        x = data.x[:N]
        row: dict[str, Any] = {"N": N, "O": O, "P": num_parameters(model)}
        for name, fn in (("entk", entk), ("pntk", pntk)):
            fn(model, x[:2], dtype=dt)  # warm-up: first-call overheads are not the kernel's cost
            best = min((timed(lambda: fn(model, x, dtype=dt)) for _ in range(spec.repeats)), key=lambda r: r[1])  # noqa: B023 (called at once)
            row[f"seconds_{name}"] = best[1]
            row[f"bytes_{name}"] = best[0].numel() * best[0].element_size()
        log_line(
            log,
            f"timing {spec.model}/{spec.dataset} width {spec.width} N {N:>4} O {O:>3}: "
            f"eNTK {row['seconds_entk']:.3f} s, pNTK {row['seconds_pntk']:.3f} s "
            f"(×{row['seconds_entk'] / row['seconds_pntk']:.1f}), bytes ×{row['bytes_entk'] // row['bytes_pntk']}",
        )
        return row

    against_N = [measure(N, data.num_classes) for N in spec.Ns]
    against_O = [measure(spec.N_for_O, O) for O in spec.Os]
    fits = {
        f"{name}_vs_{axis}": loglog_slope([r[axis] for r in rows], [r[f"seconds_{name}"] for r in rows]).to_dict()
        for axis, rows in (("N", against_N), ("O", against_O))
        for name in ("entk", "pntk")
    }
    return {
        "experiment": "timing",
        "spec": jsonable(spec),
        "against_N": against_N,
        "against_O": against_O,
        "fits": fits,
        "seconds": time.perf_counter() - start,
    }
