"""Figures of the experiments, drawn from their typed results and written as PNG.

matplotlib is imported when a figure is drawn, and through its object-oriented API with the Agg canvas
only: drawing never touches pyplot's global state or the backend of an interactive session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .regression import RegressionResult
from .results import model_label
from .stats import Rate, Spread
from .timing import TimingResult
from .trajectory import TrajectoryResult
from .width_sweep import SweepResult

DPI = 120


def _figure(rows: int, cols: int, title: str) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * cols, 4.0 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fig.suptitle(title, fontsize=12)
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _log_x(ax: Any, values: list[int], xlabel: str) -> None:
    """A logarithmic x axis (base 2 when every value is a power of two) ticked at exactly ``values``."""
    from matplotlib.ticker import NullLocator

    powers_of_two = all(v > 0 and v & (v - 1) == 0 for v in values)
    ax.set_xscale("log", base=2 if powers_of_two else 10)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)


def _axis(ax: Any, x: list[int], xlabel: str, ylabel: str, title: str, log_y: bool = True) -> None:
    _log_x(ax, x, xlabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def _band(ax: Any, x: list[int], stats: list[Spread], label: str, rate: Rate | None = None, **style: Any) -> None:
    """Mean over runs with markers, min–max shaded, and the fitted rate dashed over the widths it used."""
    keep = [i for i, s in enumerate(stats) if s.count]
    if not keep:
        return
    xs = np.array([x[i] for i in keep], dtype=float)
    mean = np.array([stats[i].mean for i in keep], dtype=float)
    lo = np.array([stats[i].min for i in keep], dtype=float)
    hi = np.array([stats[i].max for i in keep], dtype=float)
    (line,) = ax.plot(xs, mean, marker="o", ms=4, label=label, **style)
    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if rate is not None:
        w = np.array(rate.widths, dtype=float)
        anchor = mean[list(xs).index(w[-1])] if w[-1] in xs else mean[-1]
        ax.plot(w, anchor * (w / w[-1]) ** rate.slope, ls="--", lw=1, color=line.get_color(), label=f"rate {rate}")


def width_sweep_figure(result: SweepResult, path: str | Path) -> Path:
    """Four log-log panels against width: the relative error and its parts with the paper's ``width^{-1/2}``
    for reference, the two parts' norms and their ratio, the extreme eigenvalues, and the spectral errors."""
    spec = result.spec
    widths = list(spec.widths)
    fig, (a, b, c, d) = _figure(
        2,
        2,
        f"{model_label(spec)}: eNTK Θ vs pNTK K at initialisation\n(N = {result.N}, O = {result.O}, "
        f"{len(spec.data_seeds)} input sets × {len(spec.seeds)} seeds; band: min–max)",
    )
    _band(a, widths, result.spreads("relative_error"), "‖Θ − K⊗I‖/‖Θ‖", result.rates.get("relative_error"), color="C0")
    _band(a, widths, result.spreads("relative_diagonal_error"), "block-diagonal part", color="C1")
    _band(a, widths, result.spreads("relative_off_diagonal_error"), "off-diagonal part", color="C2")
    first = result.spreads("relative_error")[0].mean
    if first:
        w = np.array(widths, dtype=float)
        a.plot(w, first * (w / w[0]) ** -0.5, color="k", lw=0.8, ls=":", label="width^-1/2")
    _axis(a, widths, "width", "relative Frobenius error", "approximation error")
    _band(b, widths, result.spreads("norm_Theta_diagonal"), "‖Θ_aa‖", color="C1")
    _band(b, widths, result.spreads("off_diagonal_error"), "‖Θ_a≠b‖", color="C2")
    _band(
        b,
        widths,
        result.spreads("off_diagonal_ratio"),
        "‖Θ_a≠b‖/‖Θ_aa‖",
        result.rates.get("off_diagonal_ratio"),
        color="C3",
    )
    _axis(b, widths, "width", "Frobenius norm / ratio", "parts of Θ")
    for metric, label, color in (
        ("lambda_max_Theta", "λ_max(Θ)", "C0"),
        ("lambda_max_K", "λ_max(K)", "C1"),
        ("lambda_min_Theta", "λ_min(Θ)", "C2"),
        ("lambda_min_K", "λ_min(K)", "C3"),
    ):
        _band(c, widths, result.spreads(metric), label, color=color, ls="-" if "Theta" in metric else ":")
    _axis(c, widths, "width", "eigenvalue", "extreme eigenvalues")
    _band(
        d,
        widths,
        result.spreads("lambda_max_relative_error"),
        "λ_max",
        result.rates.get("lambda_max_relative_error"),
        color="C0",
    )
    _band(d, widths, result.spreads("lambda_min_relative_error"), "λ_min (resolved runs)", color="C2")
    _band(d, widths, result.spreads("cond_relative_error"), "κ (resolved runs)", color="C4")
    _axis(d, widths, "width", "|value(K) − value(Θ)| / value(Θ)", "spectral relative errors")
    return _save(fig, path)


