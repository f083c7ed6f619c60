"""The gate's rule, on numbers: a regression iff the candidate is worse than the baseline by more
than max(tolerance, spread), spread = the larger of the two seed ranges."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.gate import GateError, Measurement, SeedRun, compare, judge, metric_direction
from service.gate.retrain import seeds_for
from service.gate.summary import markdown_summary


def test_exactly_at_the_tolerance_passes_and_just_beyond_regresses() -> None:
    at = compare("objective val_loss", "minimize", [1.0, 1.0], [1.5, 1.5], tolerance=0.5)
    assert (at.worse_by, at.spread, at.threshold) == (0.5, 0.0, 0.5)
    assert not at.regressed
    beyond = compare("objective val_loss", "minimize", [1.0, 1.0], [1.5625, 1.5625], 0.5)
    assert beyond.regressed


def test_exactly_at_the_spread_passes() -> None:
    # baseline range 1.0 (the spread), candidate range 0.0; means 1.5 and 2.5
    check = compare("objective val_loss", "minimize", [1.0, 2.0], [2.5, 2.5], tolerance=0.25)
    assert (check.spread, check.threshold, check.worse_by) == (1.0, 1.0, 1.0)
    assert not check.regressed


def test_a_spread_larger_than_the_tolerance_absorbs_the_noise() -> None:
    noisy = compare("objective val_loss", "minimize", [1.0, 2.0, 1.5], [2.0, 2.5, 2.25], 0.1)
    assert noisy.spread == 1.0
    assert noisy.threshold == 1.0
    assert noisy.worse_by == pytest.approx(0.75)
    assert not noisy.regressed
    # the same means with no noise: the tolerance alone decides
    quiet = compare("objective val_loss", "minimize", [1.5, 1.5], [2.25, 2.25], 0.1)
    assert quiet.regressed


def test_the_candidate_spread_counts_too() -> None:
    check = compare("objective val_loss", "minimize", [1.0, 1.0], [1.0, 3.0], tolerance=0.0)
    assert check.spread == 2.0
    assert not check.regressed  # worse by 1.0, within the candidate's own noise


@pytest.mark.parametrize(
    ("direction", "baseline", "candidate", "regressed"),
    [
        ("minimize", 0.5, 0.7, True),  # loss went up
        ("minimize", 0.5, 0.3, False),  # loss went down
        ("maximize", 0.9, 0.7, True),  # accuracy went down
        ("maximize", 0.9, 0.95, False),  # accuracy went up
    ],
)
def test_direction_decides_which_way_is_worse(
    direction: Any, baseline: float, candidate: float, regressed: bool
) -> None:
    check = compare("objective", direction, [baseline] * 3, [candidate] * 3, tolerance=0.1)
    assert check.regressed is regressed
    assert (check.worse_by > 0) is regressed


def test_a_much_better_candidate_passes_whatever_the_tolerance() -> None:
    check = compare("objective val_accuracy", "maximize", [0.5], [0.99], tolerance=0.0)
    assert check.worse_by == pytest.approx(-0.49)
    assert not check.regressed


def test_a_diverged_candidate_seed_is_a_regression() -> None:
    check = compare("objective val_loss", "minimize", [0.5, 0.6], [0.4, math.inf], 10.0)
    assert check.regressed
    assert check.spread == pytest.approx(0.1)  # the diverged value does not blow up the spread
    assert "diverged" in check.message


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        compare("x", "minimize", [], [1.0], 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        compare("x", "minimize", [math.nan], [1.0], 0.0)
    with pytest.raises(ValueError, match="tolerance"):
        compare("x", "minimize", [1.0], [1.0], -0.1)


def test_the_message_states_the_numbers_of_the_rule() -> None:
    check = compare("objective val_loss", "minimize", [1.0, 1.0], [1.5, 1.5], tolerance=0.25)
    assert check.message == (
        "objective val_loss: candidate 1.5 vs baseline 1 (minimize); worse by 0.5, worse than "
        "the threshold 0.25 = max(tolerance 0.25, spread 0)"
    )


def test_metric_directions() -> None:
    assert metric_direction("test_accuracy") == "maximize"
    assert metric_direction("val_loss") == "minimize"
    assert metric_direction("test_error") == "minimize"
    assert metric_direction("test_mae") == "minimize"  # regression studies
    with pytest.raises(GateError, match="minimized or maximized"):
        metric_direction("lr")


# --- judge: two measurements ------------------------------------------------------------------


def measurement(
    values: list[float | None],
    *,
    metric: str = "val_loss",
    direction: Any = "minimize",
    fingerprint: str = "f" * 64,
    test_accuracy: list[float] | None = None,
    packages: dict[str, str] | None = None,
) -> Measurement:
    runs = []
    for i, value in enumerate(values):
        metrics: dict[str, float | None] = {}
        if test_accuracy is not None:
            metrics["test_accuracy"] = test_accuracy[i]
        status = "diverged" if value is None else "completed"
        runs.append(SeedRun(seed=i, objective_value=value, metrics=metrics, status=status))
    return Measurement(
        objective_metric=metric,
        direction=direction,
        runs=runs,
        data_fingerprint=fingerprint,
        packages=packages or {"torch": "2.13.0"},
    )


def test_judge_passes_equal_measurements() -> None:
    verdict = judge(measurement([0.5, 0.6]), measurement([0.5, 0.6]), tolerance=0.0)
    assert verdict.outcome == "pass"
    assert verdict.exit_code == 0
    assert [c.name for c in verdict.checks] == ["objective val_loss"]


def test_judge_finds_a_regression() -> None:
    verdict = judge(measurement([0.5, 0.6]), measurement([0.9, 0.95]), tolerance=0.05)
    assert verdict.outcome == "regression"
    assert verdict.exit_code == 1


def test_judge_gates_tracked_metrics_in_their_own_direction() -> None:
    baseline = measurement([0.5, 0.5], test_accuracy=[0.9, 0.9])
    candidate = measurement([0.5, 0.5], test_accuracy=[0.8, 0.8])
    verdict = judge(baseline, candidate, tolerance=0.05, metrics=["test_accuracy"])
    objective, accuracy = verdict.checks
    assert not objective.regressed
    assert accuracy.name == "metric test_accuracy"
    assert accuracy.direction == "maximize"
    assert accuracy.regressed
    assert verdict.exit_code == 1


def test_a_metric_the_baseline_lacks_is_an_error() -> None:
    with pytest.raises(GateError, match="no metric 'test_accuracy'"):
        judge(measurement([0.5]), measurement([0.5]), 0.0, metrics=["test_accuracy"])


def test_a_diverged_candidate_fails_its_tracked_metrics_too() -> None:
    baseline = measurement([0.5, 0.5], test_accuracy=[0.9, 0.9])
    candidate = measurement([0.5, None], test_accuracy=[0.9, 0.9])
    candidate = candidate.model_copy(
        update={
            "runs": [
                candidate.runs[0],
                SeedRun(seed=1, objective_value=None, metrics={}, status="diverged"),
            ]
        }
    )
    verdict = judge(baseline, candidate, 0.0, metrics=["test_accuracy"])
    assert all(check.regressed for check in verdict.checks)


def test_a_data_mismatch_is_an_error_unless_allowed() -> None:
    baseline = measurement([0.5], fingerprint="a" * 64)
    candidate = measurement([0.5], fingerprint="b" * 64)
    verdict = judge(baseline, candidate, 0.0)
    assert verdict.outcome == "error"
    assert verdict.exit_code == 2
    assert "--allow-data-change" in verdict.fingerprint.message
    allowed = judge(baseline, candidate, 0.0, allow_data_change=True)
    assert allowed.outcome == "pass"
    assert not allowed.fingerprint.matches


def test_different_objectives_cannot_be_compared() -> None:
    accuracy = measurement([0.9], metric="val_accuracy", direction="maximize")
    with pytest.raises(GateError, match="optimizes val_accuracy but the baseline val_loss"):
        judge(measurement([0.5]), accuracy, 0.0)


def test_package_changes_are_listed() -> None:
    verdict = judge(
        measurement([0.5], packages={"torch": "2.12.0", "optuna": "4.0"}),
        measurement([0.5], packages={"torch": "2.13.0", "optuna": "4.0"}),
        0.0,
    )
    assert verdict.package_changes == {"torch": ("2.12.0", "2.13.0")}


def test_the_candidate_reuses_the_baseline_seeds() -> None:
    baseline = measurement([0.5, 0.5, 0.5, 0.5, 0.5])
    assert seeds_for(3, baseline) == [0, 1, 2]
    assert seeds_for(2, measurement([0.5])) == [0, 1]
    assert seeds_for(3) == [0, 1, 2]
    assert seeds_for(2, first=7) == [7, 8]


def multi(values: list[float], sizes: list[float]) -> Measurement:
    runs = [
        SeedRun(seed=i, objective_value=value, objective_values=[value, size])
        for i, (value, size) in enumerate(zip(values, sizes, strict=True))
    ]
    return Measurement(
        objective_metric="val_data_loss",
        direction="minimize",
        objectives=["val_data_loss", "n_parameters"],
        runs=runs,
        data_fingerprint="f" * 64,
    )


def test_a_multi_objective_study_is_gated_on_its_first_objective_and_reports_the_rest() -> None:
    baseline = multi([0.5, 0.5], [100.0, 100.0])
    bigger = multi([0.5, 0.5], [900.0, 1100.0])  # ten times the parameters: reported only
    verdict = judge(baseline, bigger, tolerance=0.0)
    assert verdict.outcome == "pass"
    assert [c.name for c in verdict.checks] == ["objective val_data_loss"]
    [reported] = verdict.reported
    assert (reported.metric, reported.baseline, reported.candidate) == (
        "n_parameters",
        100.0,
        1000.0,
    )
    assert "reported, not gated" in reported.message
    worse = judge(baseline, multi([0.9, 0.9], [50.0, 50.0]), tolerance=0.05)
    assert worse.outcome == "regression"  # a smaller model does not buy back the loss
    summary = markdown_summary(worse, baseline, bigger, baseline_label="b", candidate_label="c")
    assert "| n_parameters | 100 | 50 |" in summary
    # a single-objective baseline has no value to set beside it
    single = measurement([0.5, 0.5], metric="val_data_loss")
    assert judge(single, bigger, tolerance=0.0).reported[0].baseline is None
