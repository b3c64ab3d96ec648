"""Width sweep at initialisation: how well ``K ⊗ I`` approximates the eNTK ``Θ`` as networks widen."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis import Comparison, compare
from ..analysis._linalg import default_rtol
from .kernel_pair import KernelPair, kernel_pair
from .networks import load_split, num_parameters, spec_model
from .progress import Log, log_line
from .results import file_stem, result_type
from .stats import Rate, Spread, bootstrap_rate, spread

#: Metrics whose rate against width is fitted (:func:`bootstrap_rate`); λ_min and κ over resolved runs only.
FITTED = (
    "relative_error",
    "off_diagonal_ratio",
    "norm_Theta_diagonal",
    "off_diagonal_error",
    "lambda_max_relative_error",
    "lambda_min_relative_error",
    "cond_relative_error",
)

#: Metrics that mean something only where ``λ_min(Θ)`` is above the kernels' noise floor.
NEEDS_RESOLVED = ("lambda_min_relative_error", "cond_relative_error")


@dataclass(frozen=True)
class WidthSweep:
    """One width sweep: a model family on ``N`` inputs, several widths, model seeds and input sets.

    Attributes:
        dataset: a dataset name (see :func:`pntk.data.load_dataset`); ``N`` samples of its training split.
        model: a zoo name (see :func:`pntk.models.build_model`).
        widths: ascending widths.
        seeds: model initialisation seeds.
        data_seeds: seeds of the input sets: each draws a different stratified subset of ``N`` inputs.
        N: number of inputs; the eNTK is an ``[N·O, N·O]`` matrix whose spectrum is computed densely.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` (He-scaled), ``"ntk"`` or ``"torch"``.
        dtype: the dtype the kernels are computed in (see NOTE [Kernel precision] in :mod:`.kernel_pair`).
    """

    dataset: str
    model: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seeds: tuple[int, ...] = (0, 1)
    N: int = 64
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem (see :func:`.results.file_stem`), e.g. ``width_sweep_mnist1d_mlp``."""
        return file_stem("width_sweep", self.dataset, self.model, self.parametrization)


@dataclass(frozen=True)
class SweepRun:
    """One network of a sweep: its comparison of ``Θ`` with ``K ⊗ I`` and what is derived from it.

    Attributes:
        width: the model's width.
        seed: its initialisation seed.
        data_seed: the seed of its input set.
        P: trainable parameters.
        comparison: :func:`pntk.analysis.compare` of its eNTK and pNTK.
        norm_Theta_diagonal: ``‖Θ_aa‖_F = (‖Θ‖_F² − ‖Θ_a≠b‖_F²)^½``, the block-diagonal part.
        off_diagonal_ratio: ``‖Θ_a≠b‖_F / ‖Θ_aa‖_F``.
        lambda_max_gap: ``|λ_max(Θ) − λ_max(K)|``, bounded by ``‖Θ − K⊗I‖_F`` (Weyl).
        lambda_min_resolved: whether ``λ_min(Θ)`` is above ``max(n·ε₆₄·λ_max, noise floor of the dtype)``.
        seconds_entk: wall time of the eNTK.
        seconds_pntk: wall time of the pNTK.
    """

    width: int
    seed: int
    data_seed: int
    P: int
    comparison: Comparison
    norm_Theta_diagonal: float
    off_diagonal_ratio: float
    lambda_max_gap: float
    lambda_min_resolved: bool
    seconds_entk: float
    seconds_pntk: float

    @property
    def lambda_max_bound_holds(self) -> bool:
        """Whether ``|λ_max(Θ) − λ_max(K)| ≤ ‖Θ − K⊗I‖_F`` (up to float64 rounding of both sides)."""
        return self.lambda_max_gap <= self.comparison.error * (1 + 1e-9) + 1e-12 * self.comparison.norm_Theta

    def value(self, metric: str) -> float:
        """A metric of this run: a field of the run or of its comparison; ``nan`` for λ_min and κ errors
        of an unresolved run and for missing values."""
        if metric in NEEDS_RESOLVED and not self.lambda_min_resolved:
            return math.nan
        v = getattr(self, metric) if hasattr(self, metric) else getattr(self.comparison, metric)
        return math.nan if v is None else float(v)


@result_type("width_sweep")
@dataclass(frozen=True)
class SweepResult:
    """What :func:`width_sweep` measured.

    Attributes:
        spec: the sweep.
        N: inputs per input set.
        O: outputs.
        runs: one per width, input set and seed.
        rates: the :class:`~.stats.Rate` of each of :data:`FITTED` (``None`` when too few widths qualify).
        seconds: wall time of the sweep.
    """

    spec: WidthSweep
    N: int
    O: int
    runs: list[SweepRun]
    rates: dict[str, Rate | None] = field(default_factory=dict)
    seconds: float = 0.0

    def values(self, metric: str) -> np.ndarray:
        """``[W, D, S]`` the metric at each width, input set and seed of the spec."""
        spec = self.spec
        out = np.full((len(spec.widths), len(spec.data_seeds), len(spec.seeds)), np.nan)
        for r in self.runs:
            out[spec.widths.index(r.width), spec.data_seeds.index(r.data_seed), spec.seeds.index(r.seed)] = r.value(
                metric
            )
        return out

    def spreads(self, metric: str) -> list[Spread]:
        """The :class:`~.stats.Spread` of the metric over the runs at each width."""
        return [spread(v.ravel()) for v in self.values(metric)]

    def P(self, width: int) -> int:
        """The parameter count at ``width``."""
        return next(r.P for r in self.runs if r.width == width)


def width_sweep(
    spec: WidthSweep, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None
) -> SweepResult:
    """Compare the eNTK ``Θ`` and the pNTK ``K`` at initialisation for every width, input set and seed.

    For each run, :func:`pntk.analysis.compare` gives ``‖Θ − K⊗I‖_F / ‖Θ‖_F``, its block-diagonal and
    off-diagonal parts, and ``λ_max``, ``λ_min``, ``κ`` of both kernels. Rates against width with
    bootstrap intervals over input sets and seeds (:func:`.stats.bootstrap_rate`) are fitted for
    :data:`FITTED`.

    Args:
        spec: what to sweep.
        device: where models and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per run.

    Returns:
        A :class:`SweepResult`.
    """
    start = time.perf_counter()
    runs = []
    O = 0
    for data_seed in spec.data_seeds:
        data = load_split(spec.dataset, split="train", N=spec.N, seed=data_seed, data_root=data_root, device=device)
        O = data.num_classes
        for width in spec.widths:
            for seed in spec.seeds:
                model = spec_model(spec, width=width, seed=seed, data=data, device=device)
                pair = kernel_pair(model, data.x, dtype=spec.dtype)
                runs.append(sweep_run(width, seed, data_seed, num_parameters(model), pair))
                c = runs[-1].comparison
                log_line(
                    log,
                    f"{spec.model}/{spec.dataset} width {width:>5} seed {seed} inputs {data_seed}: rel. error "
                    f"{c.relative_error:.4f}, λ_max rel. error {c.lambda_max_relative_error:.4f} "
                    f"(eNTK {pair.seconds_entk:.1f} s, pNTK {pair.seconds_pntk:.2f} s)",
                )
    return sweep_result(spec, O, runs, time.perf_counter() - start)


def sweep_result(spec: WidthSweep, O: int, runs: list[SweepRun], seconds: float = 0.0) -> SweepResult:
    """The :class:`SweepResult` of ``runs``, with the rate of each of :data:`FITTED` fitted."""
    result = SweepResult(spec, spec.N, O, runs)
    rates = {metric: bootstrap_rate(result.values(metric), spec.widths) for metric in FITTED}
    return SweepResult(spec, spec.N, O, runs, rates, seconds)


def sweep_run(width: int, seed: int, data_seed: int, P: int, pair: KernelPair) -> SweepRun:
    """Compare the kernels of one network of a sweep (:func:`pntk.analysis.compare`) and derive its record."""
    c = compare(pair.Theta, pair.K, kernel_dtype=pair.dtype)
    assert c.lambda_max_Theta is not None and c.lambda_min_Theta is not None and c.lambda_max_K is not None
    n = c.N1 * c.O
    floor = max(default_rtol(n) * c.lambda_max_Theta, c.noise_floor_Theta or 0.0)
    diagonal = math.sqrt(max(c.norm_Theta**2 - c.off_diagonal_error**2, 0.0))
    return SweepRun(
        width=width,
        seed=seed,
        data_seed=data_seed,
        P=P,
        comparison=c,
        norm_Theta_diagonal=diagonal,
        off_diagonal_ratio=c.off_diagonal_error / diagonal if diagonal else math.inf,
        lambda_max_gap=abs(c.lambda_max_Theta - c.lambda_max_K),
        lambda_min_resolved=bool(c.lambda_min_Theta > floor),
        seconds_entk=pair.seconds_entk,
        seconds_pntk=pair.seconds_pntk,
    )
