"""Fits, bootstrap rates, verdicts against the stated rate, McNemar and timing intervals, on synthetic data
whose answer is known."""

import math

import numpy as np
import pytest

from pntk.experiments.results import jsonable
from pntk.experiments.stats import (
    McNemar,
    Rate,
    RateVerdict,
    bootstrap_rate,
    interval,
    loglog_slope,
    mcnemar,
    rate_verdict,
    spread,
    widest_half,
)
from pntk.experiments.timing import o_exponent

WIDTHS = np.array([64, 128, 256, 512, 1024, 2048])


def _runs(exponent, noise=0.05, D=3, S=3, seed=0, widths=WIDTHS):
    """``[W, D, S]`` values ``c·w^exponent`` with multiplicative noise, shared per input set (as in a sweep)."""
    rng = np.random.default_rng(seed)
    shared = np.exp(rng.normal(0, noise, (1, D, 1)))  # an input set is easier or harder at every width
    own = np.exp(rng.normal(0, noise, (len(widths), D, S)))
    return 0.3 * (widths[:, None, None] / widths[0]) ** exponent * shared * own


def test_slope_of_an_exact_power_law():
    fit = loglog_slope(WIDTHS, 3.0 * WIDTHS**-0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0), abs=1e-12)
    assert fit(4096) == pytest.approx(3.0 / 64, rel=1e-12)


def test_slope_skips_values_that_have_no_logarithm():
    fit = loglog_slope([1, 2, 4, 8, 16], [1.0, 0.5, float("inf"), 0.0, 1 / 16])
    assert fit.slope == pytest.approx(-1.0) and fit.points == 3
    with pytest.raises(ValueError, match="two distinct x"):
        loglog_slope([4, 4, 8], [1.0, 2.0, -1.0])


def test_spread_over_finite_values():
    s = spread([2.0, 4.0, None, float("nan")])
    assert (s.mean, s.std, s.min, s.max, s.count) == (3.0, 1.0, 2.0, 4.0, 2)
    assert spread([float("inf")]).mean is None


def test_exact_rate_of_minus_one_half_is_consistent():
    rate = bootstrap_rate(_runs(-0.5, noise=0.0), WIDTHS)
    assert rate.slope == pytest.approx(-0.5, abs=1e-12)
    assert rate.lo == pytest.approx(-0.5) and rate.hi == pytest.approx(-0.5)
    assert rate_verdict(rate) is RateVerdict.CONSISTENT and rate_verdict(rate).holds


@pytest.mark.parametrize(
    ("exponent", "expected"),
    [
        (-0.5, RateVerdict.CONSISTENT),
        (-1.0, RateVerdict.FASTER),
        (-0.2, RateVerdict.SLOWER),
        (0.0, RateVerdict.NO_DECAY),
    ],
)
def test_noisy_rates_get_the_verdict_of_their_true_exponent(exponent, expected):
    rate = bootstrap_rate(_runs(exponent), WIDTHS, replicates=1000)
    assert rate.lo < rate.slope < rate.hi and rate.replicates == 1000
    assert rate_verdict(rate) is expected
    assert rate_verdict(rate).holds is (expected in (RateVerdict.CONSISTENT, RateVerdict.FASTER))


def test_rate_is_fitted_over_the_widest_half_only():
    """A decay that is slow at small widths and −1/2 at large ones: the fit sees only the asymptote."""
    values = _runs(-0.5, noise=0.0)
    values[:3] = values[3] * (WIDTHS[:3, None, None] / WIDTHS[3]) ** -0.1
    rate = bootstrap_rate(values, WIDTHS)
    assert rate.widths == (512, 1024, 2048) == widest_half(WIDTHS)
    assert rate.slope == pytest.approx(-0.5, abs=1e-12)
    assert loglog_slope(np.repeat(WIDTHS, 9), values.ravel()).slope > -0.4  # a fit over all widths would not


def test_interval_widens_when_input_sets_disagree():
    """Input sets shared across widths are the clusters: their spread shows in the interval."""
    tight = bootstrap_rate(_runs(-0.5, noise=0.01), WIDTHS)
    values = _runs(-0.5, noise=0.01)
    values[:, 0] *= (WIDTHS[:, None] / 64.0) ** 0.3  # one input set decays much more slowly
    loose = bootstrap_rate(values, WIDTHS)
    assert (loose.hi - loose.lo) > 5 * (tight.hi - tight.lo)


def test_unusable_values_give_no_rate():
    values = np.full((len(WIDTHS), 2, 2), np.nan)
    values[-1] = 0.1
    assert bootstrap_rate(values, WIDTHS) is None
    with pytest.raises(ValueError, match=r"\[W, D, S\]"):
        bootstrap_rate(np.ones((2, 3)), [1, 2])


def test_rate_verdict_on_hand_made_intervals():
    assert rate_verdict(Rate(-0.8, -0.9, -0.6, (1, 2), 10)) is RateVerdict.FASTER
    assert rate_verdict(Rate(-0.3, -0.6, -0.1, (1, 2), 10)) is RateVerdict.CONSISTENT
    assert rate_verdict(Rate(-0.3, -0.4, -0.1, (1, 2), 10)) is RateVerdict.SLOWER
    assert rate_verdict(Rate(-0.1, -0.3, 0.1, (1, 2), 10)) is RateVerdict.NO_DECAY
    assert rate_verdict(Rate(-0.3, -0.35, -0.25, (1, 2), 10), stated=-0.25) is RateVerdict.CONSISTENT


def test_mcnemar_exact_binomial():
    first = np.array([True] * 60 + [False] * 40)
    assert mcnemar(first, first) == McNemar(0, 0, 1.0)
    second = first.copy()
    second[:10] = False  # the first classifier alone is right on 10 points
    result = mcnemar(first, second)
    assert (result.only_first, result.only_second) == (10, 0)
    assert result.p_value == pytest.approx(2 * 0.5**10)
    second[60:65] = True  # and the second alone on 5: b = 10, c = 5
    assert mcnemar(first, second).p_value == pytest.approx(0.3017578125)
    with pytest.raises(ValueError, match="same points"):
        mcnemar(first, second[:5])


def test_timing_intervals_and_the_exponent_in_O():
    assert interval([1.0, 2.0, 3.0]) == (2.0, pytest.approx(1.05), pytest.approx(2.95))
    Os = [2, 4, 8, 16]
    rng = np.random.default_rng(0)
    quadratic = [[0.01 * O**2 * np.exp(rng.normal(0, 0.05)) for _ in range(5)] for O in Os]
    flat = [[0.01 * np.exp(rng.normal(0, 0.05)) for _ in range(5)] for _ in Os]
    e, p = o_exponent(Os, quadratic), o_exponent(Os, flat)
    assert e.lo < 2 < e.hi and p.lo < 0 < p.hi and e.lo > p.hi


def test_json_has_no_infinities():
    assert jsonable({"k": (1.0, float("inf"), float("nan")), "n": np.float64(2.0)}) == {
        "k": [1.0, None, None],
        "n": 2.0,
    }
