"""Power-law fits and spreads over seeds on synthetic data with known answers."""

import math

import numpy as np
import pytest

from pntk.experiments.results import jsonable
from pntk.experiments.stats import loglog_slope, spread
from pntk.experiments.width_sweep import nonsingular


def test_slope_of_an_exact_power_law():
    widths = np.array([16, 32, 64, 128, 256, 512, 1024])
    fit = loglog_slope(widths, 3.0 * widths**-0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0), abs=1e-12)
    assert fit(4096) == pytest.approx(3.0 / 64, rel=1e-12)


def test_slope_with_noise_and_repeated_widths():
    rng = np.random.default_rng(0)
    widths = np.repeat([16, 32, 64, 128, 256, 512, 1024], 5)  # five seeds per width
    y = 0.7 * widths**1.0 * np.exp(rng.normal(0, 0.05, widths.size))
    fit = loglog_slope(widths, y)
    assert fit.slope == pytest.approx(1.0, abs=0.03)
    assert fit.points == widths.size


def test_slope_skips_values_that_have_no_logarithm():
    fit = loglog_slope([1, 2, 4, 8, 16], [1.0, 0.5, float("inf"), 0.0, 1 / 16])
    assert fit.slope == pytest.approx(-1.0) and fit.points == 3
    with pytest.raises(ValueError, match="two distinct x"):
        loglog_slope([4, 4, 8], [1.0, 2.0, -1.0])


def test_spread_over_finite_values():
    assert spread([2.0, 4.0, None, float("nan")]) == {"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0, "count": 2}
    assert spread([float("inf")])["mean"] is None


def test_nonsingular_uses_the_rounding_level_of_the_kernel_dtype():
    n = 640
    assert nonsingular(1e-6, 1.0, n, "float64")
    assert not nonsingular(1e-6, 1.0, n, "float32")  # below 640 · 1.2e-7
    assert not nonsingular(-1e-15, 1.0, n, "float64")


def test_json_has_no_infinities():
    assert jsonable({"k": (1.0, float("inf"), float("nan"))}) == {"k": [1.0, None, None]}
