"""Cost of the pNTK against the eNTK: repeated wall times against ``N`` and ``O``, and memory, apart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..kernels import entk, pntk
from .networks import load_split, make_model, num_parameters
from .progress import Log, log_line
from .results import result_type
from .runtime import timed, torch_dtype
from .stats import interval


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
        repeats: timed runs of each size, after one warm-up run.
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
    repeats: int = 5
    seed: int = 0
    depth: int | None = None
    dtype: str = "float32"

    @property
    def name(self) -> str:
        """A file-name stem, e.g. ``timing_mnist1d_mlp``."""
        return f"timing_{self.dataset}_{self.model}"


@dataclass(frozen=True)
class TimingRow:
    """Both kernels at one ``(N, O)``.

    Attributes:
        N: inputs.
        O: outputs.
        P: trainable parameters.
        seconds_entk: wall times of the eNTK, one per repeat.
        seconds_pntk: wall times of the pNTK, one per repeat.
        bytes_entk: bytes of the eNTK result, ``N²·O²·itemsize`` (arithmetic, not a measurement).
        bytes_pntk: bytes of the pNTK result, ``N²·itemsize``.
        peak_bytes_entk: peak device memory while computing the eNTK, on a GPU; ``None`` on a CPU.
        peak_bytes_pntk: the same for the pNTK.
    """

    N: int
    O: int
    P: int
    seconds_entk: list[float]
    seconds_pntk: list[float]
    bytes_entk: int
    bytes_pntk: int
    peak_bytes_entk: int | None = None
    peak_bytes_pntk: int | None = None

    @property
    def ratio(self) -> tuple[float, float, float]:
        """``(median, lo, hi)`` of eNTK time / pNTK time over the pairs of repeats."""
        r = np.divide.outer(np.asarray(self.seconds_entk), np.asarray(self.seconds_pntk)).ravel()
        return interval(r)


@dataclass(frozen=True)
class OExponent:
    """The exponent of time against ``O``: slope of log median time on log ``O``, with the range of slopes
    over every choice of one repeat per ``O`` (sampled).

    Attributes:
        slope: the slope of the medians.
        lo: 2.5th percentile of the resampled slopes.
        hi: 97.5th percentile.
    """

    slope: float
    lo: float
    hi: float


@result_type("timing")
@dataclass(frozen=True)
class TimingResult:
    """What :func:`timing` measured.

    Attributes:
        spec: the experiment.
        device: where it ran.
        against_N: one row per ``N``.
        against_O: one row per ``O``.
        exponent_entk: the eNTK's time against ``O``.
        exponent_pntk: the pNTK's time against ``O``.
        seconds: wall time.
    """

    spec: Timing
    device: str
    against_N: list[TimingRow]
    against_O: list[TimingRow]
    exponent_entk: OExponent
    exponent_pntk: OExponent
    seconds: float = 0.0


def o_exponent(Os: list[int], seconds: list[list[float]], *, replicates: int = 2000, seed: int = 0) -> OExponent:
    """The exponent of time in ``O`` with an interval from resampling one repeat per ``O``.

    Example:
        >>> o = o_exponent([1, 2, 4], [[1.0, 1.1], [2.0, 2.2], [4.0, 4.4]])
        >>> round(o.slope, 6), o.lo <= 1.0 <= o.hi
        (1.0, True)
    """
    u = np.log(np.asarray(Os, dtype=np.float64))
    t = [np.asarray(s, dtype=np.float64) for s in seconds]

    def slope(v: np.ndarray) -> float:
        return float(np.polyfit(u, np.log(v), 1)[0])

    rng = np.random.default_rng(seed)
    slopes = [slope(np.array([s[rng.integers(len(s))] for s in t])) for _ in range(replicates)]
    lo, hi = np.quantile(slopes, [0.025, 0.975])
    return OExponent(slope(np.array([np.median(s) for s in t])), float(lo), float(hi))


def timing(spec: Timing, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None) -> TimingResult:
    """Time ``pntk.entk`` and ``pntk.pntk`` against ``N`` and against ``O``, each ``spec.repeats`` times.

    Times are wall-clock times after one warm-up run on the smallest size, on whatever machine runs this,
    to be read as ratios and exponents; memory is reported apart: the bytes of each result (arithmetic) and,
    on a GPU, the peak memory allocated while computing it.

    Args:
        spec: what to time.
        device: where models, data and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per size.

    Returns:
        A :class:`TimingResult`.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=max(*spec.Ns, spec.N_for_O), data_root=data_root, device=device)
    dt = torch_dtype(spec.dtype)
    cuda = torch.device(device).type == "cuda"

    def measure(N: int, O: int) -> TimingRow:
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
        seconds: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        peaks: dict[str, int | None] = {}
        for name, fn in (("entk", entk), ("pntk", pntk)):
            fn(model, x[:2], dtype=dt)  # warm-up: first-call overheads are not the kernel's cost
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            runs = [timed(partial(fn, model, x, dtype=dt)) for _ in range(spec.repeats)]
            seconds[name] = [s for _, s in runs]
            sizes[name] = runs[0][0].numel() * runs[0][0].element_size()
            peaks[name] = int(torch.cuda.max_memory_allocated(device)) if cuda else None
        row = TimingRow(
            N,
            O,
            num_parameters(model),
            seconds["entk"],
            seconds["pntk"],
            sizes["entk"],
            sizes["pntk"],
            peaks["entk"],
            peaks["pntk"],
        )
        ratio = row.ratio
        log_line(
            log,
            f"timing {spec.model}/{spec.dataset} width {spec.width} N {N:>4} O {O:>3}: eNTK "
            f"{np.median(row.seconds_entk):.3f} s, pNTK {np.median(row.seconds_pntk):.3f} s "
            f"(×{ratio[0]:.1f} [{ratio[1]:.1f}, {ratio[2]:.1f}])",
        )
        return row

    against_N = [measure(N, data.num_classes) for N in spec.Ns]
    against_O = [measure(spec.N_for_O, O) for O in spec.Os]
    Os = [r.O for r in against_O]
    return TimingResult(
        spec,
        device,
        against_N,
        against_O,
        o_exponent(Os, [r.seconds_entk for r in against_O]),
        o_exponent(Os, [r.seconds_pntk for r in against_O]),
        time.perf_counter() - start,
    )
