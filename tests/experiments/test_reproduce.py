"""`pntk reproduce --preset quick` end to end: typed results that read back, numbers in range, internal
consistency, the report, the README table; and the paper preset on tiny CIFAR-10 files."""

import contextlib
import dataclasses
import io
import json
import math

import numpy as np
import pytest

from pntk.cli import main
from pntk.experiments import (
    PAPER,
    RegressionResult,
    SweepResult,
    TimingResult,
    TrajectoryResult,
    Verdict,
    read_result,
    reproduce,
)
from pntk.experiments.presets import QUICK
from pntk.experiments.report import TABLE_END, TABLE_START
from pntk.experiments.results import jsonable
from pntk.training import TrainConfig

EXPERIMENTS = [spec.name for spec in QUICK.specs]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["reproduce", "--out", str(out), "--preset", "quick", "--device", "cpu"])
    return out, status, stdout.getvalue()


def test_writes_every_file_and_prints_the_claims(run):
    out, status, stdout = run
    assert status == 0
    for name in EXPERIMENTS:
        assert (out / f"{name}.json").is_file()
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "quick" and summary["seconds"] > 0 and summary["cpu_seconds"] > 0
    keys = [c["key"] for c in summary["claims"]]
    assert keys == [*("rate", "ratio", "lambda_max_bound", "lambda_max", "lambda_min"), "training"] + [
        "ridgeless",
        "ridge",
        "time",
        "memory",
    ]
    assert {c["verdict"] for c in summary["claims"]} <= {v.value for v in Verdict}
    assert "| subject | claim | measured | verdict |" in stdout
    assert str(out / "report.md") in stdout


def test_results_read_back_as_the_same_dataclasses(run):
    out, _, _ = run
    types = {"width_sweep": SweepResult, "trajectory": TrajectoryResult, "regression": RegressionResult}
    for name in EXPERIMENTS:
        result = read_result(out / f"{name}.json")
        expected = next((t for prefix, t in types.items() if name.startswith(prefix)), TimingResult)
        assert type(result) is expected
        assert jsonable(result) == {
            k: v for k, v in json.loads((out / f"{name}.json").read_text()).items() if k != "experiment"
        }


def test_report_states_each_claim_its_criterion_and_embeds_the_figures(run):
    out, _, _ = run
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    for claim in summary["claims"]:
        assert claim["statement"] in report and claim["criterion"] in report and claim["measured"] in report
    for name in EXPERIMENTS:
        assert f"](figures/{name}.png)" in report


def test_width_sweep_numbers(run):
    out, _, _ = run
    r = read_result(out / "width_sweep_mnist1d_mlp.json")
    assert len(r.runs) == 3 * 2 * 2  # widths × input sets × seeds
    assert {(x.data_seed, x.seed) for x in r.runs} == {(d, s) for d in (0, 1) for s in (0, 1)}
    for x in r.runs:
        c = x.comparison
        assert 0 < c.relative_error < 1
        assert math.isclose(c.relative_error**2, c.relative_diagonal_error**2 + c.relative_off_diagonal_error**2)
        assert math.isclose(c.norm_Theta**2, x.norm_Theta_diagonal**2 + c.off_diagonal_error**2, rel_tol=1e-9)
        assert x.lambda_max_bound_holds and x.lambda_max_gap == pytest.approx(abs(c.lambda_max_Theta - c.lambda_max_K))
    rate = r.rates["relative_error"]
    assert rate.widths == (32, 64) and rate.lo <= rate.slope <= rate.hi < 0
    # the two input sets are different inputs: their kernels differ at the same width and seed
    a, b = (next(x for x in r.runs if x.width == 16 and x.seed == 0 and x.data_seed == d) for d in (0, 1))
    assert a.comparison.norm_Theta != b.comparison.norm_Theta


def test_trajectory_numbers(run):
    out, _, _ = run
    r = read_result(out / "trajectory_mnist1d_mlp.json")
    assert r.spec.train.loss.value == "cross_entropy"
    assert [(x.width, x.seed) for x in r.runs] == [(16, 0), (16, 1), (32, 0), (32, 1)]
    for x in r.runs:
        assert [c.epoch for c in x.checkpoints] == [0, 1, 2] and len(x.losses) == 3
        for c in x.checkpoints:
            assert 0 < c.comparison.relative_error < 1 and 0 <= c.test_accuracy <= 1
            assert c.train_loss == x.losses[c.epoch] and c.readout_sum_ratio > 0
    folders = sorted(p.name for p in (out / "checkpoints" / "trajectory_mnist1d_mlp").iterdir())
    assert folders == ["width_16_seed_0", "width_16_seed_1", "width_32_seed_0", "width_32_seed_1"]


