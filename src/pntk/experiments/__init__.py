"""The paper's experiments: each a spec (what to run) and a function returning a JSON-able dict, plus the
figures, the judged claims and the report, and :func:`reproduce`, which runs a preset of them all.

Experiments call the library's kernels and analyses; they never differentiate or loop over data themselves.
"""

from .figures import figure
from .presets import DEMO, PAPER, PRESETS, QUICK, Preset, get_preset
from .regression import Regression, regression
from .report import Claim, claims, write_report
from .reproduce import reproduce
from .results import read_json, write_json
from .stats import PowerLaw, loglog_slope, spread
from .timing import Timing, timing
from .trajectory import Trajectory, trajectory
from .width_sweep import WidthSweep, width_sweep

__all__ = [
    "DEMO",
    "PAPER",
    "PRESETS",
    "QUICK",
    "Claim",
    "PowerLaw",
    "Preset",
    "Regression",
    "Timing",
    "Trajectory",
    "WidthSweep",
    "claims",
    "figure",
    "get_preset",
    "loglog_slope",
    "read_json",
    "regression",
    "reproduce",
    "spread",
    "timing",
    "trajectory",
    "width_sweep",
    "write_json",
    "write_report",
]
