"""`pntk reproduce --preset quick` end to end: files, numbers in range, internal consistency, the report."""

import contextlib
import io
import json
import math

import pytest

from pntk.cli import main
from pntk.experiments.presets import QUICK

EXPERIMENTS = [spec.name for spec in QUICK.specs]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["reproduce", "--out", str(out), "--preset", "quick", "--device", "cpu"])
    return out, status, stdout.getvalue()


def _load(out, name):
    return json.loads((out / f"{name}.json").read_text())


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_writes_every_file_and_prints_the_claims(run):
    out, status, stdout = run
    assert status == 0
    for name in EXPERIMENTS:
        assert (out / f"{name}.json").is_file()
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "quick" and summary["seconds"] > 0
    assert len(summary["claims"]) == 9
    assert {c["verdict"] for c in summary["claims"]} <= {"yes", "no", "—"}
    assert "| claim | measured | holds? |" in stdout
    assert str(out / "report.md") in stdout
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(lines) >= 15  # one progress line per step, each stamped with the elapsed time


def test_report_states_each_claim_and_embeds_existing_figures(run):
    out, _, _ = run
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert "| claim | measured | holds? |" in report
    for claim in summary["claims"]:
        assert claim["claim"] in report and claim["measured"] in report
    for name in EXPERIMENTS:
        assert f"](figures/{name}.png)" in report


def test_width_sweep_numbers(run):
    out, _, _ = run
    r = _load(out, "width_sweep_mnist1d_mlp")
    widths = [row["width"] for row in r["by_width"]]
    assert widths == sorted(widths) == [16, 32, 64]
    assert len(r["runs"]) == 3 * 2
    for run_ in r["runs"]:
        assert 0 < run_["relative_error"] < 1
        parts = run_["relative_diagonal_error"] ** 2 + run_["relative_off_diagonal_error"] ** 2
        assert math.isclose(run_["relative_error"] ** 2, parts, rel_tol=1e-9)
        parts = run_["norm_Theta_diagonal"] ** 2 + run_["off_diagonal_error"] ** 2
        assert math.isclose(run_["norm_Theta"] ** 2, parts, rel_tol=1e-9)
        assert run_["lambda_max_Theta"] > 0 and run_["lambda_max_K"] > 0
        assert 0 <= run_["lambda_max_relative_error"] < 1
    for row in r["by_width"]:
        stats = row["relative_error"]
        assert stats["count"] == 2 and stats["min"] <= stats["mean"] <= stats["max"]
    fit = r["fits"]["relative_error"]
    assert _finite(fit["slope"]) and fit["slope"] < 0 and fit["points"] == 6


def test_trajectory_numbers(run):
    out, _, _ = run
    r = _load(out, "trajectory_mnist1d_mlp")
    assert [c["epoch"] for c in r["checkpoints"]] == [0, 1, 2]
    assert len(r["losses"]) == 3 and all(_finite(v) and v > 0 for v in r["losses"])
    for c in r["checkpoints"]:
        assert 0 < c["relative_error"] < 1 and 0 <= c["test_accuracy"] <= 1
        assert c["train_loss"] == r["losses"][c["epoch"]]
    assert len(list((out / "checkpoints" / "trajectory_mnist1d_mlp").glob("*.safetensors"))) == 3


def test_regression_numbers(run):
    out, _, _ = run
    r = _load(out, "regression_digits_mlp")
    assert [w["width"] for w in r["widths"]] == [16, 64]
    for w in r["widths"]:
        assert w["ridge"] > 0
        assert all(0 <= a <= 1 for a in w["accuracy"].values())
        assert all(_finite(d) and d > 0 for d in w["relative_difference"].values())
    large, O = r["large"], r["O"]
    assert large["N"] == 300 and large["entk_bytes"] == 300**2 * O**2 * 8 > large["entk_budget"]
    assert large["accuracy"] > 1 / O  # better than chance


def test_timing_numbers(run):
    out, _, _ = run
    r = _load(out, "timing_mnist1d_mlp")
    assert [row["N"] for row in r["against_N"]] == [8, 16]
    assert [row["O"] for row in r["against_O"]] == [1, 4]
    for row in r["against_N"] + r["against_O"]:
        assert row["bytes_entk"] == row["O"] ** 2 * row["bytes_pntk"] == row["N"] ** 2 * row["O"] ** 2 * 4
        assert row["seconds_entk"] > 0 and row["seconds_pntk"] > 0
    assert all(_finite(f["slope"]) for f in r["fits"].values())