def test_regression_numbers(run):
    out, _, _ = run
    r = read_result(out / "regression_digits_mlp.json")
    assert [(x.width, x.seed) for x in r.runs] == [(16, 0), (16, 1), (64, 0), (64, 1)]
    for x in r.runs:
        assert all(0 <= a <= 1 for a in (x.accuracy_entk, x.accuracy_pntk, x.accuracy_network))
        assert 0 <= x.mcnemar.p_value <= 1 and x.relative_difference > 0
        assert [p.relative for p in x.ridge_sweep] == [0.01, 1.0]


def test_timing_numbers(run):
    out, _, _ = run
    r = read_result(out / "timing_mnist1d_mlp.json")
    assert [row.N for row in r.against_N] == [8, 16] and [row.O for row in r.against_O] == [1, 4]
    for row in r.against_N + r.against_O:
        assert row.bytes_entk == row.O**2 * row.bytes_pntk == row.N**2 * row.O**2 * 4
        assert len(row.seconds_entk) == len(row.seconds_pntk) == 2 and min(row.seconds_entk) > 0
    assert r.exponent_entk.lo <= r.exponent_entk.slope <= r.exponent_entk.hi


def test_readme_table_is_regenerated_from_the_summary(run, tmp_path, capsys):
    out, _, _ = run
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{TABLE_START}\nold table\n{TABLE_END}\n\nafter\n")
    assert main(["reproduce", "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro") and text.endswith("after\n")
    summary = json.loads((out / "summary.json").read_text())
    for claim in summary["claims"]:
        assert claim["measured"] in text
    readme.write_text("no markers\n")
    assert main(["reproduce", "--out", str(out), "--readme", str(readme)]) == 2
    assert "no claims table" in capsys.readouterr().err


def _write_cifar10(directory, per_class=6, test_per_class=3, seed=0):
    """CIFAR-10's binary version: records of one label byte and 3,072 pixel bytes, five train batches."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def records(n_per_class):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
        images = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], images], axis=1)

    train = records(per_class)
    for k, part in enumerate(np.array_split(train[rng.permutation(len(train))], 5), start=1):
        (directory / f"data_batch_{k}.bin").write_bytes(part.tobytes())
    (directory / "test_batch.bin").write_bytes(records(test_per_class).tobytes())


@pytest.mark.slow
def test_paper_preset_end_to_end_on_tiny_cifar10_files(tmp_path):
    """Every experiment of ``--preset paper`` (ResNet-18, WRN, MLP on CIFAR-10), at toy sizes."""
    _write_cifar10(tmp_path / "cifar")
    tiny = TrainConfig(lr=0.01, epochs=1, batch_size=20)
    preset = dataclasses.replace(
        PAPER,
        sweeps=tuple(
            dataclasses.replace(s, widths=s.widths[:2], seeds=(0,), data_seeds=(0, 1), N=4) for s in PAPER.sweeps
        ),
        trajectories=tuple(
            dataclasses.replace(
                t, widths=(2,), seeds=(0,), N_train=40, N=4, N_test=20, train=tiny, checkpoint_epochs=(0, 1)
            )
            for t in PAPER.trajectories
        ),
        regressions=tuple(
            dataclasses.replace(r, widths=(2, 4), seeds=(0,), N_train=10, N_test=20, train=tiny)
            for r in PAPER.regressions
        ),
        timings=tuple(
            dataclasses.replace(t, width=2, Ns=(2, 4), Os=(1, 2), N_for_O=2, repeats=2) for t in PAPER.timings
        ),
    )
    summary = reproduce(tmp_path / "out", preset, data_root=tmp_path / "cifar", device="cpu")
    assert summary.preset == "paper" and len(summary.claims) == 3 * 5 + 1 + 2 + 2
    for spec in preset.specs:
        result = read_result(tmp_path / "out" / f"{spec.name}.json")
        assert result.spec == spec
    assert (tmp_path / "out" / "report.md").read_text().count("## ") >= 6
