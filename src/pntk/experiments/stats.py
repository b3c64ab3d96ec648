"""Summaries of repeated measurements: spreads, power laws on log-log axes, bootstrap intervals of rates
against a stated rate, McNemar's test of two classifiers, and intervals of repeated timings."""

from __future__ import annotations

import enum
import math
import warnings
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


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation, min and max of the finite values of repeated runs (``None`` when none).

    Attributes:
        mean: the mean.
        std: the (population) standard deviation.
        min: the smallest value.
        max: the largest value.
        count: how many values were finite.
    """

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    count: int


def spread(values: Iterable[float | None]) -> Spread:
    """The :class:`Spread` of the finite values (e.g. one per seed).

    Example:
        >>> spread([1.0, 3.0, float("inf"), None])
        Spread(mean=2.0, std=1.0, min=1.0, max=3.0, count=2)
    """
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Spread(None, None, None, None, 0)
    return Spread(float(v.mean()), float(v.std()), float(v.min()), float(v.max()), int(v.size))


# NOTE: [Bootstrap of a rate]
# A width sweep measures a metric for every width, model seed and input set. Runs at different widths
# share their input sets, so they are not independent: the bootstrap resamples the input sets (clusters)
# with replacement and, inside each, the model seeds, keeps each run's value at every width, and fits the
# log of the mean over the resampled runs against log width over the widest half of the widths, where the
# asymptotic rate is meant. The interval is the percentile interval of the refitted slopes. With few input
# sets the interval is coarse; it says so by being wide rather than by pretending.


@dataclass(frozen=True)
class Rate:
    """A fitted power-law rate ``metric ∝ width^slope`` with a bootstrap confidence interval.

    Attributes:
        slope: the least-squares slope of ``log mean`` against ``log width`` on all runs.
        lo: lower end of the interval.
        hi: upper end of the interval.
        widths: the widths the slope was fitted over.
        replicates: bootstrap replicates (``0``: no interval, ``lo = hi = slope``).
    """

    slope: float
    lo: float
    hi: float
    widths: tuple[int, ...]
    replicates: int

    def __str__(self) -> str:
        return f"{self.slope:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}]"


def _slope(u: np.ndarray, v: np.ndarray) -> float:
    du = u - u.mean()
    return float(du @ (v - v.mean()) / (du @ du))


def widest_half(widths: Iterable[int]) -> tuple[int, ...]:
    """The widest half of ``widths`` (rounded up, at least two).

    Example:
        >>> widest_half([16, 32, 64, 128, 256]), widest_half([16, 32])
        ((64, 128, 256), (16, 32))
    """
    w = sorted(set(widths))
    return tuple(w[-max(2, (len(w) + 1) // 2) :])


def bootstrap_rate(
    values: np.ndarray,
    widths: Iterable[int],
    *,
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Rate | None:
    """The rate of a metric against width with a cluster-bootstrap interval (NOTE [Bootstrap of a rate]).

    Args:
        values: ``[W, D, S]`` the metric at each of ``W`` widths, ``D`` input sets and ``S`` model seeds;
            non-finite or non-positive values are left out of the means.
        widths: the ``W`` widths, ascending; the fit uses :func:`widest_half` of them.
        replicates: bootstrap replicates.
        level: coverage of the percentile interval.
        seed: the bootstrap's random seed.

    Returns:
        A :class:`Rate`, or ``None`` when fewer than two of the widest widths have a usable mean.

    Example:
        >>> w = np.array([64, 128, 256, 512])
        >>> rng = np.random.default_rng(0)
        >>> values = 2.0 * w[:, None, None] ** -0.5 * np.exp(rng.normal(0, 0.02, (4, 3, 3)))
        >>> rate = bootstrap_rate(values, w)
        >>> rate.widths, round(rate.slope, 1), rate.lo < -0.5 < rate.hi
        ((256, 512), -0.5, True)
    """
    widths = tuple(int(w) for w in widths)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or v.shape[0] != len(widths):
        raise ValueError(f"values must be [W, D, S] with W = {len(widths)} widths; got shape {v.shape}")
    use = widest_half(widths)
    v = v[[widths.index(w) for w in use]]
    v = np.where(np.isfinite(v) & (v > 0), v, np.nan)

    def fit(sample: np.ndarray) -> float:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a width whose resampled runs are all unusable
            means = np.nanmean(sample.reshape(len(use), -1), axis=1)
        ok = np.isfinite(means)
        if ok.sum() < 2:
            return math.nan
        return _slope(np.log(np.asarray(use, dtype=np.float64)[ok]), np.log(means[ok]))

    slope = fit(v)
    if not math.isfinite(slope):
        return None
    rng = np.random.default_rng(seed)
    D, S = v.shape[1], v.shape[2]
    slopes = np.empty(replicates)
    for b in range(replicates):
        d = np.asarray(rng.integers(0, D, size=D))
        s = np.asarray(rng.integers(0, S, size=(D, S)))
        slopes[b] = fit(v[:, d[:, None], s])  # input sets, then seeds within each
    slopes = slopes[np.isfinite(slopes)]
    if slopes.size == 0:
        return Rate(slope, slope, slope, use, 0)
    tail = (1 - level) / 2
    lo, hi = np.quantile(slopes, [tail, 1 - tail])
    return Rate(slope, float(lo), float(hi), use, int(slopes.size))


class RateVerdict(str, enum.Enum):
    """How a fitted rate compares with the rate ``r`` a claim states (``r = −1/2`` for the paper's).

    - ``FASTER``: the whole interval is below ``r``: the metric decays at least that fast.
    - ``CONSISTENT``: ``r`` lies inside the interval.
    - ``SLOWER``: the metric decays (interval below 0) but the whole interval is above ``r``.
    - ``NO_DECAY``: the interval reaches 0 or above.
    """

    FASTER = "faster than the stated rate"
    CONSISTENT = "consistent with the stated rate"
    SLOWER = "decays, but slower than the stated rate"
    NO_DECAY = "does not decay"

    @property
    def holds(self) -> bool:
        """Whether the decay is at least as fast as stated (within the interval)."""
        return self in (RateVerdict.FASTER, RateVerdict.CONSISTENT)


def rate_verdict(rate: Rate, stated: float = -0.5) -> RateVerdict:
    """Compare ``rate``'s interval with the stated exponent (see :class:`RateVerdict`).

    Example:
        >>> rate_verdict(Rate(-0.5, -0.6, -0.4, (64, 128), 100)).name
        'CONSISTENT'
        >>> rate_verdict(Rate(-0.2, -0.3, -0.1, (64, 128), 100)).name
        'SLOWER'
    """
    if rate.hi < stated:
        return RateVerdict.FASTER
    if rate.lo <= stated <= rate.hi:
        return RateVerdict.CONSISTENT
    if rate.hi < 0:
        return RateVerdict.SLOWER
    return RateVerdict.NO_DECAY


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two classifiers on the same test points.

    Attributes:
        only_first: points the first classifier gets right and the second wrong (``b``).
        only_second: points the second gets right and the first wrong (``c``).
        p_value: two-sided exact binomial p-value of ``b`` in ``b + c`` trials at ``1/2``; ``1`` when
            ``b + c = 0``.
    """

    only_first: int
    only_second: int
    p_value: float

    @classmethod
    def of_counts(cls, only_first: int, only_second: int) -> McNemar:
        """The test from the two discordant counts ``b`` and ``c``."""
        from scipy.stats import binomtest

        n = only_first + only_second
        return cls(only_first, only_second, 1.0 if n == 0 else float(binomtest(only_first, n, 0.5).pvalue))


def mcnemar(correct_first: np.ndarray, correct_second: np.ndarray) -> McNemar:
    """McNemar's exact (binomial) test of whether two classifiers' accuracies on the same points differ.

    Args:
        correct_first: ``[M]`` booleans, whether the first classifier is right on each test point.
        correct_second: ``[M]`` the same for the second.

    Returns:
        A :class:`McNemar`.

    Example:
        >>> a = np.array([True] * 30 + [False] * 10)
        >>> mcnemar(a, a).p_value, round(mcnemar(a, ~a).p_value, 4)
        (1.0, 0.0022)
    """
    a, b = np.asarray(correct_first, dtype=bool), np.asarray(correct_second, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"both classifiers must be scored on the same points; got {a.shape} and {b.shape}")
    return McNemar.of_counts(int((a & ~b).sum()), int((~a & b).sum()))


def interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(median, lo, hi)`` of repeated measurements: the median and the ``level`` percentile range.

    Example:
        >>> interval([1.0, 2.0, 3.0, 4.0, 100.0], level=0.5)
        (3.0, 2.0, 4.0)
    """
    v = np.asarray(list(values), dtype=np.float64)
    tail = (1 - level) / 2
    lo, hi = np.quantile(v, [tail, 1 - tail])
    return float(np.median(v)), float(lo), float(hi)
