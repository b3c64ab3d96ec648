"""The paper's experiments: each a spec (what to run) and a function returning a typed result (a dataclass
written as JSON and read back), plus the claims as data, the figures, the report, and :func:`reproduce`,
which runs a preset of them all.

Experiments call the library's kernels and analyses; they never differentiate or loop over data themselves.
"""

from .claims import STATEMENTS, Claim, Statement, Verdict, claims
from .figures import figure
from .presets import DEMO, PAPER, PRESETS, QUICK, Preset, get_preset
from .regression import Regression, RegressionResult, RegressionRun, RidgePoint, regression
from .report import claims_table, update_readme, write_report
from .reproduce import Summary, reproduce
from .results import read_json, read_result, write_json
from .stats import (
    McNemar,
    PowerLaw,
    Rate,
    RateVerdict,
    Spread,
    bootstrap_rate,
    loglog_slope,
    mcnemar,
    rate_verdict,
    spread,
)
from .timing import Timing, TimingResult, TimingRow, timing
from .trajectory import Trajectory, TrajectoryCheckpoint, TrajectoryResult, TrajectoryRun, trajectory
from .width_sweep import SweepResult, SweepRun, WidthSweep, width_sweep

__all__ = [
    "DEMO",
    "PAPER",
    "PRESETS",
    "QUICK",
    "STATEMENTS",
    "Claim",
    "McNemar",
    "PowerLaw",
    "Preset",
    "Rate",
    "RateVerdict",
    "Regression",
    "RegressionResult",
    "RegressionRun",
    "RidgePoint",
    "Spread",
    "Statement",
    "Summary",
    "SweepResult",
    "SweepRun",
    "Timing",
    "TimingResult",
    "TimingRow",
    "Trajectory",
    "TrajectoryCheckpoint",
    "TrajectoryResult",
    "TrajectoryRun",
    "Verdict",
    "WidthSweep",
    "bootstrap_rate",
    "claims",
    "claims_table",
    "figure",
    "get_preset",
    "loglog_slope",
    "mcnemar",
    "rate_verdict",
    "read_json",
    "read_result",
    "regression",
    "reproduce",
    "spread",
    "timing",
    "trajectory",
    "update_readme",
    "width_sweep",
    "write_json",
    "write_report",
]
