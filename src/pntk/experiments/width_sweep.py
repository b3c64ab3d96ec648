"""Width sweep at initialisation: how well ``K ⊗ I`` approximates the eNTK ``Θ`` as networks widen."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis import compare
from .results import file_stem, jsonable
from .setup import Log, kernel_pair, load_split, log_line, make_model, num_parameters, torch_dtype
from .stats import loglog_slope, spread

#: Per-run values summarised over seeds at each width.
METRICS = (
    "relative_error",
    "relative_diagonal_error",
    "relative_off_diagonal_error",
    "norm_Theta",
    "norm_Theta_diagonal",
    "off_diagonal_error",
    "lambda_max_Theta",
    "lambda_max_K",
    "lambda_max_relative_error",
    "lambda_min_Theta",
    "lambda_min_K",
    "lambda_min_relative_error",
    "cond_Theta",
    "cond_K",
    "cond_relative_error",
)

#: Metrics that mean something only where the eNTK is numerically non-singular (see :func:`nonsingular`).
NEEDS_NONSINGULAR = ("lambda_min_relative_error", "cond_relative_error")

#: Metrics whose power law in the width is fitted.
FITTED = (
    "relative_error",
    "relative_diagonal_error",
    "relative_off_diagonal_error",
    "norm_Theta_diagonal",
    "off_diagonal_error",
    "lambda_max_relative_error",
    *NEEDS_NONSINGULAR,
)


@dataclass(frozen=True)
class WidthSweep:
    """One width sweep: a model family on ``N`` inputs of a dataset, several widths and seeds.

    Attributes:
        dataset: a dataset name (see :func:`pntk.data.load_dataset`); ``N`` samples of its training split.
        model: a zoo name (see :func:`pntk.models.build_model`).
        widths: ascending widths.
        seeds: initialisation seeds; their spread is reported at each width.
        N: number of inputs; the eNTK is an ``[N·O, N·O]`` matrix whose spectrum is computed densely.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` or ``"ntk"``.
        dtype: the dtype the kernels are computed in (see NOTE [Kernel precision] in :mod:`.setup`).
    """

    dataset: str
    model: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    N: int = 64
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem (see :func:`.results.file_stem`), e.g. ``width_sweep_mnist1d_mlp``."""
        return file_stem("width_sweep", self.dataset, self.model, self.parametrization)


def width_sweep(spec: WidthSweep, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None) -> dict:
    """Compare the eNTK ``Θ`` and the pNTK ``K`` at initialisation for every width and seed of ``spec``.

    For each run, :func:`pntk.analysis.compare` gives ``‖Θ − K⊗I‖_F / ‖Θ‖_F`` and its block-diagonal and
    off-diagonal parts, and ``λ_max``, ``λ_min``, ``κ`` of both kernels. Added here is
    ``norm_Theta_diagonal = (‖Θ‖_F² − ‖Θ_{a≠b}‖_F²)^½``, the norm of the block-diagonal ``Θ_aa``; the
    off-diagonal norm ``‖Θ_{a≠b}‖_F`` is ``off_diagonal_error``. Each metric is summarised over seeds at each
    width, and a power law in the width is fitted over all runs (``λ_min`` and ``κ`` over the runs whose
    eNTK is non-singular at the rounding level of the kernels' dtype, see :func:`nonsingular`).

    Args:
        spec: what to sweep.
        device: where models and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per run.

    Returns:
        A JSON-able dict: ``spec``; ``N``, ``O``; ``runs`` (one dict per width and seed with ``width``,
        ``seed``, ``P``, the comparison fields, ``norm_Theta_diagonal``, ``nonsingular``, ``seconds_entk``,
        ``seconds_pntk``);
        ``by_width`` (per width: ``width``, ``P`` and ``{mean, std, min, max, count}`` of each of
        :data:`METRICS`); ``fits`` (``{slope, intercept, points}`` of each of :data:`FITTED` against the
        width, ``None`` when fewer than two widths qualify); ``seconds``.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.N, data_root=data_root, device=device)
    runs = []
    for width in spec.widths:
        for seed in spec.seeds:
            model = make_model(
                spec.model,
                width=width,
                depth=spec.depth,
                data=data,
                parametrization=spec.parametrization,
                seed=seed,
                device=device,
            )
            pair = kernel_pair(model, data.x, dtype=spec.dtype)
            run: dict[str, Any]
            run = {"width": width, "seed": seed, "P": num_parameters(model), **compare(pair.Theta, pair.K).to_dict()}
            run["norm_Theta_diagonal"] = math.sqrt(max(run["norm_Theta"] ** 2 - run["off_diagonal_error"] ** 2, 0.0))
            n = spec.N * run["O"]
            run["nonsingular"] = nonsingular(run["lambda_min_Theta"], run["lambda_max_Theta"], n, spec.dtype)
            run.update(seconds_entk=pair.seconds_entk, seconds_pntk=pair.seconds_pntk)
            runs.append(run)
            log_line(
                log,
                f"{spec.model}/{spec.dataset} width {width:>5} seed {seed}: rel. error {run['relative_error']:.4f}, "
                f"λ_max rel. error {run['lambda_max_relative_error']:.4f} "
                f"(eNTK {pair.seconds_entk:.1f} s, pNTK {pair.seconds_pntk:.2f} s)",
            )
    return {
        "experiment": "width_sweep",
        "spec": jsonable(spec),
        "N": spec.N,
        "O": data.num_classes,
        "runs": runs,
        "by_width": [_summary(width, [r for r in runs if r["width"] == width]) for width in spec.widths],
        "fits": {metric: _fit(runs, metric) for metric in FITTED},
        "seconds": time.perf_counter() - start,
    }


def nonsingular(lambda_min: float, lambda_max: float, n: int, dtype: str) -> bool:
    """Whether an ``n × n`` kernel computed in ``dtype`` is numerically non-singular: ``λ_min > n·ε·λ_max``.

    ``ε`` is that of the dtype the kernel was computed in (``1.2e-7`` for float32): a smaller ``λ_min`` is
    rounding noise, so its relative error and ``κ`` say nothing about the approximation.
    """
    return lambda_min > n * torch.finfo(torch_dtype(dtype)).eps * lambda_max


def _usable(run: dict, metric: str) -> float | None:
    if metric in NEEDS_NONSINGULAR and not run["nonsingular"]:
        return None
    return run[metric]


def _summary(width: int, runs: list[dict]) -> dict:
    return {"width": width, "P": runs[0]["P"], **{m: spread(_usable(r, m) for r in runs) for m in METRICS}}


def _fit(runs: list[dict], metric: str) -> dict | None:
    pairs = [(r["width"], v) for r in runs if (v := _usable(r, metric)) is not None]
    try:
        return loglog_slope(*zip(*pairs)).to_dict() if pairs else None
    except ValueError:  # fewer than two widths with positive values
        return None
