"""The claims' verdicts follow their criteria, for each parametrisation."""

import pytest

from pntk.experiments.report import claims
from pntk.experiments.results import file_stem, model_label


def _metric(mean):
    return {"mean": mean, "std": 0.0, "min": mean, "max": mean, "count": 3}


def _sweep(parametrization, diagonal_slope, off_diagonal_slope):
    fit = {"slope": -0.5, "intercept": 0.0, "points": 9, "stderr": 0.01}
    rows = [
        {
            "width": w,
            **{
                m: _metric(e)
                for m in (
                    "relative_error",
                    "lambda_max_relative_error",
                    "lambda_min_relative_error",
                    "cond_relative_error",
                )
            },
        }
        for w, e in ((16, 0.4), (64, 0.2), (256, 0.1))
    ]
    return {
        "experiment": "width_sweep",
        "spec": {"model": "convnet", "dataset": "mnist1d", "parametrization": parametrization},
        "by_width": rows,
        "fits": {
            "relative_error": fit,
            "lambda_max_relative_error": fit,
            "lambda_min_relative_error": fit,
            "cond_relative_error": fit,
            "norm_Theta_diagonal": {**fit, "slope": diagonal_slope},
            "off_diagonal_error": {**fit, "slope": off_diagonal_slope},
        },
    }


@pytest.mark.parametrize(
    "parametrization, diagonal, off_diagonal, holds",
    [
        ("standard", 0.9, 0.05, True),  # the paper's statement
        ("standard", 0.6, 0.2, False),  # the off-diagonal part grows too
        ("ntk", 0.0, -0.5, True),  # the same statement divided by the width
        ("ntk", 0.0, 0.0, False),  # nothing decays
        ("ntk", 0.9, 0.05, False),  # a standard-parametrisation outcome is no verdict for NTK
    ],
)
def test_parts_claim_reads_the_statement_in_the_sweeps_parametrisation(parametrization, diagonal, off_diagonal, holds):
    [parts] = [c for c in claims({"s": _sweep(parametrization, diagonal, off_diagonal)}) if c.criterion == "parts"]
    assert parts.holds is holds
    assert ("NTK param." in parts.claim) is (parametrization == "ntk")


def test_error_claim_holds_for_a_significant_fall():
    [error] = [c for c in claims({"s": _sweep("ntk", 0.0, -0.5)}) if c.criterion == "error"]
    assert error.holds is True and "0.4 → 0.1" in error.measured


def test_names_and_labels_carry_a_non_standard_parametrisation():
    assert file_stem("width_sweep", "mnist1d", "convnet") == "width_sweep_mnist1d_convnet"
    assert file_stem("width_sweep", "mnist1d", "convnet", "ntk") == "width_sweep_mnist1d_convnet_ntk"
    assert model_label({"model": "mlp", "dataset": "digits"}) == "mlp on digits"
