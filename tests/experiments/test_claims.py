"""Each criterion on synthetic kernels and results whose answer is known: a rate of exactly −1/2, a slower
decay, errors that stay large, a singular kernel, too few parameters, a broken λ_max bound, McNemar."""

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq

from pntk.experiments.claims import Verdict, claims, regression_claims, sweep_claims
from pntk.experiments.kernel_pair import KernelPair
from pntk.experiments.regression import Regression, RegressionResult, RegressionRun, RidgePoint
from pntk.experiments.stats import McNemar
from pntk.experiments.width_sweep import WidthSweep, sweep_result, sweep_run

N, O = 6, 3
WIDTHS = (64, 128, 256, 512)


def _pair(width, seed, data_seed, exponent, scale, rank=None):
    """Θ = K ⊗ I + E with ‖E‖_F/‖Θ‖_F ≈ scale·(width/64)^exponent; singular when ``rank`` is given."""
    rng = np.random.default_rng(1000 * data_seed + seed)
    r = rank or N
    G = rng.standard_normal((N, r))
    K = G @ G.T / r + (0.0 if rank else 0.5 * np.eye(N))
    F = rng.standard_normal((N * O, rank or N * O))
    E = F @ F.T / F.shape[1]
    A = np.kron(K, np.eye(O))
    target = scale * (width / 64) ** exponent * np.exp(rng.normal(0, 0.03))
    c = brentq(lambda c: np.linalg.norm(c * E) / np.linalg.norm(A + c * E) - target, 0.0, 1e6)
    Theta = (A + c * E).reshape(N, O, N, O).transpose(0, 2, 1, 3)
    return KernelPair(Theta, K, "float64", 0.0, 0.0)


def _sweep(exponent=-0.5, scale=0.3, rank=None, P=10**6):
    spec = WidthSweep("synthetic", "mlp", widths=WIDTHS, seeds=(0, 1, 2), data_seeds=(0, 1), N=N)
    runs = [
        sweep_run(w, s, d, P, _pair(w, s, d, exponent, scale, rank))
        for d in spec.data_seeds
        for w in spec.widths
        for s in spec.seeds
    ]
    return sweep_result(spec, O, runs)


def _by_key(items):
    return {c.key: c for c in items}


def test_rate_of_minus_one_half_holds_and_says_consistent():
    c = _by_key(sweep_claims(_sweep(-0.5), "s"))
    rate = c["rate"]
    assert rate.verdict is Verdict.HOLDS and "consistent" in rate.detail
    assert rate.interval[0] <= -0.5 <= rate.interval[1]
    assert rate.threshold == -0.5 and "width^" in rate.measured


def test_slower_decay_does_not_hold_and_says_slower():
    rate = _by_key(sweep_claims(_sweep(-0.2), "s"))["rate"]
    assert rate.verdict is Verdict.FAILS and "slower" in rate.detail
    assert rate.interval[0] > -0.5


def test_faster_decay_holds_and_says_faster():
    rate = _by_key(sweep_claims(_sweep(-1.0), "s"))["rate"]
    assert rate.verdict is Verdict.HOLDS and "faster" in rate.detail


def test_errors_that_stay_above_one_half_are_not_converged():
    rate = _by_key(sweep_claims(_sweep(-0.1, scale=0.9), "s"))["rate"]
    assert rate.verdict is Verdict.NOT_CONVERGED and rate.values["final_mean"] > 0.5


def test_lambda_max_bound_holds_for_real_comparisons_and_fails_when_broken():
    result = _sweep(-0.5)
    assert _by_key(sweep_claims(result, "s"))["lambda_max_bound"].verdict is Verdict.HOLDS
    broken = dataclasses.replace(result.runs[0], lambda_max_gap=2 * result.runs[0].comparison.error)
    result = dataclasses.replace(result, runs=[broken, *result.runs[1:]])
    bound = _by_key(sweep_claims(result, "s"))["lambda_max_bound"]
    assert bound.verdict is Verdict.FAILS and bound.values["violations"] == 1


def test_lambda_min_is_tested_on_a_well_conditioned_kernel_with_enough_parameters():
    c = _by_key(sweep_claims(_sweep(-0.5, scale=0.05), "s"))["lambda_min"]
    assert c.verdict in (Verdict.HOLDS, Verdict.FAILS, Verdict.NOT_CONVERGED)
    assert c.values["qualifying_widths"] == len(WIDTHS)


def test_lambda_min_of_a_singular_kernel_is_not_tested_and_shows_its_values():
    result = _sweep(-0.5, rank=2)
    assert not any(r.lambda_min_resolved for r in result.runs)
    c = _by_key(sweep_claims(result, "s"))["lambda_min"]
    assert c.verdict is Verdict.NOT_TESTED
    assert c.values["resolved_at_largest"] == 0.0 and abs(c.values["lambda_min_over_max_at_largest"]) < 1e-12
    assert "qualify" in c.measured


def test_lambda_min_with_fewer_than_ten_parameters_per_row_is_not_tested():
    c = _by_key(sweep_claims(_sweep(-0.5, scale=0.05, P=9 * N * O), "s"))["lambda_min"]
    assert c.verdict is Verdict.NOT_TESTED and c.values["P_over_NO_at_largest"] == 9


def _regression(only_entk, only_pntk, differences):
    spec = Regression("synthetic", "mlp", widths=(64, 256, 1024), seeds=(0, 1, 2))
    ridge = [RidgePoint(r, r, 0.9, 0.9, 0.9, 0.1 * r, 0.3 * r) for r in (0.1, 1.0)]
    runs = [
        RegressionRun(w, s, 0.9, 0.9, 0.8, d * (1 + 0.01 * s), McNemar.of_counts(only_entk, only_pntk), ridge, {}, 0.0)
        for w, d in zip(spec.widths, differences)
        for s in spec.seeds
    ]
    return RegressionResult(spec, 200, 1000, 10, runs)


def test_ridgeless_claim_needs_a_decaying_difference_and_no_significant_accuracy_gap():
    same = _by_key(regression_claims(_regression(5, 6, (0.4, 0.2, 0.1)), "r"))
    assert same["ridgeless"].verdict is Verdict.HOLDS
    assert same["ridgeless"].values["p_value"] > 0.05 and same["ridge"].verdict is Verdict.HOLDS
    differ = _by_key(regression_claims(_regression(30, 5, (0.4, 0.2, 0.1)), "r"))["ridgeless"]
    assert differ.verdict is Verdict.FAILS and differ.values["p_value"] < 0.05  # pooled 90 vs 15
    flat = _by_key(regression_claims(_regression(5, 6, (0.2, 0.2, 0.2)), "r"))["ridgeless"]
    assert flat.verdict is Verdict.FAILS and "does not decay" in flat.detail


def test_claims_refuses_what_it_cannot_judge():
    with pytest.raises(TypeError, match="no claims"):
        claims({"x": object()})
