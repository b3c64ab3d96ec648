"""Figures of the experiments, drawn from their result dicts and written as PNG.

matplotlib is imported when a figure is drawn, and through its object-oriented API with the Agg canvas
only: drawing never touches pyplot's global state or the backend of an interactive session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .results import model_label
from .stats import PowerLaw

DPI = 120


def _figure(rows: int, cols: int, title: str) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * cols, 4.0 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fig.suptitle(title, fontsize=13)
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _finite(values: list) -> np.ndarray:
    """Values as floats, ``None`` and infinities as NaN (which matplotlib leaves out of lines and limits)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    v[~np.isfinite(v)] = np.nan
    return v


def _log_x(ax: Any, values: list[int], xlabel: str) -> None:
    """A logarithmic x axis (base 2 when every value is a power of two) ticked at exactly ``values``."""
    from matplotlib.ticker import NullLocator

    powers_of_two = all(v > 0 and v & (v - 1) == 0 for v in values)
    ax.set_xscale("log", base=2 if powers_of_two else 10)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)


def _log_width_axis(ax: Any, widths: list[int], ylabel: str, title: str) -> None:
    _log_x(ax, widths, "width")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _band(ax: Any, x: list[int], stats: list[dict], label: str, *, fit: dict | None = None, **style: Any) -> None:
    """Mean over seeds as a line with markers, min–max as a shaded band, and a fitted power law dashed."""
    keep = [i for i, s in enumerate(stats) if s["count"]]
    if not keep:
        return
    xs = np.array([x[i] for i in keep], dtype=float)
    mean = np.array([stats[i]["mean"] for i in keep])
    lo, hi = np.array([stats[i]["min"] for i in keep]), np.array([stats[i]["max"] for i in keep])
    (line,) = ax.plot(xs, mean, marker="o", ms=4, label=label, **style)
    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if fit is not None:
        law = PowerLaw(**fit)
        ax.plot(xs, law(xs), ls="--", lw=1, color=line.get_color(), label=f"fit: slope {law.slope:+.2f}")


def width_sweep_figure(result: dict, path: str | Path) -> Path:
    """Four panels against width (log-log): relative Frobenius error and its parts, the norms of the
    block-diagonal and off-diagonal parts of ``Θ``, the extreme eigenvalues of ``Θ`` and ``K``, and the
    relative errors of ``λ_max``, ``λ_min`` and ``κ``. Lines are means over seeds, bands their min–max."""
    spec, rows, fits = result["spec"], result["by_width"], result["fits"]
    widths = [r["width"] for r in rows]

    def col(metric: str) -> list[dict]:
        return [r[metric] for r in rows]

    fig, (a, b, c, d) = _figure(
        2,
        2,
        f"{model_label(spec)}: eNTK Θ vs pNTK K at initialisation "
        f"(N = {result['N']}, O = {result['O']}, {len(spec['seeds'])} seeds; band: min–max)",
    )
    _band(a, widths, col("relative_error"), "‖Θ − K⊗I‖ / ‖Θ‖", fit=fits["relative_error"], color="C0")
    _band(a, widths, col("relative_diagonal_error"), "block-diagonal part ‖Θ_aa − K‖ / ‖Θ‖", color="C1")
    _band(a, widths, col("relative_off_diagonal_error"), "off-diagonal part ‖Θ_a≠b‖ / ‖Θ‖", color="C2")
    a.set_yscale("log")
    _log_width_axis(a, widths, "relative Frobenius error", "approximation error")
    for metric, label, color in (
        ("norm_Theta_diagonal", "‖Θ_aa‖ (block-diagonal)", "C1"),
        ("off_diagonal_error", "‖Θ_a≠b‖ (off-diagonal)", "C2"),
    ):
        _band(b, widths, col(metric), label, fit=fits[metric], color=color)
    b.set_yscale("log")
    _log_width_axis(b, widths, "Frobenius norm", "parts of Θ")
    for metric, label, color in (
        ("lambda_max_Theta", "λ_max(Θ)", "C0"),
        ("lambda_max_K", "λ_max(K)", "C1"),
        ("lambda_min_Theta", "λ_min(Θ)", "C2"),
        ("lambda_min_K", "λ_min(K)", "C3"),
    ):
        _band(c, widths, col(metric), label, color=color, ls="-" if "Theta" in metric else ":")
    c.set_yscale("log")
    _log_width_axis(c, widths, "eigenvalue", "extreme eigenvalues")
    for metric, label, color in (
        ("lambda_max_relative_error", "λ_max", "C0"),
        ("lambda_min_relative_error", "λ_min", "C2"),
        ("cond_relative_error", "κ = λ_max/λ_min", "C4"),
    ):
        _band(d, widths, col(metric), label, fit=fits[metric], color=color)
    d.set_yscale("log")
    _log_width_axis(d, widths, "|value(K) − value(Θ)| / value(Θ)", "spectral relative errors (non-singular Θ)")
    for ax in (a, b, c, d):
        ax.legend(fontsize=8)
    return _save(fig, path)


