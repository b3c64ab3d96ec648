"""The paper's claims as data: each stated once, with the criterion that judges it, next to the code that
judges it from the typed results of the experiments.

The paper (Mohamadi, Bae & Sutherland, *A Fast, Well-Founded Approximation to the Empirical Neural Tangent
Kernel*, ICML 2023, arXiv 2206.12543) proves that the pNTK ("sum of logits") converges to the eNTK at
initialisation as the network widens. We read the rate as ``O(n^{-1/2})`` in the width ``n`` of the layer
before the readout; the theorem's number and exact statement could not be checked against the paper's text
from where this was written, so each statement below says "as we read it" where it rests on that reading.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .regression import RegressionResult, entk_bytes
from .results import model_label
from .stats import Rate, bootstrap_rate, rate_verdict
from .timing import TimingResult
from .trajectory import TrajectoryResult
from .width_sweep import SweepResult

#: The rate the paper states for the approximation error, as we read it: ``width^{-1/2}``.
PAPER_RATE = -0.5
#: A metric whose mean at the largest width is above this has not converged: its rate is not tested.
NOT_CONVERGED_ABOVE = 0.5
#: λ_min and κ are tested only for ``P ≥ PARAMETERS_PER_ROW · N·O``: a Gram matrix ``J Jᵀ`` with fewer
#: parameters than about ten per row is close to singular by construction.
PARAMETERS_PER_ROW = 10
#: The significance level of McNemar's test.
ALPHA = 0.05


class Verdict(str, enum.Enum):
    """The outcome of judging a claim."""

    HOLDS = "holds"
    FAILS = "does not hold"
    NOT_CONVERGED = "not converged"
    NOT_TESTED = "not tested"
    OBSERVED = "observation"


@dataclass(frozen=True)
class Statement:
    """A claim as stated, and the criterion that judges it.

    Attributes:
        key: a short name, e.g. ``"rate"``.
        text: the claim, as the paper states it (or as we read it, where marked).
        criterion: how the verdict is reached.
        threshold: the number the criterion compares with, when there is one.
    """

    key: str
    text: str
    criterion: str
    threshold: float | None = None


RATE = Statement(
    "rate",
    "‖Θ − K⊗I‖_F / ‖Θ‖_F → 0 at rate O(width^{-1/2}) at initialisation (the paper's convergence theorem, "
    "as we read it)",
    "slope of log(mean error) on log(width) over the widest half of the widths, with a 95% cluster-bootstrap "
    "interval over input sets and seeds; holds when −1/2 lies in the interval (consistent) or the interval "
    "lies below −1/2 (faster); not converged when the mean error at the largest width exceeds 0.5",
    PAPER_RATE,
)
RATIO = Statement(
    "ratio",
    "the off-diagonal blocks of Θ become negligible next to the diagonal ones: ‖Θ_a≠b‖_F / ‖Θ_aa‖_F = "
    "O(width^{-1/2}) (the step of the argument that needs no claim on either norm alone)",
    "as for the rate, on the ratio of the two norms",
    PAPER_RATE,
)
LAMBDA_MAX_BOUND = Statement(
    "lambda_max_bound",
    "|λ_max(Θ) − λ_max(K)| ≤ ‖Θ − K⊗I‖_F (Weyl's inequality; the bound through which the paper's λ_max "
    "result follows from the Frobenius one)",
    "holds in every run of the sweep (up to float64 rounding)",
)
LAMBDA_MAX = Statement(
    "lambda_max",
    "λ_max(K) → λ_max(Θ): the relative error of the largest eigenvalue vanishes with width, at the rate of "
    "the Frobenius error (as we read it)",
    "as for the rate, on |λ_max(K) − λ_max(Θ)| / λ_max(Θ)",
    PAPER_RATE,
)
LAMBDA_MIN = Statement(
    "lambda_min",
    "λ_min and κ of K follow those of Θ (the paper shows this empirically)",
    "tested only over widths with P ≥ 10·N·O whose every run has λ_min(Θ) above the noise floor "
    "max(n·ε₆₄·λ_max, 2√n·ε·max Θ_ii of the kernels' dtype), at least two of them; holds when the "
    "bootstrap intervals of both slopes lie below 0; not converged when either mean relative error at the "
    "widest of them exceeds 0.5; otherwise not tested, with the values",
)
TRAINING = Statement(
    "training",
    "the approximation through training, with cross-entropy as the paper trains (an observation: the "
    "theorem is about initialisation)",
    "none: the numbers are reported across widths and seeds, with ‖Σ_a W_a‖/‖W‖_F of the readout",
)
RIDGELESS = Statement(
    "ridgeless",
    "ridgeless kernel regression with K (per output) approaches that with Θ as width grows, and the two "
    "classify test points alike (the paper's kernel-regression result, with the kernels of trained networks)",
    "the interval of the slope of ‖f_K − f_Θ‖/‖f_Θ‖ against width lies below 0 (bootstrap over seeds), and "
    "McNemar's exact test on the pooled discordant test points at the largest width does not reject "
    "equal accuracy at α = 0.05",
    ALPHA,
)
RIDGE = Statement(
    "ridge",
    "with a ridge λ, the pNTK stands in for the eNTK when it is on the scale of one diagonal entry of Θ "
    "(K = J_g J_gᵀ with g = Σ_a f_a/√O), not as the kernel of the summed logits O·K, whose predictions at λ "
    "are those of K at λ/O",
    "at the largest width, for every ridge of the sweep, ‖f_K − f_Θ‖/‖f_Θ‖ < ‖f_{O·K} − f_Θ‖/‖f_Θ‖ "
    "averaged over seeds (both at the same λ)",
)
TIME = Statement(
    "time",
    "computing K costs about O times fewer backward passes than Θ, so its time grows more slowly with O",
    "the 95% interval of the eNTK's exponent of time in O lies above that of the pNTK, and the eNTK/pNTK time "
    "ratio at the largest N has an interval above 1 (repeated runs)",
)
MEMORY = Statement(
    "memory",
    "the eNTK holds O² times the numbers of the pNTK: 1.8 TB for ResNet-18 on CIFAR-10's training set",
    "arithmetic, not a measurement: N²·O² against N² numbers",
)

STATEMENTS = (RATE, RATIO, LAMBDA_MAX_BOUND, LAMBDA_MAX, LAMBDA_MIN, TRAINING, RIDGELESS, RIDGE, TIME, MEMORY)


@dataclass(frozen=True)
class Claim:
    """One claim judged on one experiment.

    Attributes:
        key: the :class:`Statement`'s key.
        subject: the model and data, e.g. ``"mlp (standard param., He init.) on mnist1d"``.
        statement: the claim.
        criterion: how it was judged.
        threshold: the number the criterion compares with, if any.
        verdict: the outcome.
        detail: which way it went, e.g. ``"consistent with the stated rate"``.
        estimate: the fitted number (a slope, a p-value, ...), if any.
        interval: its interval ``(lo, hi)``, if any.
        values: the other numbers the verdict rests on, by name.
        measured: the numbers in words, for the report's table.
        source: the result (file stem) it was measured in.
    """

    key: str
    subject: str
    statement: str
    criterion: str
    threshold: float | None
    verdict: Verdict
    detail: str
    estimate: float | None
    interval: tuple[float, float] | None
    values: dict[str, float] = field(default_factory=dict)
    measured: str = ""
    source: str = ""


def _claim(
    s: Statement,
    subject: str,
    source: str,
    verdict: Verdict,
    detail: str,
    estimate: float | None = None,
    interval: tuple[float, float] | None = None,
    *,
    values: dict[str, float] | None = None,
    measured: str = "",
) -> Claim:
    return Claim(
        s.key,
        subject,
        s.text,
        s.criterion,
        s.threshold,
        verdict,
        detail,
        estimate,
        interval,
        values or {},
        measured,
        source,
    )


def _g(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def judge_rate(
    s: Statement, rate: Rate | None, final_mean: float | None, subject: str, source: str, what: str
) -> Claim:
    """Judge a rate claim: not converged above :data:`NOT_CONVERGED_ABOVE`, else the rate's interval against
    the stated exponent (:func:`.stats.rate_verdict`).

    Args:
        s: the statement (its threshold is the stated exponent).
        rate: the fitted rate; ``None`` when it could not be fitted.
        final_mean: the metric's mean at the largest width.
        subject: the model and data.
        source: the result it comes from.
        what: the metric's name in words.
    """
    values = {"final_mean": final_mean if final_mean is not None else math.nan}
    if rate is None or final_mean is None:
        return _claim(s, subject, source, Verdict.NOT_TESTED, "too few usable widths", None, None, values=values)
    span = f"widths {rate.widths[0]}–{rate.widths[-1]}"
    measured = f"{what} ∝ width^{rate} ({span}); {_g(final_mean)} at width {rate.widths[-1]}"
    if final_mean > NOT_CONVERGED_ABOVE:
        return _claim(
            s,
            subject,
            source,
            Verdict.NOT_CONVERGED,
            f"{what} still above {NOT_CONVERGED_ABOVE} at the largest width",
            rate.slope,
            (rate.lo, rate.hi),
            values=values,
            measured=measured,
        )
    verdict = rate_verdict(rate, s.threshold if s.threshold is not None else PAPER_RATE)
    return _claim(
        s,
        subject,
        source,
        Verdict.HOLDS if verdict.holds else Verdict.FAILS,
        verdict.value,
        rate.slope,
        (rate.lo, rate.hi),
        values=values,
        measured=measured,
    )


def sweep_claims(result: SweepResult, source: str) -> Iterator[Claim]:
    """The claims a width sweep bears on: the rate, the ratio, the λ_max bound, λ_max, λ_min and κ."""
    subject = model_label(result.spec)
    last = result.spec.widths[-1]

    def final(metric: str) -> float | None:
        return result.spreads(metric)[-1].mean

    yield judge_rate(RATE, result.rates.get("relative_error"), final("relative_error"), subject, source, "error")
    yield judge_rate(
        RATIO, result.rates.get("off_diagonal_ratio"), final("off_diagonal_ratio"), subject, source, "‖Θ_a≠b‖/‖Θ_aa‖"
    )
    gaps = np.array([r.lambda_max_gap / r.comparison.error for r in result.runs if r.comparison.error > 0])
    violations = sum(not r.lambda_max_bound_holds for r in result.runs)
    yield _claim(
        LAMBDA_MAX_BOUND,
        subject,
        source,
        Verdict.HOLDS if violations == 0 else Verdict.FAILS,
        f"{violations} of {len(result.runs)} runs violate it",
        float(gaps.max()) if gaps.size else None,
        None,
        values={"runs": len(result.runs), "violations": violations},
        measured=f"{len(result.runs) - violations} of {len(result.runs)} runs; largest |Δλ_max| / ‖Θ − K⊗I‖_F "
        f"{_g(float(gaps.max()) if gaps.size else None)}",
    )
    yield judge_rate(
        LAMBDA_MAX,
        result.rates.get("lambda_max_relative_error"),
        final("lambda_max_relative_error"),
        subject,
        source,
        "λ_max rel. error",
    )
    yield _lambda_min_claim(result, source, subject, last)


def _lambda_min_claim(result: SweepResult, source: str, subject: str, last: int) -> Claim:
    spec = result.spec
    rows = result.N * result.O
    ok = []
    for w in spec.widths:
        runs = [r for r in result.runs if r.width == w]
        if result.P(w) >= PARAMETERS_PER_ROW * rows and all(r.lambda_min_resolved for r in runs):
            ok.append(w)
    last_runs = [r for r in result.runs if r.width == last]
    values = {
        "P_over_NO_at_largest": result.P(last) / rows,
        "resolved_at_largest": sum(r.lambda_min_resolved for r in last_runs) / len(last_runs),
        "lambda_min_over_max_at_largest": float(
            np.median([r.value("lambda_min_Theta") / r.value("lambda_max_Theta") for r in last_runs])
        ),
        "qualifying_widths": len(ok),
    }
    shown = (
        f"P/(N·O) = {_g(values['P_over_NO_at_largest'])} at width {last}; λ_min(Θ)/λ_max(Θ) = "
        f"{_g(values['lambda_min_over_max_at_largest'])}; {len(ok)} of {len(spec.widths)} widths qualify"
    )
    if len(ok) < 2:
        return _claim(
            LAMBDA_MIN,
            subject,
            source,
            Verdict.NOT_TESTED,
            "fewer than two widths with P ≥ 10·N·O and λ_min(Θ) above the noise floor",
            None,
            None,
            values=values,
            measured=shown,
        )
    index = [spec.widths.index(w) for w in ok]
    rates = {
        m: bootstrap_rate(result.values(m)[index], ok) for m in ("lambda_min_relative_error", "cond_relative_error")
    }
    finals = {m: result.spreads(m)[index[-1]].mean for m in rates}
    values.update({f"final_{m}": v if v is not None else math.nan for m, v in finals.items()})
    words = "; ".join(
        f"{'λ_min' if 'min' in m else 'κ'} rel. error ∝ width^{rates[m]} ({_g(finals[m])} at width {ok[-1]})"
        for m in rates
    )
    if any(r is None for r in rates.values()):
        return _claim(
            LAMBDA_MIN, subject, source, Verdict.NOT_TESTED, "no fit", None, None, values=values, measured=shown
        )
    lam, cond = rates["lambda_min_relative_error"], rates["cond_relative_error"]
    assert lam is not None and cond is not None
    if any(v is None or v > NOT_CONVERGED_ABOVE for v in finals.values()):
        verdict, detail = Verdict.NOT_CONVERGED, "relative errors still above 0.5 at the widest qualifying width"
    elif lam.hi < 0 and cond.hi < 0:
        verdict, detail = Verdict.HOLDS, "both relative errors decay"
    else:
        verdict, detail = Verdict.FAILS, "a relative error does not decay"
    return _claim(
        LAMBDA_MIN,
        subject,
        source,
        verdict,
        detail,
        lam.slope,
        (lam.lo, lam.hi),
        values=values,
        measured=f"{words}; {shown}",
    )


def trajectory_claims(result: TrajectoryResult, source: str) -> Iterator[Claim]:
    """The observation of the approximation through training, per width (means over seeds)."""
    parts, values = [], {}
    for w in result.spec.widths:
        runs = result.at(w)
        first = float(np.mean([r.checkpoints[0].comparison.relative_error for r in runs]))
        end = float(np.mean([r.checkpoints[-1].comparison.relative_error for r in runs]))
        s0 = float(np.mean([r.checkpoints[0].readout_sum_ratio for r in runs]))
        s1 = float(np.mean([r.checkpoints[-1].readout_sum_ratio for r in runs]))
        acc = np.mean([r.checkpoints[-1].test_accuracy for r in runs])
        epochs = runs[0].checkpoints[-1].epoch
        values.update({f"error_init_{w}": float(first), f"error_end_{w}": float(end), f"sum_ratio_end_{w}": float(s1)})
        parts.append(
            f"width {w}: error {_g(first)} → {_g(end)}, ‖Σ_a W_a‖/‖W‖ {_g(s0)} → {_g(s1)}, test acc. {acc:.3f}"
        )
    loss = result.spec.train.loss.value if hasattr(result.spec.train.loss, "value") else str(result.spec.train.loss)
    yield _claim(
        TRAINING,
        model_label(result.spec),
        source,
        Verdict.OBSERVED,
        f"{loss} loss, {epochs} epochs",
        None,
        None,
        values=values,
        measured=f"{loss}, {len(result.spec.seeds)} seeds: " + "; ".join(parts),
    )


def regression_claims(result: RegressionResult, source: str) -> Iterator[Claim]:
    """The ridgeless and the ridge claims of kernel regression."""
    spec = result.spec
    subject = model_label(spec)
    last = spec.widths[-1]
    diffs = np.array([[[r.relative_difference for r in result.at(w)]] for w in spec.widths])  # [W, 1, S]
    rate = bootstrap_rate(diffs, spec.widths) if len(spec.widths) >= 2 else None
    pooled = result.pooled_mcnemar(last)
    runs = result.at(last)
    acc_e, acc_p = np.mean([r.accuracy_entk for r in runs]), np.mean([r.accuracy_pntk for r in runs])
    per_seed = ", ".join(f"{r.mcnemar.p_value:.2g}" for r in runs)
    values = {
        "p_value": pooled.p_value,
        "only_entk": pooled.only_first,
        "only_pntk": pooled.only_second,
        "accuracy_entk": float(acc_e),
        "accuracy_pntk": float(acc_p),
        "accuracy_network": float(np.mean([r.accuracy_network for r in runs])),
    }
    measured = (
        f"‖f_K − f_Θ‖/‖f_Θ‖ ∝ width^{rate if rate else 'n/a'}, {_g(float(diffs[-1].mean()))} at width {last}; "
        f"test acc. eNTK {acc_e:.3f}, pNTK {acc_p:.3f}, network {values['accuracy_network']:.3f} "
        f"(N_test = {result.N_test}); McNemar p = {pooled.p_value:.2g} pooled ({pooled.only_first} vs "
        f"{pooled.only_second} discordant), per seed {per_seed}"
    )
    if rate is None:
        verdict, detail = Verdict.NOT_TESTED, "too few widths"
    else:
        decays, same = rate.hi < 0, pooled.p_value >= ALPHA
        verdict = Verdict.HOLDS if decays and same else Verdict.FAILS
        detail = ("difference decays" if decays else "difference does not decay") + (
            "; accuracies not distinguishable" if same else "; accuracies differ significantly"
        )
    yield _claim(
        RIDGELESS,
        subject,
        source,
        verdict,
        detail,
        pooled.p_value,
        None if rate is None else (rate.lo, rate.hi),
        values=values,
        measured=measured,
    )
    points = [r.ridge_sweep for r in runs]
    K = np.mean([[p.difference_K for p in sweep] for sweep in points], axis=0)
    OK = np.mean([[p.difference_OK for p in sweep] for sweep in points], axis=0)
    ridges = [p.relative for p in points[0]]
    better = bool(np.all(K < OK))
    yield _claim(
        RIDGE,
        subject,
        source,
        Verdict.HOLDS if better else Verdict.FAILS,
        "K closer at every ridge" if better else "O·K as close or closer at some ridge",
        None,
        None,
        values={f"K_{r:g}": float(k) for r, k in zip(ridges, K)} | {f"OK_{r:g}": float(o) for r, o in zip(ridges, OK)},
        measured=f"width {last}, λ/(tr K/N) = "
        + ", ".join(f"{r:g}: K {_g(float(k))} vs O·K {_g(float(o))}" for r, k, o in zip(ridges, K, OK)),
    )


def timing_claims(result: TimingResult, source: str) -> Iterator[Claim]:
    """The time claim (repeated runs) and the memory arithmetic."""
    spec = result.spec
    subject = f"{spec.model} (width {spec.width}) on {spec.dataset}, {spec.dtype}, {result.device}"
    big = result.against_N[-1]
    ratio = big.ratio
    e, p = result.exponent_entk, result.exponent_pntk
    holds = e.lo > p.hi and ratio[1] > 1
    yield _claim(
        TIME,
        subject,
        source,
        Verdict.HOLDS if holds else Verdict.FAILS,
        "eNTK time grows faster with O" if e.lo > p.hi else "the exponents' intervals overlap",
        e.slope - p.slope,
        None,
        values={
            "ratio": ratio[0],
            "ratio_lo": ratio[1],
            "ratio_hi": ratio[2],
            "exponent_entk": e.slope,
            "exponent_pntk": p.slope,
        },
        measured=f"N = {big.N}, O = {big.O}: eNTK/pNTK time ×{ratio[0]:.1f} [{ratio[1]:.1f}, {ratio[2]:.1f}] over "
        f"{spec.repeats}×{spec.repeats} pairs of runs; time ∝ O^{e.slope:.2f} [{e.lo:.2f}, {e.hi:.2f}] (eNTK) vs "
        f"O^{p.slope:.2f} [{p.lo:.2f}, {p.hi:.2f}] (pNTK)",
    )
    resnet = entk_bytes(50_000, 10)
    yield _claim(
        MEMORY,
        subject,
        source,
        Verdict.OBSERVED,
        "arithmetic",
        None,
        None,
        values={"cifar10_entk_bytes": float(resnet), "cifar10_pntk_bytes": float(entk_bytes(50_000, 1))},
        measured=f"N = {big.N}, O = {big.O}: {big.bytes_entk:,} vs {big.bytes_pntk:,} bytes; CIFAR-10 "
        f"(N = 50,000, O = 10) in float64: 50,000²·10²·8 B = {resnet / 1e12:.1f} TB ({resnet / 2**40:.2f} TiB) "
        f"against 50,000²·8 B = {entk_bytes(50_000, 1) / 1e9:.0f} GB for the pNTK",
    )


def claims(results: dict[str, object]) -> list[Claim]:
    """Judge every claim the results bear on.

    Args:
        results: experiment results (:class:`SweepResult`, :class:`TrajectoryResult`,
            :class:`RegressionResult`, :class:`TimingResult`) by file stem.

    Returns:
        The claims, in the order of ``results``.
    """
    out: list[Claim] = []
    for source, result in results.items():
        if isinstance(result, SweepResult):
            out += sweep_claims(result, source)
        elif isinstance(result, TrajectoryResult):
            out += trajectory_claims(result, source)
        elif isinstance(result, RegressionResult):
            out += regression_claims(result, source)
        elif isinstance(result, TimingResult):
            out += timing_claims(result, source)
        else:
            raise TypeError(f"no claims are judged on a {type(result).__name__}")
    return out
