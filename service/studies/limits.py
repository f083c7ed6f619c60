"""The server's budget limits on a study (settings), checked before anything is stored."""

from __future__ import annotations

from service.config import Settings
from service.studies.errors import Issue
from service.studies.spec import StudySpec


def budget_issues(spec: StudySpec, settings: Settings) -> list[Issue]:
    """Every budget figure of `spec` beyond what this server allows."""
    budget = spec.budget
    checks: list[tuple[str, float | None, float, str]] = [
        ("n_trials", budget.n_trials, settings.max_trials_per_study, "trials per study"),
        ("max_epochs", budget.max_epochs, settings.max_epochs_per_trial, "epochs per trial"),
        (
            "max_parallel_trials",
            budget.max_parallel_trials,
            settings.max_parallel_trials,
            "parallel trials",
        ),
        ("timeout_s", budget.timeout_s, settings.max_timeout_s, "seconds of timeout"),
    ]
    return [
        Issue(
            ("budget", field),
            f"this server allows at most {_number(limit)} {what}, got {_number(value)}",
            "less_than_equal",
        )
        for field, value, limit, what in checks
        if value is not None and value > limit
    ]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