def trajectory_figure(result: dict, path: str | Path) -> Path:
    """Three panels against training epoch: loss and test accuracy, the relative Frobenius error and its
    parts, and the relative errors of the extreme eigenvalues and ``κ``."""
    from matplotlib.ticker import MaxNLocator

    spec, rows = result["spec"], result["checkpoints"]
    epochs = [r["epoch"] for r in rows]
    fig, (a, b, c) = _figure(
        1,
        3,
        f"{model_label(spec)}, width {spec['width']} through training "
        f"({spec['train']['optimizer']}, {spec['train']['loss']} loss; kernels on N = {result['N']} training inputs)",
    )
    a.plot(range(len(result["losses"])), result["losses"], marker=".", color="C0", label="train loss")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    a.set_title("training", fontsize=11)
    twin = a.twinx()
    twin.plot(epochs, [r["test_accuracy"] for r in rows], marker="s", color="C3", label="test accuracy")
    twin.set_ylabel("test accuracy")
    a.legend(handles=a.get_lines() + twin.get_lines(), fontsize=8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    for metric, label, color in (
        ("relative_error", "‖Θ − K⊗I‖ / ‖Θ‖", "C0"),
        ("relative_diagonal_error", "block-diagonal part", "C1"),
        ("relative_off_diagonal_error", "off-diagonal part", "C2"),
    ):
        b.plot(epochs, _finite([r[metric] for r in rows]), marker="o", label=label, color=color)
    for metric, label, color in (
        ("lambda_max_relative_error", "λ_max", "C0"),
        ("lambda_min_relative_error", "λ_min", "C2"),
        ("cond_relative_error", "κ", "C4"),
    ):
        c.plot(epochs, _finite([r[metric] for r in rows]), marker="o", label=label, color=color)
    for ax, ylabel, title in (
        (b, "relative Frobenius error", "approximation error"),
        (c, "relative error", "spectrum"),
    ):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def regression_figure(result: dict, path: str | Path) -> Path:
    """Two panels against width: test accuracy of each predictor, and the relative difference of the pNTK
    predictors from the eNTK predictor with and without a ridge (log-log)."""
    spec, rows = result["spec"], result["widths"]
    widths = [r["width"] for r in rows]
    large = result.get("large")
    note = "" if not large else f"; pNTK alone at N = {large['N']}: test acc. {large['accuracy']:.3f}"
    fig, (a, b) = _figure(
        1,
        2,
        f"Kernel regression, {model_label(spec)}\n"
        f"N_train = {result['N_train']}, N_test = {result['N_test']}, ridge = {spec['ridge']:g}·tr K/N{note}",
    )
    for key, label, style in (
        ("entk", "eNTK-KR", dict(color="C0", marker="o")),
        ("pntk", "pNTK-KR (per output)", dict(color="C1", marker="s", ls="--")),
        ("entk_ridge", "eNTK-KRR (ridge)", dict(color="C0", marker="^", ls=":")),
        ("pntk_ridge", "pNTK-KRR (ridge)", dict(color="C1", marker="v", ls=":")),
        ("network", "trained network", dict(color="C3", marker="D")),
    ):
        a.plot(widths, [r["accuracy"][key] for r in rows], label=label, **style)
    if large:
        a.axhline(large["accuracy"], color="C2", lw=1, label=f"pNTK-KR, N = {large['N']} (eNTK too large)")
    _log_width_axis(a, widths, "test accuracy", "test accuracy")
    for key, label, style in (
        ("pntk", "ridgeless: K", dict(color="C1", marker="s")),
        ("pntk_ridge", "ridge: K = J_g J_gᵀ, g = Σf/√O", dict(color="C4", marker="v")),
        ("sum_ridge", "ridge: O·K (summed logits Σf)", dict(color="C5", marker="x")),
    ):
        b.plot(widths, _finite([r["relative_difference"][key] for r in rows]), label=label, **style)
    b.set_yscale("log")
    _log_width_axis(b, widths, "‖f_pNTK − f_eNTK‖ / ‖f_eNTK‖", "pNTK-KR vs eNTK-KR predictions")
    for ax in (a, b):
        ax.legend(fontsize=8)
    return _save(fig, path)


def timing_figure(result: dict, path: str | Path) -> Path:
    """Three log-log panels: wall time against ``N``, wall time against ``O``, kernel bytes against ``N``."""
    spec, fits = result["spec"], result["fits"]
    fig, (a, b, c) = _figure(
        1,
        3,
        f"Cost of eNTK vs pNTK: {model_label(spec)}, width {spec['width']}, {spec['dtype']}",
    )
    for ax, rows, axis in ((a, result["against_N"], "N"), (b, result["against_O"], "O")):
        x = [r[axis] for r in rows]
        for name, label, color in (("entk", "eNTK Θ", "C0"), ("pntk", "pNTK K", "C1")):
            ax.plot(
                x,
                [r[f"seconds_{name}"] for r in rows],
                marker="o",
                color=color,
                label=f"{label} (slope {fits[f'{name}_vs_{axis}']['slope']:+.2f})",
            )
        fixed = f"O = {rows[0]['O']}" if axis == "N" else f"N = {rows[0]['N']}"
        ax.set_title(f"time against {axis} ({fixed})", fontsize=11)
        _log_x(ax, x, axis)
        ax.set_ylabel("wall time (s)")
    rows = result["against_N"]
    x = [r["N"] for r in rows]
    c.plot(x, [r["bytes_entk"] for r in rows], marker="o", color="C0", label="eNTK: N²·O² numbers")
    c.plot(x, [r["bytes_pntk"] for r in rows], marker="o", color="C1", label="pNTK: N² numbers")
    c.set_title(f"kernel size (O = {rows[0]['O']})", fontsize=11)
    _log_x(c, x, "N")
    c.set_ylabel("bytes")
    for ax in (a, b, c):
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


#: The figure of each experiment's result, by its ``"experiment"`` key.
FIGURES = {
    "width_sweep": width_sweep_figure,
    "trajectory": trajectory_figure,
    "regression": regression_figure,
    "timing": timing_figure,
}


def figure(result: dict, path: str | Path) -> Path:
    """Draw the figure of any experiment's result dict to ``path`` (PNG); returns the path."""
    return FIGURES[result["experiment"]](result, path)
