"""Warnings about a spec that is valid but probably not what its author meant (never errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trainer import REGULARIZATION_PARAMETERS

_PENALIZED_METRICS = {"loss": "data_loss", "val_loss": "val_data_loss"}


def spec_warnings(objective_metric: str, searched: Iterable[str]) -> list[str]:
    """What a client should hear about a study with this objective and these searched
    parameters (the submit response and `hpsearch submit` show it)."""
    warnings: list[str] = []
    penalties = [name for name in searched if name in REGULARIZATION_PARAMETERS]
    honest = _PENALIZED_METRICS.get(objective_metric)
    if penalties and honest is not None:
        warnings.append(
            f"objective.metric {objective_metric!r} includes the regularization penalty, which "
            f"this study searches ({', '.join(penalties)}): a stronger penalty raises "
            f"{objective_metric} whatever the fit, so the search is steered towards weak "
            f"regularization; {honest!r} is the same loss without the penalty"
        )
    return warnings


def confirm_warnings(spec: Mapping[str, Any]) -> list[str]:
    """A confirming study with its own time budget: the confirmations are its last trials, so
    the budget running out first leaves it without a confirmed best."""
    confirm, budget = spec.get("confirm"), spec.get("budget") or {}
    if confirm is None or budget.get("timeout_s") is None:
        return []
    return [
        f"confirm retrains the best configurations in the study's last trials; if "
        f"budget.timeout_s ({budget['timeout_s']:g} s) ends the study before them, it reports "
        "no confirmed best: leave room for them, or budget by n_trials"
    ]
