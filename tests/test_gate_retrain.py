"""Retraining a study's best configuration with k seeds (the real trainer, tiny digits MLP)."""

from __future__ import annotations

from typing import Any

import pytest

from service.gate import GateError, best_params, judge, measure

SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"hidden_units": [16]},
    "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
    "fixed": {"optimizer": "adam", "batch_size": 64},
    "budget": {"n_trials": 2, "max_epochs": 2},
}


def study(**overrides: Any) -> dict[str, Any]:
    """A study detail as the REST API serves it (the fields the gate reads)."""
    values: dict[str, Any] = {
        "id": 3,
        "name": "tiny",
        "status": "completed",
        "direction": "minimize",
        "objective_metric": "val_data_loss",
        "spec": SPEC,
        "best_value": 0.4,
        "best_trial": {"number": 1, "params": {"learning_rate": 0.01}, "value": 0.4},
        "error": None,
    }
    values.update(overrides)
    return values


def test_measure_retrains_once_per_seed() -> None:
    seen: list[int] = []
    result = measure(study(), [0, 1, 2], device="cpu", on_run=lambda run: seen.append(run.seed))
    assert seen == result.seeds == [0, 1, 2]
    assert result.objective_metric == "val_data_loss"  # the default objective
    assert result.direction == "minimize"
    assert result.best_params == {"learning_rate": 0.01}
    assert result.source.study_id == 3
    assert result.source.study_best_value == 0.4
    assert len(result.data_fingerprint) == 64  # one data set for every seed
    assert result.device == "cpu"
    assert "seed" not in result.trial_config
    assert result.trial_config["optimizer"]["config"]["learning_rate"] == 0.01
    values = result.objective_values
    assert all(0 < v < 5 for v in values)
    assert len(set(values)) > 1  # the seeds do change the training
    assert set(result.runs[0].metrics) == {
        f"{split}_{name}"
        for split in ("train", "val", "test")
        for name in ("loss", "data_loss", "accuracy", "error")
    }
    assert result.runs[0].metrics["val_data_loss"] == values[0]


def test_the_same_seed_gives_the_same_value() -> None:
    first = measure(study(), [5], device="cpu")
    again = measure(study(), [5], device="cpu")
    assert first.objective_values == again.objective_values


def test_a_regression_study_is_measured_by_loss_mae_and_error() -> None:
    spec = {
        **SPEC,
        "dataset": {"name": "synthetic", "config": {"task": "regression", "n_samples": 200}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
    }
    result = measure(study(spec=spec, objective_metric="val_mae"), [0, 1], device="cpu")
    run = result.runs[0]
    assert set(run.metrics) == {
        f"{split}_{name}"
        for split in ("train", "val", "test")
        for name in ("loss", "data_loss", "mae", "error")
    }
    assert run.objective_value == run.metrics["val_mae"]
    # standardized targets: predicting their mean scores an error of about 1 (1 - R²)
    assert all(0 < run.metrics[f"{split}_error"] < 3 for split in ("train", "val", "test"))  # type: ignore[operator]
    verdict = judge(result, result, metrics=("test_mae",), tolerance=0.0)
    assert verdict.outcome == "pass"
    assert [check.name for check in verdict.checks] == ["objective val_mae", "metric test_mae"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"status": "failed", "error": "boom"}, "study 3 'tiny' failed: boom"),
        ({"status": "running"}, "is running, not finished"),
        ({"best_trial": None}, "has no completed trial"),
        ({"spec": {**SPEC, "dataset": {"id": 4}}}, "uploaded data set 4"),
        ({"spec": {"name": "no search space"}}, "spec no longer validates"),
    ],
)
def test_a_study_the_gate_cannot_retrain(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(GateError, match=problem):
        measure(study(**overrides), [0], device="cpu")


def test_best_params_of_a_cancelled_study() -> None:
    assert best_params(study(status="cancelled")) == {"learning_rate": 0.01}


def test_a_multi_objective_study_is_measured_on_every_objective() -> None:
    objectives = [{"metric": "val_data_loss"}, {"metric": "n_parameters"}]
    spec = {**SPEC, "objective": objectives, "model": {"hidden_units": [8]}}
    result = measure(study(spec=spec), [0, 1], device="cpu")
    assert result.objectives == ["val_data_loss", "n_parameters"]
    for run in result.runs:
        assert run.objective_values is not None
        assert run.objective_values[0] == run.objective_value
    n_features = 64  # digits: 8 × 8 pixels, 10 classes
    assert result.reported_mean(1) == (n_features * 8 + 8) + (8 * 10 + 10)


def test_a_confirming_study_is_measured_on_its_confirmed_best_not_its_luckiest_draw() -> None:
    confirmed = {
        "params": {"learning_rate": 0.02},
        "mean": 0.45,
        "stdev": 0.05,
        "values": [0.4, 0.5],
        "trials": [2, 3],
        "best_trial": 2,
    }
    detail = study(confirmed_best=confirmed)
    assert best_params(detail) == {"learning_rate": 0.02}
    result = measure(detail, [0], device="cpu")
    assert result.best_params == {"learning_rate": 0.02}
    assert result.trial_config["optimizer"]["config"]["learning_rate"] == 0.02
    assert (result.source.best_trial_number, result.source.confirmed_mean) == (2, 0.45)
    assert result.source.study_best_value == 0.4  # the search's luckiest draw, kept apart
    plain = measure(study(), [0], device="cpu").source
    assert (plain.best_trial_number, plain.confirmed_mean) == (1, None)
