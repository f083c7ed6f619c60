"""The gate's rule, as pure functions of numbers: no I/O, no training.

For one metric, the baseline and the candidate each give k values (one per training seed).

- `baseline`, `candidate`: the mean of the k values.
- `worse_by`: how much worse the candidate is, in the metric's own units: `candidate - baseline`
  when lower is better, `baseline - candidate` when higher is better (negative: it is better).
- `spread`: the seed noise, the larger of the two ranges (max - min of the k values of the
  baseline, and of the candidate). With one seed it is 0.
- `threshold = max(tolerance, spread)`.

The candidate regresses iff `worse_by > threshold`: exactly at the threshold passes. A candidate
seed that diverged (a non-finite value) is a regression whatever the numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.gate.errors import GateError
from service.gate.measurement import Direction, Measurement

Outcome = Literal["pass", "regression", "error"]
EXIT_CODES: dict[Outcome, int] = {"pass": 0, "regression": 1, "error": 2}


@dataclass(frozen=True)
class Check:
    """One metric compared under the rule (see the module's docstring)."""

    name: str
    direction: Direction
    baseline_values: tuple[float, ...]
    candidate_values: tuple[float, ...]
    tolerance: float
    baseline: float
    candidate: float
    spread: float
    threshold: float
    worse_by: float
    regressed: bool

    @property
    def message(self) -> str:
        if not all(math.isfinite(v) for v in self.candidate_values):
            return f"{self.name}: a candidate seed diverged (non-finite value)"
        verdict = "worse than" if self.regressed else "within"
        return (
            f"{self.name}: candidate {self.candidate:.6g} vs baseline {self.baseline:.6g} "
            f"({self.direction}); worse by {self.worse_by:.6g}, {verdict} the threshold "
            f"{self.threshold:.6g} = max(tolerance {self.tolerance:.6g}, spread {self.spread:.6g})"
        )


def compare(
    name: str,
    direction: Direction,
    baseline: Sequence[float],
    candidate: Sequence[float],
    tolerance: float,
) -> Check:
    """Apply the rule to one metric's per-seed values."""
    if not baseline or not candidate:
        raise ValueError(f"{name}: both sides need at least one value")
    if not all(math.isfinite(v) for v in baseline):
        raise ValueError(f"{name}: the baseline has a non-finite value: {list(baseline)}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    baseline_mean = statistics.fmean(baseline)
    diverged = not all(math.isfinite(v) for v in candidate)
    finite = [v for v in candidate if math.isfinite(v)]
    candidate_mean = statistics.fmean(candidate) if not diverged else _worst(direction)
    spread = max(_range(baseline), _range(finite))
    threshold = max(tolerance, spread)
    difference = candidate_mean - baseline_mean
    worse_by = difference if direction == "minimize" else -difference
    return Check(
        name=name,
        direction=direction,
        baseline_values=tuple(baseline),
        candidate_values=tuple(candidate),
        tolerance=tolerance,
        baseline=baseline_mean,
        candidate=candidate_mean,
        spread=spread,
        threshold=threshold,
        worse_by=worse_by,
        regressed=diverged or worse_by > threshold,
    )


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values) if values else 0.0


def _worst(direction: Direction) -> float:
    return math.inf if direction == "minimize" else -math.inf


def metric_direction(name: str) -> Direction:
    """Accuracies improve upwards; losses, errors and mean absolute errors downwards."""
    if name.endswith("accuracy"):
        return "maximize"
    if name.endswith(("loss", "error", "mae")):
        return "minimize"
    raise GateError(f"cannot tell whether {name!r} should be minimized or maximized")


@dataclass(frozen=True)
class FingerprintCheck:
    """Whether both sides trained on the same data (same arrays, same splits)."""

    baseline: str
    candidate: str
    allow_change: bool

    @property
    def matches(self) -> bool:
        return self.baseline == self.candidate

    @property
    def is_error(self) -> bool:
        return not self.matches and not self.allow_change

    @property
    def message(self) -> str:
        if self.matches:
            return f"data fingerprint: both sides trained on the same data ({self.baseline[:12]})"
        return (
            f"data fingerprint: the baseline trained on other data ({self.baseline[:12]}) than "
            f"the candidate ({self.candidate[:12]}); "
            + (
                "allowed by --allow-data-change, so the numbers are compared anyway"
                if self.allow_change
                else "save a new baseline, or pass --allow-data-change to compare anyway"
            )
        )


@dataclass(frozen=True)
class Reported:
    """A later objective of a multi-objective study: shown beside the verdict, not gated (the
    gate decides on the first objective alone)."""

    metric: str
    baseline: float | None
    candidate: float | None

    @property
    def message(self) -> str:
        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.6g}"

        return (
            f"objective {self.metric} (reported, not gated): baseline {shown(self.baseline)}, "
            f"candidate {shown(self.candidate)} (means over the seeds)"
        )


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]
    fingerprint: FingerprintCheck
    package_changes: dict[str, tuple[str, str]]
    """name -> (baseline version, candidate version), for the packages that differ."""
    reported: tuple[Reported, ...] = ()

    @property
    def outcome(self) -> Outcome:
        if self.fingerprint.is_error:
            return "error"
        return "regression" if any(check.regressed for check in self.checks) else "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def judge(
    baseline: Measurement,
    candidate: Measurement,
    tolerance: float,
    metrics: Sequence[str] = (),
    *,
    allow_data_change: bool = False,
) -> Verdict:
    """Compare the objective, then each of `metrics`, of a candidate with a baseline."""
    if candidate.objective_metric != baseline.objective_metric:
        raise GateError(
            f"the candidate optimizes {candidate.objective_metric} but the baseline "
            f"{baseline.objective_metric}; they cannot be compared"
        )
    if candidate.direction != baseline.direction:
        raise GateError(
            f"the candidate {candidate.direction}s {candidate.objective_metric} but the "
            f"baseline {baseline.direction}s it"
        )
    checks = [
        _checked(
            f"objective {baseline.objective_metric}",
            baseline.direction,
            baseline.objective_values,
            candidate.objective_values,
            tolerance,
        )
    ]
    for name in metrics:
        checks.append(
            _checked(
                f"metric {name}",
                metric_direction(name),
                _tracked(baseline, name, "baseline"),
                _tracked(candidate, name, "candidate"),
                tolerance,
            )
        )
    changes = {
        name: (version, candidate.packages.get(name, "unknown"))
        for name, version in baseline.packages.items()
        if candidate.packages.get(name, "unknown") != version
    }
    return Verdict(
        tuple(checks),
        FingerprintCheck(baseline.data_fingerprint, candidate.data_fingerprint, allow_data_change),
        changes,
        _reported(baseline, candidate),
    )


def _reported(baseline: Measurement, candidate: Measurement) -> tuple[Reported, ...]:
    """The candidate's later objectives, each beside the baseline's where it has it too."""
    later = candidate.objectives[1:]
    return tuple(
        Reported(
            metric,
            baseline.reported_mean(baseline.objectives.index(metric))
            if metric in baseline.objectives
            else None,
            candidate.reported_mean(index + 1),
        )
        for index, metric in enumerate(later)
    )


def _checked(
    name: str,
    direction: Direction,
    baseline: Sequence[float],
    candidate: Sequence[float],
    tolerance: float,
) -> Check:
    try:
        return compare(name, direction, baseline, candidate, tolerance)
    except ValueError as error:
        raise GateError(str(error)) from None


def _tracked(measurement: Measurement, name: str, side: str) -> list[float]:
    """A metric's per-seed values; a diverged run has none (NaN: counted as diverged)."""
    for run in measurement.runs:
        if run.metrics.get(name) is None and run.status != "diverged":
            known = ", ".join(sorted(run.metrics)) or "none"
            raise GateError(f"the {side} has no metric {name!r} (it has: {known})")
    return measurement.metric_values(name)
