"""Summaries of repeated measurements: spread over seeds and power laws fitted on log-log axes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """A least-squares fit ``log y = slope · log x + intercept``, i.e. ``y ≈ e^intercept · x^slope``.

    Attributes:
        slope: the exponent; ``-0.5`` means ``y ∝ x^{-1/2}``.
        intercept: natural log of the prefactor.
        points: how many ``(x, y)`` pairs entered the fit.
        stderr: the standard error of the slope from the residuals, ``nan`` with only two points.
    """

    slope: float
    intercept: float
    points: int
    stderr: float = float("nan")

    @property
    def significantly_negative(self) -> bool:
        """Whether the slope is below zero by more than two standard errors (about 95% confidence)."""
        return bool(self.slope + 2 * self.stderr < 0)

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted ``y`` at ``x``."""
        return np.exp(self.intercept) * np.asarray(x, dtype=np.float64) ** self.slope

    def to_dict(self) -> dict[str, float | int]:
        """The fields as plain numbers."""
        return {"slope": self.slope, "intercept": self.intercept, "points": self.points, "stderr": self.stderr}


def loglog_slope(x: Iterable[float], y: Iterable[float]) -> PowerLaw:
    """Fit ``y ≈ c · x^slope`` by ``np.polyfit`` on ``(log x, log y)``, skipping pairs that are not positive.

    Args:
        x: ``[n]`` positive abscissae, e.g. widths (repeats allowed: one pair per seed).
        y: ``[n]`` values, e.g. relative errors; pairs with a non-finite or non-positive value are skipped.

    Returns:
        A :class:`PowerLaw`.

    Raises:
        ValueError: fewer than two distinct ``x`` remain.

    Example:
        >>> fit = loglog_slope([16, 64, 256], [0.4, 0.2, 0.1])
        >>> round(fit.slope, 6), round(float(fit(1024)), 6), round(fit.stderr, 6)
        (-0.5, 0.05, 0.0)
    """
    x, y = np.asarray(list(x), dtype=np.float64), np.asarray(list(y), dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[keep]).size < 2:
        raise ValueError(f"a log-log fit needs positive values at two distinct x at least; got x={x}, y={y}")
    u, v = np.log(x[keep]), np.log(y[keep])
    slope, intercept = np.polyfit(u, v, 1)
    n = u.size
    residual = v - (slope * u + intercept)
    stderr = np.sqrt(residual @ residual / (n - 2) / np.sum((u - u.mean()) ** 2)) if n > 2 else np.nan
    return PowerLaw(float(slope), float(intercept), int(n), float(stderr))


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, standard deviation, min and max of the finite values (e.g. one per seed).

    Returns:
        ``{"mean", "std", "min", "max", "count"}``; the statistics are ``None`` when no value is finite.

    Example:
        >>> spread([1.0, 3.0, float("inf"), None])
        {'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0, 'count': 2}
    """
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "count": int(v.size),
    }