def trajectory_figure(result: TrajectoryResult, path: str | Path) -> Path:
    """Three panels against epoch, one line per width (mean over seeds): the relative error, the test
    accuracy, and ``‖Σ_a W_a‖/‖W‖_F`` of the readout."""
    from matplotlib.ticker import MaxNLocator

    spec = result.spec
    loss = getattr(spec.train.loss, "value", spec.train.loss)
    fig, axes = _figure(
        1,
        3,
        f"{model_label(spec)} through training ({loss} loss, {len(spec.seeds)} seeds; kernels on N = {result.N})",
    )
    panels = (
        (lambda c: c.comparison.relative_error, "‖Θ − K⊗I‖/‖Θ‖", True),
        (lambda c: c.test_accuracy, "test accuracy", False),
        (lambda c: c.readout_sum_ratio, "‖Σ_a W_a‖/‖W‖_F (readout)", False),
    )
    for ax, (get, ylabel, log_y) in zip(axes, panels):
        for i, w in enumerate(spec.widths):
            runs = result.at(w)
            epochs = [c.epoch for c in runs[0].checkpoints]
            values = np.array([[get(c) for c in r.checkpoints] for r in runs], dtype=float)
            (line,) = ax.plot(epochs, values.mean(0), marker="o", ms=4, color=f"C{i}", label=f"width {w}")
            ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
        if log_y:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def regression_figure(result: RegressionResult, path: str | Path) -> Path:
    """Two panels: test accuracy of each predictor against width, and the ridge sweep at the largest width
    (distance of ``K`` and ``O·K`` ridge predictions from the eNTK's at the same ridge)."""
    spec = result.spec
    widths = list(spec.widths)
    fig, (a, b) = _figure(
        1,
        2,
        f"Kernel regression with trained networks' kernels, {model_label(spec)}\n"
        f"N_train = {result.N_train}, N_test = {result.N_test}, {len(spec.seeds)} seeds",
    )
    for get, label, style in (
        (lambda r: r.accuracy_entk, "eNTK-KR", dict(color="C0", marker="o")),
        (lambda r: r.accuracy_pntk, "pNTK-KR (per output)", dict(color="C1", marker="s", ls="--")),
        (lambda r: r.accuracy_network, "trained network", dict(color="C3", marker="D")),
    ):
        a.plot(widths, [np.mean([get(r) for r in result.at(w)]) for w in widths], label=label, **style)
    _axis(a, widths, "width", "test accuracy", "test accuracy (mean over seeds)", log_y=False)
    last = result.at(widths[-1])
    ridges = [p.relative for p in last[0].ridge_sweep]
    for get, label, color in (
        (lambda p: p.difference_K, "K (scale of Θ's diagonal)", "C1"),
        (lambda p: p.difference_OK, "O·K (summed logits)", "C5"),
    ):
        b.plot(
            ridges,
            np.mean([[get(p) for p in r.ridge_sweep] for r in last], axis=0),
            marker="o",
            color=color,
            label=label,
        )
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("ridge λ / (tr K / N)")
    b.set_ylabel("‖f − f_Θ‖ / ‖f_Θ‖ at the same λ")
    b.set_title(f"ridge sweep, width {widths[-1]}", fontsize=10)
    b.grid(True, alpha=0.3)
    b.legend(fontsize=7)
    return _save(fig, path)


def timing_figure(result: TimingResult, path: str | Path) -> Path:
    """Three log-log panels: time against ``N`` and against ``O`` (median, min–max bars), and kernel bytes."""
    spec = result.spec
    fig, (a, b, c) = _figure(
        1, 3, f"Cost of eNTK vs pNTK: {spec.model} width {spec.width}, {spec.dtype}, {result.device}"
    )
    for ax, rows, axis in ((a, result.against_N, "N"), (b, result.against_O, "O")):
        x = [getattr(r, axis) for r in rows]
        for name, label, color in (("entk", "eNTK Θ", "C0"), ("pntk", "pNTK K", "C1")):
            t = [np.asarray(getattr(r, f"seconds_{name}")) for r in rows]
            med = np.array([np.median(v) for v in t])
            err = np.array([[m - v.min() for m, v in zip(med, t)], [v.max() - m for m, v in zip(med, t)]])
            extra = ""
            if axis == "O":
                e = result.exponent_entk if name == "entk" else result.exponent_pntk
                extra = f" (∝ O^{e.slope:.2f} [{e.lo:.2f}, {e.hi:.2f}])"
            ax.errorbar(x, med, yerr=err, marker="o", color=color, capsize=2, label=label + extra)
        fixed = f"O = {rows[0].O}" if axis == "N" else f"N = {rows[0].N}"
        _axis(ax, x, axis, "wall time (s)", f"time against {axis} ({fixed})")
    x = [r.N for r in result.against_N]
    c.plot(x, [r.bytes_entk for r in result.against_N], marker="o", color="C0", label="eNTK: N²·O² numbers")
    c.plot(x, [r.bytes_pntk for r in result.against_N], marker="o", color="C1", label="pNTK: N² numbers")
    _axis(c, x, "N", "bytes (arithmetic)", f"kernel size (O = {result.against_N[0].O})")
    return _save(fig, path)


#: The figure of each result type.
FIGURES = {
    SweepResult: width_sweep_figure,
    TrajectoryResult: trajectory_figure,
    RegressionResult: regression_figure,
    TimingResult: timing_figure,
}


def figure(result: object, path: str | Path) -> Path:
    """Draw the figure of any experiment's result to ``path`` (PNG); returns the path."""
    return FIGURES[type(result)](result, path)  # type: ignore[operator]
